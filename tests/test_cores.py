"""The step writer's helper only beside a CPU of its own (`agentspan.stores.cores`).

On one CPU the helper process that commits step rows takes turns with the agent's thread (its
polling alone added ~2.2 ms per turn, measured with ``bench/bench_openai_agents.py --cpus 1``), so
a store in a process that may use fewer than two CPUs commits inline; ``step_helper`` (and
``AGENTSPAN_STEP_HELPER``) decide it explicitly, and a helper forced on beside one CPU sleeps on
its pipe instead of polling it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import agentspan
import agentspan.config
from agentspan.errors import ConfigurationError
from agentspan.records import Run, Step, StepKind, StepResult, StepStatus
from agentspan.stores.cores import cgroup_quota, usable_cores
from agentspan.stores.sqlite import SqliteStore

TWO_CPUS = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 or (cgroup_quota() or 2) < 2,
                              reason="needs a process that may use two CPUs")


def cgroup_tree(tmp_path: Path, membership: str, files: dict[str, str]) -> tuple[Path, Path]:
    """A fake ``/proc/self/cgroup`` and cgroup mount holding ``files`` (relative path -> text)."""
    proc = tmp_path / "cgroup"
    proc.write_text(membership)
    root = tmp_path / "fs"
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    root.mkdir(exist_ok=True)
    return proc, root


def test_cgroup_v2_quota_is_the_smallest_along_the_path(tmp_path: Path) -> None:
    proc, root = cgroup_tree(tmp_path, "0::/kubepods/pod1/ctr\n", {
        "kubepods/cpu.max": "max 100000\n",
        "kubepods/pod1/cpu.max": "150000 100000\n",  # --cpus 1.5 on the pod
        "kubepods/pod1/ctr/cpu.max": "max 100000\n",
    })
    assert cgroup_quota(proc, root) == 1.5
    proc.write_text("0::/kubepods\n")
    assert cgroup_quota(proc, root) is None  # "max": no limit
    proc.write_text("0::/\n")
    (root / "cpu.max").write_text("50000 100000\n")  # a container's own cgroup seen as the root
    assert cgroup_quota(proc, root) == 0.5


def test_cgroup_v1_quota_and_no_quota(tmp_path: Path) -> None:
    proc, root = cgroup_tree(tmp_path, "4:memory:/x\n2:cpu,cpuacct:/docker/abc\n", {
        "cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
        "cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
        "cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
        "cpu,cpuacct/cpu.cfs_period_us": "100000\n",
    })
    assert cgroup_quota(proc, root) == 1.0
    (root / "cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(proc, root) is None
    assert cgroup_quota(tmp_path / "missing", root) is None  # no cgroup file system: no quota
    proc.write_text("garbage without colons\n")
    assert cgroup_quota(proc, root) is None


def test_usable_cores_is_the_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    proc, root = cgroup_tree(tmp_path, "0::/a\n", {"a/cpu.max": "50000 100000\n"})
    assert usable_cores(proc, root) == 0.5
    (root / "a/cpu.max").write_text("max 100000\n")
    assert usable_cores(proc, root) == len(os.sched_getaffinity(0))


CHILD = r"""
import json, os, sys, time
if sys.argv[2] == "1":
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from agentspan.stores.sqlite import SqliteStore
from agentspan.records import Run
helper = {"auto": None, "on": True, "off": False}[sys.argv[3]]
store = SqliteStore(sys.argv[1], durability=sys.argv[4], defer_step_sync=True, step_helper=helper)
writer = store._writer
out = {"writer": writer is not None}
if writer is not None:
    writer.start(timeout=20)
    out["poll"] = open(f"/proc/{writer.helper_pid}/cmdline", "rb").read().split(b"\0")[-2].decode()
print(json.dumps(out))
store.close()
"""


def open_in_child(tmp_path: Path, *, one_cpu: bool, step_helper: str, durability: str = "normal") -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / f"{one_cpu}-{step_helper}.db"),
                           "1" if one_cpu else "0", step_helper, durability],
                          capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout)


@pytest.mark.parametrize("durability", ["normal", "full"])
def test_one_cpu_commits_inline_unless_told(tmp_path: Path, durability: str) -> None:
    assert open_in_child(tmp_path, one_cpu=True, step_helper="auto", durability=durability) == {"writer": False}
    # forced on: the helper runs, and sleeps on its pipe instead of polling it
    assert open_in_child(tmp_path, one_cpu=True, step_helper="on", durability=durability) == {
        "writer": True, "poll": "0"}


@TWO_CPUS
def test_two_cpus_use_the_polling_helper_unless_told(tmp_path: Path) -> None:
    assert open_in_child(tmp_path, one_cpu=False, step_helper="auto") == {"writer": True, "poll": "1"}
    assert open_in_child(tmp_path, one_cpu=False, step_helper="off") == {"writer": False}


def switches(pid: int) -> int:
    """The voluntary context switches of process ``pid`` so far (each wake-up from a sleep)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("voluntary_ctxt_switches:"):
            return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches")


@pytest.mark.parametrize("poll", [True, False])
def test_a_helper_told_not_to_poll_sleeps_between_frames(tmp_path: Path, poll: bool) -> None:
    store = SqliteStore(tmp_path / "a.db", defer_step_sync=True, step_helper=True)
    writer = store._writer
    assert writer is not None
    writer.poll = poll
    writer.start(timeout=20)
    run, _ = store.create_run(Run(framework="test", agent="a", input="x"))
    store.claim_run(run.id, owner="me", expected_epoch=0, lease_expires_at=time.time() + 60)
    try:
        pid = writer.helper_pid
        assert pid is not None
        before = switches(pid)
        step = Step(run_id=run.id, key="tool:0", seq=0, kind=StepKind.TOOL, name="t", input={})
        store.record_step(step, StepResult(status=StepStatus.COMPLETED, output=1), epoch=1)
        store.wait_durable(run.id)
        time.sleep(0.05)  # the helper polls for 20 ms after a frame, every 0.2 ms
        woken = switches(pid) - before
        assert writer.applied == 1 and [s.status for s in store.list_steps(run.id)] == [StepStatus.COMPLETED]
        if poll:
            assert woken >= 20, woken
        else:
            assert woken <= 5, woken  # woken for the frame, then asleep on the pipe
    finally:
        store.close()


def test_step_helper_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTSPAN_STEP_HELPER", "sometimes")
    agentspan.config.reset()
    with pytest.raises(ConfigurationError, match="AGENTSPAN_STEP_HELPER='sometimes'"):
        agentspan.config.settings()
    monkeypatch.setenv("AGENTSPAN_STEP_HELPER", "OFF")
    agentspan.config.reset()
    assert agentspan.config.settings().step_helper == "off"
    with pytest.raises(ConfigurationError, match="step_helper='later'"):
        agentspan.configure(step_helper="later")  # type: ignore[arg-type]
    agentspan.configure(home=tmp_path, step_helper=True)
    store = agentspan.get_store()
    assert isinstance(store, SqliteStore) and store._writer is not None
    agentspan.configure(step_helper="off")
    store = agentspan.get_store()
    assert isinstance(store, SqliteStore) and store._writer is None


ONE_CPU_RUN = r"""
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
sys.path.insert(0, sys.argv[1])
import agentspan
from agents import Agent, function_tool
from agentspan_openai_agents.testing import ScriptedModel, ToolCall

@function_tool
def add(a: int, b: int) -> int:
    '''Add two numbers.'''
    return a + b

model = ScriptedModel([ToolCall("add", {"a": i, "b": 1}) for i in range(20)] + ["done"])
print(agentspan.run(Agent(name="calc", tools=[add], model=model), "add", max_turns=50).final_output)
print(agentspan.get_store()._writer is None)
"""


def test_a_run_on_one_cpu_journals_every_step_inline(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTSPAN_HOME": str(tmp_path)}
    env.pop("AGENTSPAN_STEP_HELPER", None)
    done = subprocess.run([sys.executable, "-c", ONE_CPU_RUN, str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.split() == ["done", "True"]
    assert not (tmp_path / ".agentspan.db-writers").exists()  # no helper ever held its lock there
    store = SqliteStore(tmp_path / "agentspan.db", create=False)
    try:
        (run,) = store.list_runs()
        assert run.status is agentspan.RunStatus.COMPLETED and len(store.list_steps(run.id)) == 41
    finally:
        store.close()
