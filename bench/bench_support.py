"""What the benchmarks share: timing a block, interleaved rounds, medians over a baseline, tables.

A benchmark times each variant's run with a `Clock`, runs the variants round-robin with
`run_rounds`, reduces the clocks to per-unit added times over its baseline variant with
`summarize`, and prints them with `print_variant_table` and `print_markdown_table`.
`EmbeddedHomes` holds the embedded SQLite stores (one per durability) that the agentspan
variants of the framework benchmarks share.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import agentspan
import agentspan.config
from agentspan.stores.base import Store
from agentspan.stores.sqlite import SqliteStore

DURABILITIES = ("normal", "full")


def framework_bench_args(doc: str, default_turns: int) -> argparse.Namespace:
    """Parses the options of a framework benchmark: ``--turns``, ``--repeats``, ``--no-dbos``, ``--tmp``.

    Args:
        doc: The benchmark's module docstring (its first line describes the command).
        default_turns: The default of ``--turns``.
    """
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--turns", type=int, default=default_turns,
                        help=f"model calls per run (default {default_turns})")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS variant")
    parser.add_argument("--tmp", default=None, help="parent folder of the temp dirs (default: system tmp)")
    parser.add_argument("--processes", type=int, default=1,
                        help="run the whole interleaved bench in this many fresh processes, one after the "
                             "other, and report the median over them (default 1: this process)")
    parser.add_argument("--cpus", type=int, default=None,
                        help="pin the bench (and the processes it starts) to this many of its CPUs, e.g. 1 "
                             "for a one-CPU container (default: all of them)")
    parser.add_argument("--summary-json", default=None, help=argparse.SUPPRESS)  # set by `in_processes`
    args = parser.parse_args()
    if args.turns < 2 or args.repeats < 1 or args.processes < 1:
        parser.error("--turns must be >= 2, --repeats >= 1 and --processes >= 1")
    if args.cpus is not None:
        allowed = sorted(os.sched_getaffinity(0))
        if not 1 <= args.cpus <= len(allowed):
            parser.error(f"--cpus must be between 1 and {len(allowed)} (the CPUs this process may use)")
        os.sched_setaffinity(0, allowed[:args.cpus])  # before any store or helper process exists
    return args


def child_bench_args(doc: str, rounds: str, rounds_help: str) -> argparse.Namespace:
    """Parses the options of a bench that measures in fresh child processes of itself: ``--turns``
    (default 100), ``--<rounds>`` (default 20), ``--processes`` (default 3) and the hidden ``--one``
    and ``--seed`` of a child."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--turns", type=int, default=100, help="model calls per run (default 100)")
    parser.add_argument(f"--{rounds}", type=int, default=20, help=f"{rounds_help} (default 20)")
    parser.add_argument("--processes", type=int, default=3, help="fresh processes, one after the other (default 3)")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # a child: print one JSON line
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.turns < 2 or getattr(args, rounds) < 1 or args.processes < 1:
        parser.error(f"--turns must be >= 2, --{rounds} >= 1 and --processes >= 1")
    return args


def child_measurements(script: str, args: argparse.Namespace, rounds: str,
                       describe: Callable[[dict[str, float]], str]) -> dict[str, float]:
    """Runs ``script --one`` (parsed by `child_bench_args`) in ``args.processes`` fresh processes, one
    after the other, printing ``describe`` of each one's JSON line and, for several, of the median
    of each field over them; returns those medians."""
    rows: list[dict[str, float]] = []
    for index in range(args.processes):
        out = subprocess.run([sys.executable, script, "--one", "--turns", str(args.turns), f"--{rounds}",
                              str(getattr(args, rounds)), "--seed", str(index)],
                             check=True, capture_output=True, text=True)  # fmt: skip
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"process {index + 1}/{args.processes}: {describe(rows[-1])}", flush=True)
    mid = {field: statistics.median(row[field] for row in rows) for field in rows[0]}
    if args.processes > 1:
        print(f"median over processes: {describe(mid)}")
    return mid


def in_processes(script: str, args: argparse.Namespace, tmp_root: Path, unit: str) -> list[dict[str, dict[str, float]]]:
    """Runs ``script`` (a framework bench) once per ``args.processes`` in a fresh interpreter each.

    The spread of a 100-turn run's added time between processes (where code and data land in
    memory, which core) is larger than within one: interleaved rounds share one process's luck.
    Each child writes its `Summary` (``added``, ``paired``, ``median``) as JSON; its table is not
    shown, one line per process with the added ms per ``unit`` is.

    Returns:
        One summary per process, in the order they ran.
    """
    summaries = []
    for index in range(args.processes):
        out = tmp_root / f"summary-{index}.json"
        argv = [sys.executable, script, "--turns", str(args.turns), "--repeats", str(args.repeats),
                "--summary-json", str(out)] + (["--no-dbos"] if args.no_dbos else []) + (
                ["--tmp", args.tmp] if args.tmp else [])
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        summaries.append(json.loads(out.read_text()))
        print(f"process {index + 1}/{args.processes}: " + ", ".join(
            f"{name} +{added:.3f}" for name, added in summaries[-1]["added"].items() if added != 0.0) +
            f" ms per {unit}", flush=True)
    return summaries


def write_summary(path: str, summary: Summary) -> None:
    """Writes what `in_processes` reads back from a child."""
    Path(path).write_text(json.dumps({"added": summary.added, "paired": summary.paired,
                                      "median": summary.median}))


def median_over(summaries: Sequence[Mapping[str, Mapping[str, float]]], field: str) -> dict[str, float]:
    """The median of ``field`` (``added``, ``paired``...) per variant over `in_processes`' summaries."""
    names = summaries[0][field]
    return {name: statistics.median(s[field][name] for s in summaries) for name in names}


class Clock:
    """Wall and process-CPU time (all threads) of the block it times, in ms."""

    wall: float = 0.0
    cpu: float = 0.0

    def __enter__(self) -> Clock:
        gc.collect()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = (time.perf_counter() - self._wall) * 1e3
        self.cpu = (time.process_time() - self._cpu) * 1e3


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid``, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


AnyClock = TypeVar("AnyClock", bound=Clock)


def run_rounds(variants: dict[str, Callable[[], AnyClock]], repeats: int,
               after_round: Callable[[], None] | None = None,
               shuffle: random.Random | None = None) -> dict[str, list[AnyClock]]:
    """Runs every variant once per round, round-robin, for ``repeats`` rounds.

    Interleaving spreads slow phases of a shared machine over all variants alike.

    Args:
        variants: Name → a function timing one run.
        repeats: Rounds.
        after_round: Called after each round (e.g. to take a measurement of its own).
        shuffle: Orders each round's variants at random with it (else always in ``variants``'
            order, where each variant finds the caches the one before it left).

    Returns:
        Name → its clocks, one per round.
    """
    clocks: dict[str, list[AnyClock]] = {name: [] for name in variants}
    for _ in range(repeats):
        order = list(variants)
        if shuffle is not None:
            shuffle.shuffle(order)
        for name in order:
            clocks[name].append(variants[name]())
        if after_round is not None:
            after_round()
    return clocks


@dataclass
class Summary:
    """The clocks of each variant reduced against the ``base`` variant, per ``units`` (turns, calls, steps).

    Attributes:
        wall: Name → wall ms of each run.
        median: Name → median wall ms of a run.
        added: Name → (median - base median) / units.
        paired: Name → median over rounds of (run - the same round's base run) / units: a cross-check
            against machine noise.
        cpu_added: Name → as ``added``, on process CPU time (all threads; no fsync waits).
    """

    base: str
    units: int
    wall: dict[str, list[float]]
    median: dict[str, float]
    added: dict[str, float]
    paired: dict[str, float]
    cpu_added: dict[str, float]


def summarize(clocks: Mapping[str, Sequence[Clock]], base: str, units: int) -> Summary:
    """Reduces ``clocks`` to medians and to added time per unit over the ``base`` variant."""
    wall = {name: [c.wall for c in cs] for name, cs in clocks.items()}
    cpu = {name: [c.cpu for c in cs] for name, cs in clocks.items()}
    median = {name: statistics.median(values) for name, values in wall.items()}
    added = {name: (m - median[base]) / units for name, m in median.items()}
    paired = {name: statistics.median(v - b for v, b in zip(values, wall[base], strict=True)) / units
              for name, values in wall.items()}
    cpu_added = {name: (statistics.median(values) - statistics.median(cpu[base])) / units
                 for name, values in cpu.items()}
    return Summary(base, units, wall, median, added, paired, cpu_added)


@dataclass
class Column:
    """A column of `print_variant_table` after ms/run, min and max.

    Attributes:
        title: Its header.
        width: Its width.
        value: The cell of a variant (by name).
        on_base: Also shown on the baseline's row (else that row leaves it blank).
    """

    title: str
    width: int
    value: Callable[[str], float]
    on_base: bool = False


def print_variant_table(summary: Summary, name_width: int, columns: Sequence[Column]) -> None:
    """Prints one row per variant: its name, median ms/run, min, max, then ``columns`` (3 decimals)."""
    header = f"{'variant':<{name_width}} {'ms/run':>8} {'min':>7} {'max':>7}"
    header += "".join(f" {c.title:>{c.width}}" for c in columns)
    print(header)
    print("-" * len(header))
    always = [c for c in columns if c.on_base]
    extra = [c for c in columns if not c.on_base]
    for name, values in summary.wall.items():
        cells = "".join(f" {c.value(name):>{c.width}.3f}" for c in always)
        rest = "" if name == summary.base else " ".join(f"{c.value(name):>{c.width}.3f}" for c in extra)
        print(f"{name:<{name_width}} {summary.median[name]:>8.1f} {min(values):>7.1f} {max(values):>7.1f}"
              f"{cells} {rest}")


def print_markdown_table(rows: Iterable[tuple[str, str, str, str]]) -> None:
    """Prints ``(metric, measured, target, mark)`` rows as the Markdown table the README quotes."""
    print("| Metric | Measured | Target | |")
    print("|---|---:|---:|:-:|")
    for metric, value, target, mark in rows:
        print(f"| {metric} | {value} | {target} | {mark} |")


def ok(value: float, target: float, *, at_least: bool = False) -> str:
    """✅ when ``value`` meets ``target`` (at most it, or at least it with ``at_least``), else ❌."""
    return "✅" if (value >= target if at_least else value <= target) else "❌"


def machine() -> str:
    """``python <version>, <n> CPUs [(pinned to <m>)], load average <1-minute load>``."""
    pinned = len(os.sched_getaffinity(0))
    cpus = f"{os.cpu_count()} CPUs" + (f" (pinned to {pinned})" if pinned != os.cpu_count() else "")
    return f"python {sys.version.split()[0]}, {cpus}, load average {os.getloadavg()[0]:.2f}"


def sqlite_commit_us(folder: Path, rounds: int = 5) -> tuple[float, float]:
    """The machine's yardstick: µs per bare SQLite WAL commit (one ~200-byte insert, sqlite3 alone)
    with ``synchronous=NORMAL`` and ``FULL``, the median of ``rounds`` rounds each.

    Issue #2 set its targets on this machine after measuring these two at about 10 and 200 µs:
    printed next to the results, they tell a slow period of the VM from a slower Agentspan.
    """
    medians = []
    for sync, commits in (("NORMAL", 2000), ("FULL", 200)):
        path = folder / f"yardstick-{sync.lower()}.db"
        db = sqlite3.connect(path, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={sync}")
            db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
            per_round = []
            for _ in range(rounds):
                started = time.perf_counter()
                for _ in range(commits):
                    db.execute("BEGIN")
                    db.execute("INSERT INTO t (v) VALUES (?)", ("x" * 200,))
                    db.execute("COMMIT")
                per_round.append((time.perf_counter() - started) / commits * 1e6)
        finally:
            db.close()
        medians.append(statistics.median(per_round))
    return medians[0], medians[1]


class EmbeddedHomes:
    """One embedded SQLite store per durability, shared by all runs of that durability.

    As all DBOS runs share its system database, all agentspan runs of one durability share a store
    file and one open store object, as in a long-lived app process (where `agentspan.get_store`
    opens the store once): its connection, statement cache and background threads (held-back
    starts, WAL checkpoints) outlive each run. Opening a store (connect + schema check) is timed
    apart from the runs, on a second store object opened and closed on each `configure`.
    """

    def __init__(self, tmp_root: Path) -> None:
        self.tmp_root = tmp_root
        self.stores: dict[str, SqliteStore] = {}
        self.store_open_ms: dict[str, list[float]] = {durability: [] for durability in DURABILITIES}

    def configure(self, durability: str) -> Store:
        """Points agentspan at the store of ``durability`` (made on first use); times an open."""
        store = self.stores.get(durability)
        if store is None:
            home = Path(tempfile.mkdtemp(prefix=f"as-{durability}-", dir=self.tmp_root))
            # as `agentspan.get_store` opens the process's store (a "full" one fsyncs step writes
            # off the agent's path: `agentspan.stores.wal_sync`)
            store = self.stores[durability] = SqliteStore(  # type: ignore[arg-type]
                home / "agentspan.db", durability=durability, defer_step_sync=True,
                step_helper=agentspan.config.settings().step_helper_choice)  # $AGENTSPAN_STEP_HELPER
        opened = time.perf_counter()
        SqliteStore(store.path, durability=durability, create=False).close()  # type: ignore[arg-type]
        self.store_open_ms[durability].append((time.perf_counter() - opened) * 1e3)
        # `agentspan.configure(store=...)` would close the other durability's store (a process
        # normally uses one); swap the process's store without closing either.
        agentspan.config._store = store
        return store

    def forget_open_times(self) -> None:
        """Drops the open times so far (those of the warm-up runs)."""
        for opens in self.store_open_ms.values():
            opens.clear()

    def print_open_times(self) -> None:
        """Prints the median store open time of each durability."""
        for durability, opens in self.store_open_ms.items():
            if opens:
                print(f"agentspan store open + schema ({durability}), once per process: "
                      f"{statistics.median(opens):.2f} ms (not in ms/run)")

    def close(self) -> None:
        """Closes the stores."""
        agentspan.config.reset()
        for store in self.stores.values():
            store.close()


def destroy_dbos() -> None:
    """Shuts DBOS down and forgets its registered functions."""
    from dbos import DBOS

    DBOS.destroy(destroy_registry=True)
