"""How many CPUs this process may use: whether a helper process has a core of its own.

The SQLite store's step writer (`agentspan.stores.step_writer`) hands each step row to a helper
process that commits it on another core while the agent goes on. With a single core to share, the
helper's commits and its wake-ups take turns with the agent's own thread instead: measured with
the benchmark pinned to one CPU (`bench/bench_openai_agents.py --cpus 1`), the helper that polls
its pipe added ~2.2 ms per turn, one that sleeps on it ~0.7, and committing in the agent's thread
~0.5. So the store uses the helper only when this process may run on two CPUs or more: its CPU
affinity (``taskset``, a container's cpuset) and its cgroup's CPU quota (``docker --cpus``,
a Kubernetes CPU limit) both count.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["cgroup_quota", "usable_cores"]

_CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cores(proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = _CGROUP_ROOT) -> float:
    """The CPUs this process may use at once: its affinity, capped by its cgroup's CPU quota.

    Args:
        proc_cgroup: The process's cgroup membership file (for tests).
        cgroup_root: Where the cgroup file systems are mounted (for tests).

    Returns:
        A number of CPUs (a quota may make it fractional: ``--cpus 1.5`` is 1.5).
    """
    if hasattr(os, "sched_getaffinity"):
        cores: float = len(os.sched_getaffinity(0))
    else:  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    quota = cgroup_quota(proc_cgroup, cgroup_root)
    return min(cores, quota) if quota is not None else cores


def cgroup_quota(proc_cgroup: Path = Path("/proc/self/cgroup"), cgroup_root: Path = _CGROUP_ROOT) -> float | None:
    """The CPU quota (in CPUs) of the process's cgroup and its ancestors, the smallest one; None
    when none is set or none can be read (not Linux, no cgroup file system mounted)."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    limits: list[float] = []
    for line in lines:
        _id, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if controllers == "":  # cgroup v2: <root>/<path>/cpu.max holds "QUOTA PERIOD" or "max PERIOD"
            limits += _along(cgroup_root, path, ("cpu.max",), _v2_limit)
        elif "cpu" in controllers.split(","):  # cgroup v1: cpu.cfs_quota_us (-1: none), cpu.cfs_period_us
            for mount in (cgroup_root / "cpu", cgroup_root / "cpu,cpuacct", cgroup_root / "cpuacct,cpu"):
                if mount.is_dir():
                    limits += _along(mount, path, ("cpu.cfs_quota_us", "cpu.cfs_period_us"), _v1_limit)
                    break
    return min(limits) if limits else None


def _along(mount: Path, path: str, names: tuple[str, ...], parse: Callable[[list[str]], float | None]) -> list[float]:
    """The limits set in the cgroup at ``path`` and its ancestors (a container sees its own cgroup
    as the root: the mount's top folder counts too)."""
    found = []
    folder = mount / path.strip("/")
    while True:
        try:
            texts = [(folder / name).read_text() for name in names]
        except OSError:
            texts = []
        limit = parse(texts) if texts else None
        if limit is not None:
            found.append(limit)
        if folder == mount or mount not in folder.parents:
            return found
        folder = folder.parent


def _v2_limit(texts: list[str]) -> float | None:
    quota, _, period = texts[0].strip().partition(" ")
    return _ratio(quota, period)


def _v1_limit(texts: list[str]) -> float | None:
    return _ratio(texts[0].strip(), texts[1].strip())


def _ratio(quota: str, period: str) -> float | None:
    try:
        q, p = float(quota), float(period)
    except ValueError:  # "max": no limit
        return None
    return q / p if q > 0 and p > 0 and math.isfinite(q / p) else None

