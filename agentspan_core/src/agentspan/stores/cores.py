"""How many CPUs this process may use: whether a helper process has a core of its own.

The SQLite store's step writer (`agentspan.stores.step_writer`) hands each step row to a helper
process that commits it on another core while the agent goes on. With a single core to share, the
helper's commits and its wake-ups take turns with the agent's own thread instead: measured with
the benchmark pinned to one CPU (`bench/bench_openai_agents.py --cpus 1`), the helper that polls
its pipe added ~2.2 ms per turn, one that sleeps on it ~0.6, and committing in the agent's thread
~0.3. So the store uses the helper only when this process may run on two CPUs or more: its CPU
affinity (``taskset``, a container's cpuset) and its cgroup's CPU quota (``docker --cpus``,
a Kubernetes CPU limit) both count. The cgroup file systems are found where they are mounted
(``/proc/self/mountinfo``: cgroup v2, or v1's ``cpu`` controller, whatever it is mounted with);
anything that cannot be read counts as no quota.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = ["HELPER_CORES", "cgroup_quota", "spare_core", "usable_cores"]

_PROC_CGROUP = Path("/proc/self/cgroup")
_MOUNTINFO = Path("/proc/self/mountinfo")


HELPER_CORES = 2
"""The CPUs a process needs for the step writer's helper to run by default (a core of its own)."""


def spare_core(cores: float) -> bool:
    """Whether a process that may use ``cores`` CPUs (`usable_cores`) has one for the helper."""
    return cores >= HELPER_CORES


def usable_cores(proc_cgroup: Path = _PROC_CGROUP, mountinfo: Path = _MOUNTINFO) -> float:
    """The CPUs this process may use at once: its affinity, capped by its cgroup's CPU quota.

    Args:
        proc_cgroup: The process's cgroup membership file (for tests).
        mountinfo: The process's mount table (for tests).

    Returns:
        A number of CPUs (a quota may make it fractional: ``--cpus 1.5`` is 1.5).
    """
    try:
        cores: float = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS
        cores = os.cpu_count() or 1
    quota = cgroup_quota(proc_cgroup, mountinfo)
    return min(cores, quota) if quota is not None else cores


def cgroup_quota(proc_cgroup: Path = _PROC_CGROUP, mountinfo: Path = _MOUNTINFO) -> float | None:
    """The CPU quota (in CPUs) of the process's cgroup and its ancestors, the smallest one; None
    when none is set or none can be read (not Linux, no cgroup file system, no permission)."""
    try:
        limits = list(_limits(_text(proc_cgroup), _cgroup_mounts(_text(mountinfo))))
    except (OSError, ValueError):
        return None
    return min(limits) if limits else None


def _text(path: Path) -> str:
    """A kernel file's text (cgroup names may hold any bytes: kept as the file system's)."""
    return os.fsdecode(path.read_bytes())


def _cgroup_mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """``(root, mount point, file system type, super options)`` of each cgroup mount."""
    mounts = []
    for line in mountinfo.splitlines():
        fields, _, after = line.partition(" - ")
        parts, kind = fields.split(" "), after.split(" ")
        if len(parts) < 5 or len(kind) < 3 or kind[0] not in ("cgroup", "cgroup2"):
            continue
        mounts.append((_unescape(parts[3]), _unescape(parts[4]), kind[0], set(kind[2].split(","))))
    return mounts


def _unescape(field: str) -> str:
    r"""A mountinfo path field: spaces, tabs, newlines and backslashes are written as ``\ooo``."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _limits(proc_cgroup: str, mounts: list[tuple[str, str, str, set[str]]]) -> Iterator[float]:
    """The CPU limits along the process's cgroup path, in each hierarchy that can hold one."""
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _id, controllers, path = parts
        if controllers == "":  # cgroup v2: cpu.max holds "QUOTA PERIOD" or "max PERIOD"
            found = [(root, point) for root, point, kind, _ in mounts if kind == "cgroup2"]
            names: tuple[str, ...] = ("cpu.max",)
            parse: Callable[[list[str]], float | None] = _v2_limit
        elif "cpu" in controllers.split(","):  # cgroup v1: cpu.cfs_quota_us (-1: none), cpu.cfs_period_us
            found = [(root, point) for root, point, kind, options in mounts if kind == "cgroup" and "cpu" in options]
            names, parse = ("cpu.cfs_quota_us", "cpu.cfs_period_us"), _v1_limit
        else:
            continue
        for root, point in found[:1]:
            yield from _along(Path(point), _relative(path, root), names, parse)


def _relative(path: str, root: str) -> str:
    """The cgroup ``path`` below a mount of the hierarchy's folder ``root`` (a container sees its
    own cgroup as the mount's root); the mount's top when the path is not below it."""
    path, root = path.rstrip("/") or "/", root.rstrip("/") or "/"
    if root == "/":
        return path.lstrip("/")
    if path == root or path.startswith(root + "/"):
        return path[len(root):].lstrip("/")
    return ""


def _along(mount: Path, below: str, names: tuple[str, ...], parse: Callable[[list[str]], float | None]) -> list[float]:
    """The limits set in the cgroup ``below`` the mount and in its ancestors up to the mount's top."""
    found = []
    folder = mount / below if below and ".." not in below.split("/") else mount
    while True:
        try:
            limit = parse([_text(folder / name) for name in names])
        except (OSError, ValueError):
            limit = None
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
