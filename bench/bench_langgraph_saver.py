"""Checkpointing overhead of a LangGraph graph: no checkpointer vs LangGraph's savers vs AgentspanSaver.

Run with ``uv run python bench/bench_langgraph_saver.py [--steps 100] [--repeats 5]``.

One run is `lg_support.counter_graph`: one node looping ``--steps`` times on a counter with a
small message list (4 messages), so ``steps + 1`` super-steps (``__start__``, then the ticks), each
saving the task's writes and a checkpoint. Variants, each in LangGraph's ``durability="sync"``
(a super-step waits for its checkpoint) and the default ``"async"`` (saved in the background
while the next step runs):

1. no checkpointer (the baseline: LangGraph alone);
2. ``InMemorySaver`` (dicts; nothing durable);
3. ``SqliteSaver`` (langgraph-checkpoint-sqlite, a file in the bench's temp dir; Python's
   ``sqlite3`` defaults: WAL set by the saver, ``synchronous=FULL``, so every commit fsyncs);
4. ``PostgresSaver`` (langgraph-checkpoint-postgres, a throwaway local cluster like
   ``tests/pg_cluster.py``'s, ``fsync=on``; skipped when PostgreSQL binaries are missing);
5. ``AgentspanSaver`` on the embedded SQLite store, ``durability="normal"`` (the default:
   WAL, ``synchronous=NORMAL``, survives process crashes) and ``"full"`` (fsync per commit, the
   like-for-like of SqliteSaver), as users get it: each invocation an Agentspan run (``runs=True``);
   and ``AgentspanSaver normal, runs=False``, a checkpointer only (what a run per invocation costs);
6. ``AgentspanSaver`` → `RemoteStore` → an Agentspan server (``python -m agentspan_server``, a
   subprocess on 127.0.0.1) over SQLite (a file in the temp dir, the server's default
   ``durability="normal"``) and over PostgreSQL (its own database on the same throwaway cluster as
   ``PostgresSaver``); ``--no-server`` skips them.

The variants run interleaved round-robin after one untimed, checked warm-up run each; every run
is a new thread on a saver (and store file) shared by all runs of its variant, as in a long-lived
app. The table shows medians; "+ms/step" is the added wall time per super-step over no checkpointer.

Through the server, the HTTP requests of the warm-up runs are counted on the client, and one HTTP
hop is measured on the same servers in every round: the median round trip of ``GET /healthz`` on a
keep-alive connection, as `RemoteStore` keeps one (on the SQLite server its store read takes
microseconds; on the PostgreSQL server it includes a PostgreSQL query). The issue's target for the
server: "through the server on PostgreSQL no slower than PostgresSaver plus one HTTP hop".
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # lg_support, pg_cluster, server_support

import httpx
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver

from agentspan.stores.sqlite import SqliteStore
from agentspan_langgraph import AgentspanSaver

import bench_support
from bench_support import (
    Column,
    machine,
    ok,
    print_markdown_table,
    print_variant_table,
    process_cpu_seconds,
    run_rounds,
    summarize,
)
from lg_support import counter_graph, counter_input

MODES = ("sync", "async")
TARGET_RATIO = 0.7  # AgentspanSaver-added / SqliteSaver-added, per super-step
VIA_SERVER = {"SQLite": "AgentspanSaver via server SQLite", "PostgreSQL": "AgentspanSaver via server PG"}
HOP_SAMPLES = 200  # GET /healthz round trips per server per round


def cpu_ms(pid: int) -> float:
    """User + system CPU time of a process, in ms."""
    return process_cpu_seconds(pid) * 1e3


class Clock(bench_support.Clock):
    """A `bench_support.Clock` that also holds the server process's CPU time."""

    server_cpu: float = 0.0  # ms of the Agentspan server process's CPU time, for the via-server variants


class Bench:
    """The savers under test (one per variant, shared by its runs) and what they hold open."""

    def __init__(self, steps: int, tmp: Path) -> None:
        self.steps = steps
        self.tmp = tmp
        self.stack = contextlib.ExitStack()
        self.savers: dict[str, BaseCheckpointSaver[Any] | None] = {"no checkpointer": None}
        self.graphs: dict[str, Any] = {}
        self.skipped: list[str] = []
        self.cluster: Any = None  # the PostgreSQL cluster of PostgresSaver, shared with the server
        self.server_urls: dict[str, str] = {}  # backend -> URL
        self.variant_urls: dict[str, str] = {}  # variant -> its server's URL (requests counted there)
        self.server_pids: dict[str, int] = {}  # variant -> its server process
        self.requests: dict[str, Counter[str]] = {}  # "variant [mode]" -> requests of one run
        self.hops: dict[str, list[float]] = {}  # backend -> median hop (ms) of each round

    # -- savers ------------------------------------------------------------------------------
    def add_reference_savers(self) -> None:
        self.savers["InMemorySaver"] = InMemorySaver()
        conn = sqlite3.connect(self.tmp / "sqlite-saver.db", check_same_thread=False)
        self.stack.callback(conn.close)
        sqlite_saver = SqliteSaver(conn)
        sqlite_saver.setup()
        self.savers["SqliteSaver"] = sqlite_saver

    def add_postgres_saver(self) -> None:
        try:
            from langgraph.checkpoint.postgres import PostgresSaver

            from pg_cluster import PgCluster

            cluster = PgCluster()
        except Exception as exc:  # binaries or the postgres user missing
            self.skipped.append(f"PostgresSaver skipped: {exc}")
            return
        cluster.start()
        self.stack.callback(cluster.stop)
        self.cluster = cluster
        saver = self.stack.enter_context(PostgresSaver.from_conn_string(cluster.create_database("bench")))
        saver.setup()
        self.savers["PostgresSaver"] = saver

    def add_agentspan_savers(self) -> None:
        for durability, runs in (("normal", True), ("full", True), ("normal", False)):
            name = f"AgentspanSaver {durability}" + ("" if runs else ", runs=False")
            store = SqliteStore(self.tmp / f"{name.replace(' ', '-').replace(',', '')}.db",
                                durability=durability)  # type: ignore[arg-type]
            self.stack.callback(store.close)
            self.savers[name] = AgentspanSaver(store, runs=runs)

    def add_server_savers(self) -> None:
        """AgentspanSaver through a real Agentspan server process, over SQLite and PostgreSQL."""
        from agentspan.stores.remote import RemoteStore

        from server_support import ServerProcess

        databases = {"SQLite": str(self.tmp / "server.db")}
        if self.cluster is not None:
            databases["PostgreSQL"] = self.cluster.create_database("agentspan_server")
        else:
            self.skipped.append("AgentspanSaver via server PG skipped: no PostgreSQL cluster")
        for backend, db in databases.items():
            server = ServerProcess(db).start()
            self.stack.callback(server.stop)
            store = RemoteStore(server.url)  # its own transport, as users get it
            self.stack.callback(store.close)
            self.savers[VIA_SERVER[backend]] = AgentspanSaver(store)
            self.variant_urls[VIA_SERVER[backend]] = server.url
            assert server.proc is not None
            self.server_pids[VIA_SERVER[backend]] = server.proc.pid
            self.server_urls[backend] = server.url
            self.hops[backend] = []

    def measure_hops(self) -> None:
        """One round of hop samples: the median ``GET /healthz`` round trip of each server."""
        for backend, url in self.server_urls.items():
            with httpx.Client(verify=False) as client:
                for _ in range(10):  # connect, warm up
                    client.get(f"{url}/healthz").raise_for_status()
                samples = []
                for _ in range(HOP_SAMPLES):
                    started = time.perf_counter()
                    client.get(f"{url}/healthz").raise_for_status()
                    samples.append((time.perf_counter() - started) * 1e3)
            self.hops[backend].append(statistics.median(samples))

    # -- runs --------------------------------------------------------------------------------
    def graph(self, name: str) -> Any:
        if name not in self.graphs:
            self.graphs[name] = counter_graph(self.steps, checkpointer=self.savers[name])
        return self.graphs[name]

    def run(self, name: str, mode: str, *, check: bool = False) -> Clock:
        graph, saver = self.graph(name), self.savers[name]
        config: dict[str, Any] = {"configurable": {"thread_id": str(uuid.uuid4())}, "recursion_limit": self.steps + 10}
        # LangGraph 1.2 fails with AttributeError ('_put_checkpoint_fut') when durability is given
        # without a checkpointer, so the baseline runs with LangGraph's defaults.
        options = {"durability": mode} if saver is not None else {}
        url, server_pid = self.variant_urls.get(name), self.server_pids.get(name)
        sent_before = served_requests(url) if check and url is not None else Counter()
        server_before = cpu_ms(server_pid) if server_pid is not None else 0.0
        with Clock() as clock:
            result = graph.invoke(counter_input(), config, **options)
        if server_pid is not None:
            clock.server_cpu = cpu_ms(server_pid) - server_before
        assert result["count"] == self.steps, result["count"]
        if check and url is not None:
            self.requests[f"{name} [{mode}]"] = served_requests(url) - sent_before
        if check and saver is not None:
            saved = list(saver.list(config))
            assert len(saved) == self.steps + 2, len(saved)  # input + __start__ + one per tick
            assert saved[0].checkpoint["channel_values"]["count"] == self.steps
        return clock


def served_requests(url: str) -> Counter[str]:
    """The API requests a server answered so far, as ``"METHOD /route"`` (its ``/metrics``)."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if sample.name == "agentspan_http_requests_total" and route.startswith("/api/"):
                counts[f"{sample.labels['method']} {route}"] += int(sample.value)
    return counts


def variants(bench: Bench) -> dict[str, Callable[[], Clock]]:
    found: dict[str, Callable[[], Clock]] = {"no checkpointer": lambda: bench.run("no checkpointer", "sync")}
    for mode in MODES:
        for name in bench.savers:
            if name != "no checkpointer":
                found[f"{name} [{mode}]"] = lambda name=name, mode=mode: bench.run(name, mode)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="node runs (super-steps - 1) per run (default 100)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per variant (default 5)")
    parser.add_argument("--no-postgres", action="store_true", help="skip PostgresSaver")
    parser.add_argument("--no-server", action="store_true", help="skip AgentspanSaver via server")
    parser.add_argument("--tmp", default=None, help="parent folder of the temp dir (default: system tmp)")
    args = parser.parse_args()
    if args.steps < 1 or args.repeats < 1:
        parser.error("--steps and --repeats must be >= 1")
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="agentspan-bench-lg-", dir=args.tmp))
    bench = Bench(args.steps, tmp)
    try:
        bench.add_reference_savers()
        if not args.no_postgres:
            bench.add_postgres_saver()
        bench.add_agentspan_savers()
        if not args.no_server:
            bench.add_server_savers()
        runs = variants(bench)
        for name in bench.savers:  # untimed warm-up, checking what each saver stored
            for mode in MODES:
                bench.run(name, mode, check=True)
        clocks = run_rounds(runs, args.repeats, after_round=bench.measure_hops)
    finally:
        bench.stack.close()
        shutil.rmtree(tmp, ignore_errors=True)
    report(clocks, args, bench, time.perf_counter() - started)


def report(clocks: dict[str, list[Clock]], args: argparse.Namespace, bench: Bench, elapsed: float) -> None:
    supersteps = args.steps + 1
    base = "no checkpointer"
    summary = summarize(clocks, base, supersteps)
    # paired, a noise cross-check: the median over rounds of (run - the same round's no-checkpointer run).
    median, added, paired = summary.median, summary.added, summary.paired

    print(f"\n{args.steps}-tick counter graph ({supersteps} super-steps, {args.steps + 2} checkpoints per run), "
          f"{args.repeats} interleaved repeats, median per variant")
    print(f"{machine()}, temp dir under {args.tmp or tempfile.gettempdir()}")
    for line in bench.skipped:
        print(line)
    print_variant_table(summary, 42, [Column("+ms/step", 9, added.__getitem__),
                                      Column("paired", 7, paired.__getitem__),
                                      Column("+cpu/step", 10, summary.cpu_added.__getitem__)])
    print("+ms/step = (median - no-checkpointer median) / super-steps; paired = median over rounds of (run - same\n"
          "round's no-checkpointer run) / super-steps; +cpu/step: as +ms/step on process CPU time (all threads; it\n"
          "excludes fsync waits and the PostgreSQL or Agentspan server's work).")
    print(f"total bench wall time: {elapsed:.1f} s")

    hop, trips = report_server(bench, clocks, supersteps)
    rows = []
    for mode in MODES:
        sqlite = added.get(f"SqliteSaver [{mode}]")
        for durability in ("normal", "full"):
            mine = added.get(f"AgentspanSaver {durability} [{mode}]")
            if sqlite is None or mine is None:
                continue
            ratio = mine / sqlite if sqlite > 0 else float("inf")
            paired_sqlite = paired[f"SqliteSaver [{mode}]"]
            paired_ratio = paired[f"AgentspanSaver {durability} [{mode}]"] / paired_sqlite if paired_sqlite else 0.0
            target = f"≤ {TARGET_RATIO}" if durability == "normal" else ""
            mark = ok(ratio, TARGET_RATIO) if durability == "normal" else ""
            rows.append((f"AgentspanSaver ({durability}) / SqliteSaver added, durability={mode}",
                         f"{mine:.3f} / {sqlite:.3f} ms = {ratio:.2f} (paired {paired_ratio:.2f})", target, mark))
        for other in ("InMemorySaver", "PostgresSaver", VIA_SERVER["SQLite"]):
            if f"{other} [{mode}]" in added:
                rows.append((f"{other} added per super-step, durability={mode}",
                             f"{added[f'{other} [{mode}]']:.3f} ms", "", ""))
        via_name = f"{VIA_SERVER['PostgreSQL']} [{mode}]"
        postgres, via_pg = added.get(f"PostgresSaver [{mode}]"), added.get(via_name)
        if postgres is None or via_pg is None or hop is None:
            continue
        target = postgres + hop
        rows.append((f"AgentspanSaver via server (PostgreSQL) added per super-step, durability={mode}",
                     f"{via_pg:.3f} ms (paired {paired[via_name]:.3f})",
                     f"≤ PostgresSaver + 1 hop = {postgres:.3f} + {hop:.3f} = {target:.3f} ms", ok(via_pg, target)))
        if trips.get(mode):
            rows.append((f"PostgresSaver + {trips[mode]:.2f} hops (the requests a super-step sends), durability={mode}",
                         f"{postgres:.3f} + {trips[mode]:.2f} × {hop:.3f} = {postgres + trips[mode] * hop:.3f} ms",
                         "(reference)", ""))
    print(f"\n<!-- bench/bench_langgraph_saver.py --steps {args.steps} --repeats {args.repeats}; "
          f"no checkpointer: {median[base] / supersteps:.3f} ms/super-step -->")
    print_markdown_table(rows)


def report_server(
    bench: Bench, clocks: dict[str, list[Clock]], supersteps: int
) -> tuple[float | None, dict[str, float]]:
    """Prints the requests a run sends through the server, the server's CPU time and the hop;
    returns (hop ms, requests per super-step of the PostgreSQL variant by mode)."""
    if not bench.server_urls:
        return None, {}
    hops = {backend: statistics.median(values) for backend, values in bench.hops.items() if values}
    print("\nThrough the server (HTTP requests the server counted, during the warm-up run of each variant):")
    trips: dict[str, float] = {}
    for variant, sent in bench.requests.items():
        total = sum(sent.values())
        detail = ", ".join(f"{count} {request}" for request, count in sorted(sent.items()))
        print(f"  {variant}: {total} requests per run = {total / supersteps:.2f} per super-step ({detail})")
        if variant.startswith(VIA_SERVER["PostgreSQL"]):
            trips[variant.rsplit("[", 1)[1].rstrip("]")] = total / supersteps
        server_cpu = statistics.median(c.server_cpu for c in clocks[variant]) / supersteps
        print(f"    server process CPU per super-step (median, /proc ticks; PostgreSQL's own not counted): "
              f"{server_cpu:.3f} ms")
    for backend, value in hops.items():
        print(f"  one HTTP hop, median GET /healthz on the {backend} server (keep-alive, loopback, "
              f"{HOP_SAMPLES} x {len(bench.hops[backend])} rounds): {value:.3f} ms")
    per_step = max((sum(s.values()) / supersteps for s in bench.requests.values()), default=0.0)
    if per_step > 1.05:
        print(f"  NOTE: a super-step costs {per_step:.2f} round trips through the server, not one: the task's\n"
              "  writes (PUT /api/checkpoints/writes, one per task) and the new checkpoint (PUT /api/checkpoints);\n"
              "  the run's start reads the thread once (GET /api/checkpoints/find). LangGraph sends the two\n"
              "  concurrently (a sync super-step waits for the checkpoint only), so their latencies overlap, but\n"
              "  both cost client and server CPU. The issue's target below allows one hop.")
    hop = hops.get("SQLite")  # the HTTP hop itself: that server's store read takes microseconds
    return hop, trips


if __name__ == "__main__":
    main()
