"""The `agentspan` CLI: JSON shapes, tables, approvals, errors and the doctor."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentspan import cli_render, config
from agentspan.cli import app
from agentspan.errors import ConfigurationError, StoreError
from agentspan.records import (
    Approval,
    ApprovalStatus,
    Run,
    RunStatus,
    Step,
    StepKind,
    StepResult,
    StepStatus,
    now,
)
from agentspan.stores.sqlite import SqliteStore

RUN_FIELDS = [
    "id", "framework", "agent", "input", "status", "output", "error", "session_id", "idempotency_key",
    "parent_run_id", "created_at", "updated_at", "lease_owner", "lease_expires_at", "lease_epoch",
    "input_tokens", "output_tokens", "cost_usd", "steps", "options",
]  # fmt: skip
STEP_FIELDS = [
    "run_id", "key", "seq", "kind", "name", "status", "input", "input_hash", "output", "error",
    "attempt", "started_at", "ended_at", "duration_ms", "provider", "model", "input_tokens",
    "output_tokens", "cost_usd",
]  # fmt: skip
APPROVAL_FIELDS = [
    "id", "run_id", "step_key", "tool", "args", "args_hash", "status", "requested_at", "expires_at",
    "decided_by", "decided_at", "reason",
]  # fmt: skip

runner = CliRunner()


@pytest.fixture
def home(cli_home: Path) -> Path:
    """An empty AGENTSPAN_HOME, fresh settings, and a wide terminal for tables (`conftest.cli_home`)."""
    return cli_home


@pytest.fixture
def store(cli_store: SqliteStore) -> SqliteStore:
    """The embedded store the CLI reads, opened directly to create data."""
    return cli_store


def make_run(
    store: SqliteStore, agent: str = "refunds", *, approval: bool = False
) -> tuple[Run, Approval | None]:
    """Creates a running run with an llm step, a tool step and optionally a pending approval."""
    run, _ = store.create_run(
        Run(framework="openai-agents", agent=agent, input="Refund order 42", status=RunStatus.RUNNING,
            lease_owner="test", lease_epoch=1, lease_expires_at=now() + 60)
    )  # fmt: skip
    epoch = run.lease_epoch
    store.start_step(
        Step(run_id=run.id, key="llm:0", seq=0, kind=StepKind.LLM, name="gpt-4o-mini", input=["hi"]),
        epoch=epoch,
    )
    store.finish_step(
        run.id, "llm:0",
        StepResult(status=StepStatus.COMPLETED, output={"text": "calling refund [tool]"}, provider="openai",
                   model="gpt-4o-mini", input_tokens=120, output_tokens=30, cost_usd=0.0002),
        epoch=epoch,
    )  # fmt: skip
    store.start_step(
        Step(run_id=run.id, key="tool:call_1", seq=1, kind=StepKind.TOOL, name="refund", input={"order": 42}),
        epoch=epoch,
    )
    decision = None
    if approval:
        decision = store.request_approval(
            Approval(run_id=run.id, step_key="tool:call_1", tool="refund", args={"order": 42}, args_hash="h"),
            epoch=epoch,
        )
    else:
        store.finish_step(run.id, "tool:call_1", StepResult(status=StepStatus.COMPLETED, output="refunded"),
                          epoch=epoch)  # fmt: skip
    return store.get_run(run.id), decision


def invoke(*args: str) -> object:
    """Runs the CLI in-process (stdout and stderr captured separately)."""
    return runner.invoke(app, list(args))


def test_runs_list_json_newest_first_with_design_fields(store: SqliteStore) -> None:
    first, _ = make_run(store, "refunds")
    second, _ = make_run(store, "billing")
    result = invoke("runs", "list", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [r["id"] for r in data] == [second.id, first.id]
    assert list(data[0]) == RUN_FIELDS
    assert data[0]["status"] == "running"
    assert data[0]["steps"] == 2
    assert data[0]["input_tokens"] == 120 and data[0]["output_tokens"] == 30


def test_runs_list_filters_and_limit(store: SqliteStore) -> None:
    refunds, _ = make_run(store, "refunds")
    billing, _ = make_run(store, "billing", approval=True)
    assert [r["id"] for r in json.loads(invoke("runs", "list", "--agent", "refunds", "--json").stdout)] == [
        refunds.id
    ]
    waiting = json.loads(invoke("runs", "list", "--status", "waiting", "--json").stdout)
    assert [r["id"] for r in waiting] == [billing.id]
    assert len(json.loads(invoke("runs", "list", "--limit", "1", "--json").stdout)) == 1
    assert invoke("runs", "list", "--status", "bogus").exit_code == 2


def test_runs_list_of_a_session(store: SqliteStore) -> None:
    threaded, _ = store.create_run(Run(framework="langgraph", agent="support", input=None, session_id="t-42"))
    make_run(store, "refunds")
    listed = json.loads(invoke("runs", "list", "--session", "t-42", "--json").stdout)
    assert [r["id"] for r in listed] == [threaded.id] and listed[0]["session_id"] == "t-42"
    assert json.loads(invoke("runs", "list", "--session", "t-43", "--json").stdout) == []


def test_runs_list_table_shows_run_ids(store: SqliteStore) -> None:
    run, _ = make_run(store, "refunds [eu]")
    result = invoke("runs", "list")
    assert result.exit_code == 0, result.output
    assert run.id in result.stdout
    assert "refunds [eu]" in result.stdout  # data is never parsed as rich markup
    assert "running" in result.stdout and "120/30" in result.stdout


def test_runs_show_json_has_journal_and_approvals(store: SqliteStore) -> None:
    run, approval = make_run(store, approval=True)
    assert approval is not None
    result = invoke("runs", "show", run.id, "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["id"] == run.id and data["status"] == "waiting"
    assert data["step_count"] == 2
    assert set(RUN_FIELDS) - {"steps"} <= set(data)
    assert [list(s) for s in data["steps"]] == [STEP_FIELDS, STEP_FIELDS]
    llm, tool = data["steps"]
    assert (llm["kind"], llm["status"]) == ("llm", "completed")
    assert (llm["input_tokens"], llm["output_tokens"], llm["cost_usd"]) == (120, 30, 0.0002)
    assert (llm["provider"], llm["model"]) == ("openai", "gpt-4o-mini")
    assert (tool["kind"], tool["status"], tool["name"], tool["seq"]) == ("tool", "started", "refund", 1)
    assert [a["id"] for a in data["approvals"]] == [approval.id]
    assert list(data["approvals"][0]) == APPROVAL_FIELDS


def test_runs_show_table(store: SqliteStore) -> None:
    run, approval = make_run(store, approval=True)
    assert approval is not None
    result = invoke("runs", "show", run.id)
    assert result.exit_code == 0, result.output
    expected = (run.id, approval.id, "llm:0", "tool:call_1", "gpt-4o-mini", "refund [tool]", "pending")
    for text in expected:
        assert text in result.stdout


def test_runs_show_lists_the_failures_a_run_was_retried_from(store: SqliteStore) -> None:
    run, _ = make_run(store)
    store.update_run(run.id, epoch=run.lease_epoch, status=RunStatus.FAILED, error="KeyError: [bold]x[/bold]",
                     release_lease=True)
    assert invoke("runs", "retry", run.id).exit_code == 0
    result = invoke("runs", "show", run.id)
    assert result.exit_code == 0, result.output
    assert "retry 1" in result.stdout and "KeyError: [bold]x[/bold]" in result.stdout  # not rich markup
    assert "(left to a worker)" in result.stdout
    (retry,) = json.loads(invoke("runs", "show", run.id, "--json").stdout)["options"]["agentspan.retries"]
    assert (retry["error"], retry["owner"]) == ("KeyError: [bold]x[/bold]", None)


def test_unknown_run_is_a_clean_error(store: SqliteStore) -> None:
    result = invoke("runs", "show", "x")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: run 'x' not found"
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_missing_store_is_a_clean_error(home: Path) -> None:
    result = invoke("runs", "list", "--json")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: no Agentspan store")
    assert not (home / "agentspan.db").exists()  # read commands never create the store


@pytest.mark.parametrize("key", ["agentkey123\r", "agentkey123\n", "sekret€key", "with space"])
def test_an_api_key_no_header_can_carry_is_a_clean_error_that_never_shows_it(
        home: Path, monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.setenv("AGENTSPAN_SERVER_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AGENTSPAN_API_KEY", key)
    config.reset()
    for command in (("runs", "list"), ("doctor", "--json")):
        result = invoke(*command)
        assert "holds a character an HTTP header cannot carry" in result.output, result.output
        assert "Traceback" not in result.output and key.strip() not in result.output and "agentkey" not in result.output
    assert invoke("runs", "list").exit_code == 1


def test_approve_twice_conflicts(store: SqliteStore) -> None:
    run, approval = make_run(store, approval=True)
    assert approval is not None
    result = invoke("approve", approval.id, "--by", "alice", "--reason", "ok", "--json")
    assert result.exit_code == 0, result.output
    decided = json.loads(result.stdout)
    assert (decided["status"], decided["decided_by"], decided["reason"]) == ("approved", "alice", "ok")
    assert store.get_approval(approval.id).status is ApprovalStatus.APPROVED

    again = invoke("approve", approval.id)
    assert again.exit_code == 1
    assert again.stderr.startswith("error: ") and "already" in again.stderr
    assert "Traceback" not in again.output
    assert invoke("reject", approval.id, "--reason", "no").exit_code == 1


def test_reject_requires_reason(store: SqliteStore) -> None:
    _, approval = make_run(store, approval=True)
    assert approval is not None
    missing = invoke("reject", approval.id)
    assert missing.exit_code == 2
    assert "--reason" in missing.stderr
    assert invoke("reject", approval.id, "--reason", "  ").exit_code == 1
    assert store.get_approval(approval.id).status is ApprovalStatus.PENDING

    result = invoke("reject", approval.id, "--reason", "too large", "--by", "bob")
    assert result.exit_code == 0, result.output
    assert approval.id in result.stdout and "rejected" in result.stdout
    decided = store.get_approval(approval.id)
    assert decided.status is ApprovalStatus.REJECTED
    assert (decided.reason, decided.decided_by) == ("too large", "bob")


def test_unknown_approval_is_a_clean_error(store: SqliteStore) -> None:
    result = invoke("approve", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: approval 'nope' not found"


def test_approvals_list_filters(store: SqliteStore) -> None:
    run_a, a = make_run(store, "a", approval=True)
    run_b, b = make_run(store, "b", approval=True)
    run_c, c = make_run(store, "c", approval=True)
    assert a and b and c
    store.decide_approval(b.id, approved=True, by="x", reason=None, decided_at=now())
    store.decide_approval(c.id, approved=False, by="x", reason="no", decided_at=now())

    def ids(*args: str) -> list[str]:
        result = invoke("approvals", "list", "--json", *args)
        assert result.exit_code == 0, result.output
        return [item["id"] for item in json.loads(result.stdout)]

    assert ids() == [a.id]
    assert ids("--status", "approved") == [b.id]
    assert ids("--status", "rejected") == [c.id]
    assert ids("--status", "all") == [c.id, b.id, a.id]
    assert ids("--status", "all", "--run", run_b.id) == [b.id]
    assert ids("--run", run_b.id) == []
    assert ids("--status", "expired") == []
    assert invoke("approvals", "list", "--run", "missing").exit_code == 1
    table = invoke("approvals", "list", "--status", "all")
    assert a.id in table.stdout and run_c.id in table.stdout


def test_expired_approval(store: SqliteStore) -> None:
    run, _ = make_run(store, approval=False)
    expired = store.request_approval(
        Approval(run_id=run.id, step_key="tool:late", tool="send", args={}, args_hash="h", expires_at=now()),
        epoch=run.lease_epoch,
    )
    listed = json.loads(invoke("approvals", "list", "--status", "expired", "--json").stdout)
    assert [(x["id"], x["status"]) for x in listed] == [(expired.id, "expired")]
    assert json.loads(invoke("approvals", "list", "--json").stdout) == []
    result = invoke("approve", expired.id)
    assert result.exit_code == 1 and "expired" in result.stderr


def test_an_approval_expired_by_a_cancel_says_why(store: SqliteStore) -> None:
    run, approval = make_run(store, approval=True)
    assert approval is not None
    assert invoke("runs", "cancel", run.id).exit_code == 0
    result = invoke("approve", approval.id)
    assert result.exit_code == 1
    assert "expired (the run was cancelled) before a decision" in result.stderr, result.stderr


def test_damaged_rows_are_clean_errors_naming_the_row(store: SqliteStore) -> None:
    good, _ = make_run(store)
    bad, _ = make_run(store)
    store._conn.execute("UPDATE runs SET status='bogus' WHERE id=?", (bad.id,))
    listed = invoke("runs", "list", "--json")
    assert listed.exit_code == 1 and "Traceback" not in listed.output
    assert f"damaged row of run {bad.id!r}: 'bogus' is not a valid RunStatus" in listed.stderr
    store._conn.execute("UPDATE runs SET status='running', created_at='yesterday' WHERE id=?", (bad.id,))
    shown = invoke("runs", "show", bad.id)
    assert shown.exit_code == 1 and "created_at is 'yesterday', not a number" in shown.stderr
    store._conn.execute("UPDATE runs SET created_at=1.0 WHERE id=?", (bad.id,))
    store._conn.execute("UPDATE steps SET output='{not json' WHERE run_id=? AND key='llm:0'", (bad.id,))
    shown = invoke("runs", "show", bad.id, "--json")
    assert shown.exit_code == 1 and f"damaged row of step 'llm:0' of run {bad.id!r}" in shown.stderr
    assert json.loads(invoke("runs", "show", good.id, "--json").stdout)["id"] == good.id  # the others still read


def test_an_id_that_is_not_utf8_is_a_clean_error(home: Path, store: SqliteStore) -> None:
    env = {**os.environ, "AGENTSPAN_HOME": str(home)}
    for args in (["runs", "show", b"id\xff", "--json"], ["approve", b"id\xff"], ["runs", "cancel", b"id\xff"]):
        done = subprocess.run([sys.executable, "-m", "agentspan.cli", *args], env=env, capture_output=True,
                              timeout=60)
        assert done.returncode == 1 and done.stderr.startswith(b"error: "), done.stderr
        assert b"not valid UTF-8" in done.stderr and b"Traceback" not in done.stderr


def test_cancel(store: SqliteStore) -> None:
    run, _ = make_run(store)
    result = invoke("runs", "cancel", run.id, "--reason", "stop it")
    assert result.exit_code == 0, result.output
    assert run.id in result.stdout
    cancelled = store.get_run(run.id)
    assert (cancelled.status, cancelled.error) == (RunStatus.CANCELLED, "stop it")
    again = invoke("runs", "cancel", run.id)
    assert again.exit_code == 1 and again.stderr.startswith("error: ")


def test_runs_prune_deletes_ended_runs_older_than_asked(store: SqliteStore) -> None:
    old, _ = make_run(store, "refunds")
    store.update_run(old.id, epoch=1, status=RunStatus.COMPLETED, release_lease=True)
    running, _ = make_run(store, "billing")
    assert json.loads(invoke("runs", "prune", "--older-than", "1d", "--yes", "--json").stdout) == {"deleted": []}
    refused = invoke("runs", "prune", "--older-than", "0s")  # asks first; no answer: nothing deleted
    assert refused.exit_code == 1 and store.get_run(old.id).status is RunStatus.COMPLETED
    result = invoke("runs", "prune", "--older-than", "soon", "--yes")
    assert result.exit_code == 1 and "expected a number and a unit" in result.stderr
    result = invoke("runs", "prune", "--older-than", "0s", "--status", "completed", "-y", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"deleted": [old.id]}
    assert [r.id for r in store.list_runs()] == [running.id]
    assert invoke("runs", "show", old.id).exit_code == 1


def test_runs_prune_offers_only_ended_statuses(store: SqliteStore) -> None:
    """(was: --help offered pending|running|waiting, each refused: "only ended runs are deleted")"""
    old, _ = make_run(store, "refunds")
    store.update_run(old.id, epoch=1, status=RunStatus.COMPLETED, release_lease=True)
    waiting, _ = make_run(store, "billing", approval=True)
    shown = invoke("runs", "prune", "--help")
    assert shown.exit_code == 0, shown.output
    assert "completed|failed|cancelled" in shown.stdout
    assert not [word for word in ("pending", "running", "waiting") if word in shown.stdout]
    for status in ("waiting", "running", "pending"):
        result = invoke("runs", "prune", "--older-than", "0s", "--status", status, "-y", "--json")
        assert result.exit_code == 2, result.output  # typer's usage error, before any deletion
        assert "Invalid value for '--status'" in result.output
    assert {r.id for r in store.list_runs()} == {old.id, waiting.id}
    assert store.get_run(waiting.id).status is RunStatus.WAITING


def test_doctor_never_prints_the_key(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSPAN_API_KEY", "sk-secret-123")
    config.reset()
    result = invoke("doctor", "--json")
    assert result.exit_code == 0, result.output
    assert "sk-secret-123" not in result.output
    report = json.loads(result.stdout)
    assert report["api_key"] == "set" and report["server_url"] == "not set"
    assert report["otel"] == "off"
    assert report["home"] == str(home) and report["db_exists"] is False
    assert report["python_version"] == ".".join(map(str, sys.version_info[:3]))
    assert isinstance(report["adapters"], list)
    table = invoke("doctor")
    assert table.exit_code == 0 and "sk-secret-123" not in table.output
    assert str(home) in table.stdout


def test_doctor_shows_the_step_helper_setting(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(was: not shown at all)"""
    monkeypatch.setenv("AGENTSPAN_STEP_HELPER", "off")
    config.reset()
    table = invoke("doctor")
    assert table.exit_code == 0, table.output
    assert any(line.split() == ["step_helper", "off"] for line in table.stdout.splitlines()), table.stdout
    assert json.loads(invoke("doctor", "--json").stdout)["step_helper"] == "off"
    monkeypatch.setenv("AGENTSPAN_STEP_HELPER", "auto")  # shown with what it resolves to for the usable CPUs
    monkeypatch.setattr("agentspan.cli_doctor.usable_cores", lambda: 1.0)
    config.reset()
    assert json.loads(invoke("doctor", "--json").stdout)["step_helper"] == "auto (off: 1 CPU)"
    monkeypatch.setattr("agentspan.cli_doctor.usable_cores", lambda: 2.0)
    assert json.loads(invoke("doctor", "--json").stdout)["step_helper"] == "auto (on: 2 CPUs)"


def test_bad_settings_are_a_clean_error(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTSPAN_DURABILITY", "sometimes")
    config.reset()
    result = invoke("doctor")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: AGENTSPAN_DURABILITY='sometimes'")


def test_subprocess(store: SqliteStore, home: Path) -> None:
    run, _ = make_run(store)
    env = {**os.environ, "AGENTSPAN_HOME": str(home), "COLUMNS": "200", "AGENTSPAN_API_KEY": "sk-secret-123"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "agentspan.cli", *args], env=env, capture_output=True,
                              text=True, timeout=60)  # fmt: skip

    listed = cli("runs", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["id"] for r in json.loads(listed.stdout)] == [run.id]
    table = cli("runs", "list")
    assert table.returncode == 0 and run.id in table.stdout
    missing = cli("runs", "show", "x")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: run 'x' not found"
    assert "Traceback" not in missing.stderr
    doctor = cli("doctor")
    assert doctor.returncode == 0 and "sk-secret-123" not in doctor.stdout + doctor.stderr


def test_demo_calls_the_adapter(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import agentspan.adapters

    calls: list[str] = []

    class FakeAdapter:
        framework = "openai-agents"

        def demo(self) -> None:
            calls.append("demo")

    def named(framework: str) -> FakeAdapter:
        assert framework == "openai-agents"
        return FakeAdapter()

    monkeypatch.setattr(agentspan.adapters, "adapter_named", named)
    result = invoke("demo")
    assert result.exit_code == 0, result.output
    assert calls == ["demo"]


def test_demo_without_adapter(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import agentspan.adapters

    monkeypatch.setattr(agentspan.adapters, "_all", list)
    result = invoke("demo")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: the demo needs the openai-agents adapter")
    assert "agentspan[openai-agents]" in result.stderr


def test_worker_refuses_a_concurrency_below_one(store: SqliteStore) -> None:
    result = invoke("worker", "oa_support:AGENT", "--concurrency", "0")
    assert result.exit_code == 2 and "--concurrency" in result.output


@pytest.mark.parametrize(("usd", "shown"), [(None, ""), (0.0, "$0"), (2.7e-05, "$0.000027"), (0.0123, "$0.0123"),
                                            (1234.5, "$1,234.5000")])
def test_a_cost_shows_the_millionths_a_cheap_call_costs(usd, shown) -> None:
    assert cli_render.cost(usd) == shown


@pytest.mark.parametrize("raw", ["nan", "inf", "-1", "0", "1e400", "99999999999"])
def test_a_lease_ttl_or_poll_interval_that_is_no_positive_finite_number_is_refused(
        home: Path, monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    # a NaN lease never expired nor held: another process took a run its owner still ran (a tool twice)
    for name in ("AGENTSPAN_LEASE_TTL", "AGENTSPAN_POLL_INTERVAL"):
        monkeypatch.setenv(name, raw)
        config.reset()
        with pytest.raises(ConfigurationError, match=name):
            config.settings()
        monkeypatch.delenv(name)
    config.reset()
    with pytest.raises(ConfigurationError, match="lease_ttl"):
        config.configure(lease_ttl=float(raw))
    for bad in ("5", True, None.__class__):
        with pytest.raises(ConfigurationError, match="poll_interval"):
            config.configure(poll_interval=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="home"):
        config.configure(home=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(("argument", "value"), [
    ("server_url", 123), ("server_url", "nope"), ("server_url", "http://[::1"), ("api_key", 123),
    ("store", "not a store"), ("home", ""),
])
def test_configure_refuses_a_bad_value_naming_it_and_changes_nothing(home: Path, argument: str, value: object) -> None:
    # were: accepted, and the first run failed with an AttributeError (or named the environment variable)
    before, store = config.settings(), config.get_store()
    with pytest.raises(ConfigurationError, match=argument):
        config.configure(**{argument: value})  # type: ignore[arg-type]
    assert config.settings() == before and config.get_store() is store


def test_configure_keeps_the_store_open_unless_a_setting_it_was_opened_with_changes(home: Path) -> None:
    store = config.get_store()
    config.configure(poll_interval=0.5, lease_ttl=3, otel="off", home=home)  # was: closed and reopened
    assert config.get_store() is store
    config.configure(durability="full")
    assert config.get_store() is not store


def test_a_closed_store_refuses_writes_with_a_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "closed.db")
    run, _ = make_run(store, "a")
    store.close()
    with pytest.raises(StoreError, match="closed database"):  # was: a raw sqlite3.ProgrammingError
        store.update_run(run.id, epoch=run.lease_epoch, error="late")


def test_escape_sequences_in_stored_values_never_reach_the_terminal(store: SqliteStore) -> None:
    hostile = "Refund order 42\x1b[2J\x1b[H\x1b]0;owned\x07\x1b[8mhidden"  # an end user's chat message
    run, _ = make_run(store, "agent\x1b[31m\u202egnp.exe")  # (a right-to-left override: shows as "exe.png")
    store.update_run(run.id, epoch=run.lease_epoch, status=RunStatus.FAILED, error=hostile, release_lease=True)
    for args in (("runs", "list"), ("runs", "show", run.id)):
        result = invoke(*args)
        assert result.exit_code == 0, result.output
        assert "\x1b" not in result.stdout and "\x07" not in result.stdout  # was: printed raw
        assert "\\x1b[31m" in result.stdout
        assert "\u202e" not in result.stdout and "\\u202egnp.exe" in result.stdout
    assert "\\x1b[2J" in invoke("runs", "show", run.id).stdout
    shown = invoke("runs", "show", "no-such\x1b[2J")
    assert shown.exit_code == 1 and "\x1b" not in shown.stderr
    assert json.loads(invoke("runs", "show", run.id, "--json").stdout)["error"] == hostile  # JSON keeps it as it is
    # the retry history's rows too (were printed raw), and a lone surrogate (a file name decoded
    # with surrogateescape) in a step's output: shown escaped (was: a UnicodeEncodeError traceback)
    store.reopen_run(run.id, owner="owner\x1b]0;t\x07", lease_expires_at=now() + 60)
    store.record_step(Step(run_id=run.id, key="tool:x", seq=5, kind=StepKind.TOOL, name="files", input={}),
                      StepResult(status=StepStatus.COMPLETED, output="report-\udc1b[2J-\udc9b.txt"),
                      epoch=run.lease_epoch + 1)
    shown = invoke("runs", "show", run.id)
    assert shown.exit_code == 0, shown.output
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout and "\x9b" not in shown.stdout
    assert "retry 1" in shown.stdout and "\\udc1b" in shown.stdout


def test_doctor_exits_1_when_the_store_fails_its_check(home: Path) -> None:
    (home / "agentspan.db").write_bytes(b"not sqlite" * 100)
    for args in (("doctor",), ("doctor", "--json")):
        result = invoke(*args)
        assert result.exit_code == 1, result.output  # was 0: a script could not tell
    assert json.loads(invoke("doctor", "--json").stdout)["store"].startswith("error:")


@pytest.mark.parametrize("args", [("runs", "list", "--limit", "9223372036854775808"),
                                  ("approvals", "list", "--limit", "0"),
                                  ("runs", "prune", "--older-than", "99999999999999999999999d", "-y"),
                                  ("worker", "m:a", "--max-runs", "-1"), ("server", "start", "--port", "99999")])
def test_out_of_range_options_are_one_line_errors(home: Path, args: tuple[str, ...]) -> None:
    result = invoke(*args)
    assert result.exit_code in (1, 2), result.output  # was: a traceback (OverflowError), or accepted
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output


def test_approvals_list_finds_a_pending_one_behind_newer_expired_ones(store: SqliteStore) -> None:
    run, pending = make_run(store, approval=True)
    assert pending is not None
    store.request_approval(Approval(run_id=run.id, step_key="tool:late", tool="send", args={}, args_hash="h",
                                    expires_at=now() - 1), epoch=run.lease_epoch)  # newer, past its deadline
    listed = json.loads(invoke("approvals", "list", "--limit", "1", "--json").stdout)
    assert [a["id"] for a in listed] == [pending.id]  # was: [] (the limit applied before the deadline)


def test_runs_show_lists_every_approval_as_the_export_does(store: SqliteStore) -> None:
    """(was: cut at 1,000 without a word)"""
    run, _ = make_run(store)
    for index in range(1001):
        store.request_approval(Approval(run_id=run.id, step_key=f"tool:{index}", tool="send", args={}, args_hash="h"),
                               epoch=run.lease_epoch)
    shown = json.loads(invoke("runs", "show", run.id, "--json").stdout)
    assert len(shown["approvals"]) == 1001


def test_doctor_fails_when_the_home_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """(was: "not created yet", exit 0, while every run failed to create the store there)"""
    home = tmp_path / "a-file"
    home.write_text("x")
    monkeypatch.setenv("AGENTSPAN_HOME", str(home))
    config.reset()
    result = invoke("doctor", "--json")
    assert result.exit_code == 1
    assert "is a file, not a folder" in json.loads(result.stdout)["store"]
    config.reset()


@pytest.mark.parametrize("width", [80, 100, 120, 140])
def test_the_steps_table_keeps_its_key_and_name_at_common_terminal_widths(width: int) -> None:
    from rich.console import Console

    step = Step(run_id="r", key="llm:0/call:call_a", seq=1, kind=StepKind.TOOL, name="lookup_order", input={},
                status=StepStatus.COMPLETED, output={"text": "the order 42 was paid $30.00 and shipped " * 3},
                duration_ms=12.0, input_tokens=100, output_tokens=20, provider="openai", model="gpt-4o-mini")
    console = Console(width=width, record=True, force_terminal=False)
    console.print(cli_render.steps_table([step], narrow=width < cli_render.NARROW))
    shown = console.export_text()
    # at least a dozen characters of the key and ten of the name on a line (were squeezed to nothing
    # at 80 and 100 columns, and to 2-3 characters a line at 120: the output's preview was sized first)
    assert "llm:0/call:c" in shown and "lookup_ord" in shown, shown
