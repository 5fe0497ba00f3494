"""The crash kit's children: forked from a fork server by default, fresh interpreters when that is
turned off or cannot be, and a server that has threads refuses to fork."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from agentspan.testing import call, mock_run, reply
from agentspan.testing import crash as crash_kit
from agentspan.testing._forkserver import ForkServer, ForkServerUnavailable, fork_supported

from tk_effects import effects

pytestmark = pytest.mark.usefixtures("effects_file")

SCRIPT = [call("whoami"), reply("done")]


def _crash_child_parent() -> int:
    """Runs the prober until it crashes after its tool call; returns the pid of the parent of the
    process that ran the tool (the crash test's child)."""
    result = mock_run("tk_agents:prober", "x", crash_after=2, script=SCRIPT)
    assert result.crashed_at == "llm:0/call:call_0_0" and result.output == "done"
    assert result.replayed == {"llm": 1, "tool": 1}  # resumed here; the tool ran once, in the child
    [line] = effects()
    pid, parent = (int(word) for word in line.split()[1::2])
    assert pid != os.getpid()
    return parent


@pytest.mark.skipif(not fork_supported(), reason="children are fresh interpreters on this platform")
def test_a_crash_child_is_forked_from_the_fork_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(crash_kit.FORK_ENV, raising=False)
    parent = _crash_child_parent()
    assert parent in {server.process.pid for server in ForkServer._servers.values()}


def test_with_forking_off_a_crash_child_is_a_fresh_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(crash_kit.FORK_ENV, "0")
    assert _crash_child_parent() == os.getpid()


def test_without_a_fork_server_the_child_is_started_fresh_with_a_warning(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    def unavailable(preload: object) -> ForkServer:
        raise ForkServerUnavailable("no fork server in this test")

    monkeypatch.delenv(crash_kit.FORK_ENV, raising=False)
    monkeypatch.setattr(crash_kit, "fork_supported", lambda: True)
    monkeypatch.setattr(ForkServer, "get", staticmethod(unavailable))
    assert _crash_child_parent() == os.getpid()
    assert "started as a fresh interpreter (no fork server in this test)" in caplog.text


@pytest.mark.skipif(not fork_supported(), reason="no fork server on this platform")
def test_a_fork_server_with_threads_refuses_to_fork(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "starts_a_thread.py").write_text(textwrap.dedent("""
        import threading, time
        threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    server = ForkServer.get(("starts_a_thread",))
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        with pytest.raises(ForkServerUnavailable, match="the fork server has threads"):
            server.spawn(call="os:getpid", env=dict(os.environ), cwd=str(tmp_path), fds=[out, out])
    finally:
        os.close(out)


@pytest.mark.skipif(not fork_supported(), reason="no fork server on this platform")
def test_a_preload_module_that_prints_does_not_stop_the_server(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prints_on_import.py").write_text("print('hello from an import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    server = ForkServer.get(("prints_on_import",))
    out = os.open(os.devnull, os.O_WRONLY)
    try:
        child = server.spawn(call="os:getpid", env=dict(os.environ), cwd=str(tmp_path), fds=[out, out])
    finally:
        os.close(out)
    assert child.wait(timeout=30) == 0
