"""Agentspan's pytest plugin (registered as the ``pytest11`` entry point ``agentspan``).

- **Network guard.** A test that makes a real request to a model provider (OpenAI, Anthropic,
  Google, Groq, Mistral, ... see `agentspan.testing.network`) fails with `ModelRequestBlocked`
  instead of reaching it. Opt in per test with ``@pytest.mark.agentspan_allow_network``, or for a
  whole session with ``pytest --agentspan-allow-network``. Local servers are never blocked.
- **``agentspan_store``**: an isolated SQLite store in the test's ``tmp_path``, configured as the
  default (``agentspan.run``, ``agentspan.get``, the CLI in subprocesses via ``AGENTSPAN_HOME``)
  and used by ``mock_run``; the user's ``~/.agentspan`` is never touched.
- **``mock_model``**: a scripted model to queue responses on, then run agents against (see
  `MockModel`).
- **Cassettes.** ``@pytest.mark.agentspan_cassette("refund.yaml")`` runs the test (and its
  fixtures) under `agentspan.testing.cassette` with the file ``cassettes/refund.yaml`` next to the
  test file (without a name: ``cassettes/<test name>.yaml``; ``record=`` and ``ignore=`` are passed on).
  ``pytest --agentspan-record`` re-records marked tests (mode ``"all"``) and lets ``cassette()``
  calls record missing cassettes. The ``agentspan_cassette`` fixture is vcrpy's cassette in use
  (None in unmarked tests).

Disable the plugin with ``-p no:agentspan``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from agentspan.testing import network

if TYPE_CHECKING:
    from agentspan.stores.sqlite import SqliteStore
    from agentspan.testing.cassettes import RecordMode
    from agentspan.testing.result import MockResult
    from agentspan.testing.script import Entry

ALLOW_MARKER = "agentspan_allow_network"
CASSETTE_MARKER = "agentspan_cassette"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("agentspan")
    group.addoption("--agentspan-allow-network", action="store_true", default=False,
                    help="let tests make real requests to model providers (blocked by default)")
    group.addoption("--agentspan-record", action="store_true", default=False,
                    help="re-record the cassettes of tests marked agentspan_cassette, and record missing ones")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{ALLOW_MARKER}: let this test make real requests to model providers")
    config.addinivalue_line("markers", f"{CASSETTE_MARKER}(name=None, *, record=None, ignore=()): replay (or record) "
                                       "the test's HTTP traffic from cassettes/<name> next to the test file")
    network.install()
    if config.getoption("agentspan_record", False):
        from agentspan.testing import cassettes

        cassettes.set_recording(True)


def pytest_unconfigure(config: pytest.Config) -> None:
    network.uninstall()
    if config.getoption("agentspan_record", False):
        from agentspan.testing import cassettes

        cassettes.set_recording(False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, None, None]:
    allowed = bool(item.config.getoption("agentspan_allow_network", False)) or (
        item.get_closest_marker(ALLOW_MARKER) is not None)
    with network.policy(allowed=allowed, test=item.nodeid):
        yield


@pytest.fixture(autouse=True)
def agentspan_cassette(request: pytest.FixtureRequest) -> Iterator[Any]:
    """vcrpy's cassette of a test marked ``@pytest.mark.agentspan_cassette`` (None otherwise)."""
    marker = request.node.get_closest_marker(CASSETTE_MARKER)
    if marker is None:
        yield None
        return
    from agentspan.testing import cassettes

    name = marker.args[0] if marker.args else marker.kwargs.get("name")
    path = cassettes.marker_path(request.node.path, request.node.name, name)
    record: RecordMode | None = (
        marker.kwargs.get("record") or ("all" if request.config.getoption("agentspan_record", False) else None))
    with cassettes.cassette(path, record=record, ignore=marker.kwargs.get("ignore", ())) as used:
        yield used


@pytest.fixture
def agentspan_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SqliteStore]:
    """An isolated Agentspan store for this test, configured as the default.

    ``AGENTSPAN_HOME`` points at a fresh folder in ``tmp_path`` (subprocesses the test starts use
    it too) and ``AGENTSPAN_SERVER_URL`` is unset; the settings are reset after the test.
    """
    import agentspan.config
    from agentspan.stores.sqlite import SqliteStore
    from agentspan.testing.mock import default_store

    home = tmp_path / "agentspan-home"
    home.mkdir()
    monkeypatch.setenv("AGENTSPAN_HOME", str(home))
    monkeypatch.delenv("AGENTSPAN_SERVER_URL", raising=False)
    agentspan.config.reset()
    store = SqliteStore(home / "agentspan.db")
    agentspan.config.configure(home=home, store=store)
    try:
        with default_store(store):
            yield store
    finally:
        agentspan.config.reset()


class MockModel:
    """A scripted model for one test: queue its responses, then run agents against it.

    ::

        def test_refund(mock_model):
            mock_model.call("lookup_order", order_id="42").reply("Paid.")
            result = mock_model.run(agent, "Is order 42 paid?")
            expect(result).completed().used_tool("lookup_order")

    Each `run` consumes the queued entries it uses (the rest stay queued for the next run) and
    records the run in the test's ``agentspan_store``.
    """

    def __init__(self) -> None:
        self.queue: list[Entry] = []
        self.results: list[MockResult] = []

    def reply(self, text: str) -> MockModel:
        """Queues a final text."""
        from agentspan.testing.script import reply

        self.queue.append(reply(text))
        return self

    def call(self, tool: str, /, **args: Any) -> MockModel:
        """Queues a response calling ``tool``."""
        from agentspan.testing.script import call

        self.queue.append(call(tool, **args))
        return self

    def calls(self, *calls: tuple[str, Mapping[str, Any]]) -> MockModel:
        """Queues one response with parallel calls, given as ``(tool, args)`` pairs."""
        from agentspan.testing.script import call

        self.queue.append([call(tool, **dict(args)) for tool, args in calls])
        return self

    def approve(self, reason: str | None = None) -> MockModel:
        """Queues an approval decision."""
        from agentspan.testing.script import approve

        self.queue.append(approve(reason))
        return self

    def reject(self, reason: str | None = None) -> MockModel:
        """Queues a rejection."""
        from agentspan.testing.script import reject

        self.queue.append(reject(reason))
        return self

    def run(self, target: Any, input: Any, *, tools: Mapping[str, Callable[..., Any]] | None = None,
            **kwargs: Any) -> MockResult:
        """Runs ``target`` on the queued responses (`agentspan.testing.mock_run` arguments)."""
        from agentspan.testing.mock import mock_run
        from agentspan.testing.script import Script

        script = Script(self.queue, default_approval=kwargs.pop("default_approval", "approve"))
        try:
            result = mock_run(target, input, script=script, tools=tools, strict=False, **kwargs)
        finally:
            del self.queue[:script.position]
        self.results.append(result)
        return result

    @property
    def last(self) -> MockResult:
        """The result of the last run."""
        return self.results[-1]


@pytest.fixture
def mock_model(agentspan_store: SqliteStore) -> MockModel:
    """A `MockModel` whose runs are recorded in the test's ``agentspan_store``."""
    return MockModel()
