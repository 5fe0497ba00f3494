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


def cgroup_tree(tmp_path: Path, membership: str | bytes, mounts: list[tuple[str, str, str, str]],
                files: dict[str, str]) -> tuple[Path, Path]:
    """A fake ``/proc/self/cgroup``, ``/proc/self/mountinfo`` (``mounts``: hierarchy root, mount
    folder below ``tmp_path/fs``, file system type, super options) and cgroup files (path below
    ``tmp_path/fs`` -> text)."""
    proc = tmp_path / "cgroup"
    proc.write_bytes(membership.encode() if isinstance(membership, str) else membership)
    fs = tmp_path / "fs"
    fs.mkdir(exist_ok=True)
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("".join(
        f"{30 + i} 1 0:{40 + i} {root} {str(fs / point).replace(' ', chr(92) + '040')} rw,relatime - {kind} {kind} "
        f"{options}\n" for i, (root, point, kind, options) in enumerate(mounts)))
    for name, text in files.items():
        (fs / name).parent.mkdir(parents=True, exist_ok=True)
        (fs / name).write_text(text)
    return proc, mountinfo


V2 = [("/", "unified", "cgroup2", "rw")]


def test_cgroup_v2_quota_is_the_smallest_along_the_path(tmp_path: Path) -> None:
    proc, mounts = cgroup_tree(tmp_path, "0::/kubepods/pod1/ctr\n", V2, {
        "unified/kubepods/cpu.max": "max 100000\n",
        "unified/kubepods/pod1/cpu.max": "150000 100000\n",  # --cpus 1.5 on the pod
        "unified/kubepods/pod1/ctr/cpu.max": "max 100000\n",
    })
    assert cgroup_quota(proc, mounts) == 1.5
    proc.write_text("0::/kubepods\n")
    assert cgroup_quota(proc, mounts) is None  # "max": no limit
    proc.write_text("0::/\n")
    (tmp_path / "fs/unified/cpu.max").write_text("50000 100000\n")  # the mount's top counts too
    assert cgroup_quota(proc, mounts) == 0.5


def test_a_container_sees_its_own_cgroup_as_the_mount(tmp_path: Path) -> None:
    # without a cgroup namespace: /proc/self/cgroup names the host's path, the mount's root is it
    proc, mounts = cgroup_tree(tmp_path, "0::/docker/abc\n", [("/docker/abc", "cg v2", "cgroup2", "rw")],
                               {"cg v2/cpu.max": "100000 100000\n",
                                "cg v2/docker/abc/cpu.max": "25000 100000\n"})  # a folder of its own, not it
    assert cgroup_quota(proc, mounts) == 1.0
    proc.write_text("0::/elsewhere\n")  # not below the mount's root: its top is what it sees
    assert cgroup_quota(proc, mounts) == 1.0


def test_cgroup_v1_quota_wherever_the_cpu_controller_is_mounted(tmp_path: Path) -> None:
    proc, mounts = cgroup_tree(
        tmp_path, "4:memory:/x\n2:cpuset,cpu,cpuacct:/docker/abc\n",
        [("/", "memory", "cgroup", "rw,memory"), ("/", "cpuset,cpu,cpuacct", "cgroup", "rw,cpuset,cpu,cpuacct")],
        {"cpuset,cpu,cpuacct/docker/abc/cpu.cfs_quota_us": "100000\n",
         "cpuset,cpu,cpuacct/docker/abc/cpu.cfs_period_us": "100000\n",
         "cpuset,cpu,cpuacct/cpu.cfs_quota_us": "-1\n",
         "cpuset,cpu,cpuacct/cpu.cfs_period_us": "100000\n",
         "memory/x/cpu.max": "1000 100000\n"})  # not a cpu hierarchy: not read
    assert cgroup_quota(proc, mounts) == 1.0
    (tmp_path / "fs/cpuset,cpu,cpuacct/docker/abc/cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(proc, mounts) is None


def test_what_cannot_be_read_is_no_quota(tmp_path: Path) -> None:
    proc, mounts = cgroup_tree(tmp_path, b"0::/bad\xff\n", V2,
                               {"unified/cpu.max": "garbage\n"})
    (tmp_path / "fs/unified").joinpath(os.fsdecode(b"bad\xff")).mkdir()
    (tmp_path / "fs/unified").joinpath(os.fsdecode(b"bad\xff"), "cpu.max").write_bytes(b"50000 100000\n")
    assert cgroup_quota(proc, mounts) == 0.5  # a cgroup name that is not UTF-8 is still found
    (tmp_path / "fs/unified").joinpath(os.fsdecode(b"bad\xff"), "cpu.max").write_bytes(b"\xff\xfe 1\n")
    assert cgroup_quota(proc, mounts) is None
    assert cgroup_quota(tmp_path / "missing", mounts) is None  # no cgroup file system
    assert cgroup_quota(proc, tmp_path / "missing") is None
    proc.write_text("garbage without colons\n")
    assert cgroup_quota(proc, mounts) is None


def test_usable_cores_is_the_affinity_capped_by_the_quota(tmp_path: Path) -> None:
    proc, mounts = cgroup_tree(tmp_path, "0::/a\n", V2, {"unified/a/cpu.max": "50000 100000\n"})
    assert usable_cores(proc, mounts) == 0.5
    (tmp_path / "fs/unified/a/cpu.max").write_text("max 100000\n")
    assert usable_cores(proc, mounts) == len(os.sched_getaffinity(0))


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
        # handed to the helper (`applied` counts lazily: when the helper answered before the wait
        # looked, the wait reads the shared answer and counts nothing; a loaded CI run saw 0)
        assert writer.sent == 1 and [s.status for s in store.list_steps(run.id)] == [StepStatus.COMPLETED]
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
    with pytest.raises(ConfigurationError, match="step_helper=2"):
        agentspan.configure(step_helper=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="step_helper='on'"):
        SqliteStore(tmp_path / "x.db", defer_step_sync=True, step_helper="on")  # type: ignore[arg-type]
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
