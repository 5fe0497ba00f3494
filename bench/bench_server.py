"""Agentspan through a server on loopback: per-call overhead, sustained throughput, idle waiting runs.

Run with ``uv run python bench/bench_server.py [--turns 20] [--repeats 5] [--clients 4] [--steps 300]``.

1. Per journaled call: an openai-agents run (``--turns`` turns, each a model call and a tool call,
   zero-latency `ScriptedModel`), interleaved round-robin: plain ``Runner.run_sync``; the embedded
   SQLite store; a server (``python -m agentspan_server``, a separate process on 127.0.0.1) over
   SQLite; a server over PostgreSQL (a throwaway cluster started here). Median of ``--repeats``.
2. Throughput: ``--clients`` processes, each journaling one run of ``--steps`` steps through
   `RemoteStore` as a run does (a model call recorded in one request, then a tool call's start
   and finish), all at once. Prints steps/s and the p50/p99 latency of journaling one step.
3. Idle: 1,000 runs parked waiting for approval on the server; the server's CPU time over 5 s.

Needs PostgreSQL's binaries (Debian package ``postgresql``) for the PostgreSQL variants; without
them those rows are skipped.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))  # pg_cluster, server_support

from agents import Runner, set_tracing_disabled

import agentspan
import agentspan.config
from agentspan.records import Approval, Run, RunStatus
from agentspan.stores.remote import RemoteStore

from _journal_worker import journal_one_run
from bench_openai_agents import FINAL, PROMPT, add, make_agent
from bench_support import ok, print_markdown_table, process_cpu_seconds
from server_support import ServerProcess

set_tracing_disabled(True)
TARGET_MS_PER_CALL = 2.0
TARGET_STEPS_SQLITE = 1500
TARGET_STEPS_PG = 1000


# ---- 1. per journaled call ---------------------------------------------------------------------
def one_run(turns: int, server_url: str | None, home: Path | None) -> float:
    """Wall seconds of one agent run (plain when neither a server nor a home is given)."""
    agent = make_agent(turns, add)
    if server_url is None and home is None:
        started = time.perf_counter()
        result = Runner.run_sync(agent, PROMPT, max_turns=2 * turns + 10)
        elapsed = time.perf_counter() - started
    else:
        agentspan.config.reset()
        if server_url is not None:
            os.environ["AGENTSPAN_SERVER_URL"] = server_url
        else:
            os.environ.pop("AGENTSPAN_SERVER_URL", None)
            agentspan.configure(home=home)
        agentspan.get_store()  # connect / open outside the clock
        started = time.perf_counter()
        result = agentspan.run(agent, PROMPT, max_turns=2 * turns + 10)
        elapsed = time.perf_counter() - started
        agentspan.config.reset()
    assert result.final_output == FINAL
    return elapsed


# ---- 2. throughput -----------------------------------------------------------------------------
def throughput(url: str, clients: int, steps: int) -> tuple[float, float, float]:
    """(steps/s, p50 ms, p99 ms) of ``clients`` processes journaling at once.

    Steps/s is all steps over the span from the first client's first step to the last client's
    last step (process start-up and imports are outside it).
    """
    with multiprocessing.get_context("spawn").Pool(clients) as pool:
        pool.map(time.sleep, [0.0] * clients)  # all clients started and imported
        start_at = time.time() + 1.0
        results = pool.map(journal_one_run, [(url, steps, start_at)] * clients)
    wall = max(r[1] for r in results) - min(r[0] for r in results)
    latencies = sorted(x for r in results for x in r[2])
    p50 = latencies[len(latencies) // 2] * 1e3
    p99 = latencies[int(len(latencies) * 0.99)] * 1e3
    return len(latencies) / wall, p50, p99


# ---- 3. idle waiting runs ----------------------------------------------------------------------
def park_waiting_runs(url: str, count: int) -> None:
    """Creates ``count`` runs waiting for approval, their leases released (as workers leave them)."""
    store = RemoteStore(url)
    for i in range(count):
        run, _ = store.create_run(Run(framework="bench", agent="idle", input=i))
        run = store.claim_run(run.id, owner="bench", expected_epoch=0, lease_expires_at=time.time() + 60)
        store.request_approval(Approval(run_id=run.id, step_key="llm:0/call:c", tool="refund", args={"i": i},
                                        args_hash="h"), epoch=run.lease_epoch)
        store.update_run(run.id, epoch=run.lease_epoch, release_lease=True)
    assert len(store.list_runs(status=RunStatus.WAITING, limit=1000)) == min(count, 1000)
    store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--waiting", type=int, default=1000)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="agentspan-bench-server-"))
    servers: dict[str, ServerProcess] = {}
    cluster = None
    try:
        servers["server (SQLite)"] = ServerProcess(str(tmp / "server.db")).start()
        try:
            from pg_cluster import PgCluster

            cluster = PgCluster()
            cluster.start()
            servers["server (PostgreSQL)"] = ServerProcess(cluster.create_database("bench")).start()
        except Exception as exc:
            print(f"PostgreSQL variants skipped: {exc}")
            cluster = None
        home = tmp / "embedded"
        variants: dict[str, tuple[str | None, Path | None]] = {
            "plain Runner.run_sync": (None, None), "embedded SQLite": (None, home),
            **{name: (server.url, None) for name, server in servers.items()},
        }
        for url, h in variants.values():  # warm-up
            one_run(args.turns, url, h)
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, (url, h) in variants.items():
                times[name].append(one_run(args.turns, url, h))
        calls = 2 * args.turns - 1
        plain = statistics.median(times["plain Runner.run_sync"])
        embedded = statistics.median(times["embedded SQLite"])
        print(f"\n1. {args.turns}-turn openai-agents run ({calls} journaled calls), median of {args.repeats}")
        print(f"{'variant':<24} {'ms/run':>8} {'+ms/call vs plain':>18} {'+ms/call vs embedded':>21}")
        per_call: dict[str, float] = {}
        for name, values in times.items():
            m = statistics.median(values)
            per_call[name] = (m - plain) / calls * 1e3
            print(f"{name:<24} {m * 1e3:>8.1f} {per_call[name]:>18.3f} {(m - embedded) / calls * 1e3:>21.3f}")

        print(f"\n2. throughput: {args.clients} client processes x {args.steps} steps each")
        rates: dict[str, tuple[float, float, float]] = {}
        for name, server in servers.items():
            rates[name] = throughput(server.url, args.clients, args.steps)
            rate, p50, p99 = rates[name]
            print(f"{name:<24} {rate:>8.0f} steps/s   p50 {p50:.2f} ms   p99 {p99:.2f} ms")

        print(f"\n3. {args.waiting} runs waiting for approval, server idle")
        idle: dict[str, float] = {}
        for name, server in servers.items():
            park_waiting_runs(server.url, args.waiting)
            assert server.proc is not None
            before = process_cpu_seconds(server.proc.pid)
            time.sleep(5.0)
            idle[name] = process_cpu_seconds(server.proc.pid) - before
            print(f"{name:<24} server CPU over 5 s idle: {idle[name] * 1e3:.0f} ms")

        rows = [(f"Added per journaled call, {name}", f"{per_call[name]:.2f} ms", f"≤ {TARGET_MS_PER_CALL} ms",
                 ok(per_call[name], TARGET_MS_PER_CALL)) for name in servers]
        for name, (rate, p50, p99) in rates.items():
            target = TARGET_STEPS_PG if "PostgreSQL" in name else TARGET_STEPS_SQLITE
            rows.append((f"Throughput, {name}, {args.clients} clients",
                         f"{rate:.0f} steps/s (p50 {p50:.2f} ms, p99 {p99:.2f} ms)", f"≥ {target}",
                         ok(rate, target, at_least=True)))
        for name, cpu in idle.items():
            rows.append((f"Server CPU, {args.waiting} waiting runs, 5 s idle, {name}", f"{cpu * 1e3:.0f} ms", "~0",
                         "✅" if cpu < 0.05 else "❌"))
        print()
        print_markdown_table(rows)
    finally:
        agentspan.config.reset()
        for server in servers.values():
            server.stop()
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
