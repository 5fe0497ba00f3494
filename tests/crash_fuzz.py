"""Randomized SIGKILL crash fuzzer for durable openai-agents runs.

For each seed, the fuzzer starts a run of the `fuzz_agent` team (parallel sync and async tools, an
agent run as a tool, a tool that needs an approval, a handoff: ~11 model and 12 tool calls) in a
child process (`fuzz_child`), SIGKILLs it at a random point, takes the run up again in a new child
(``agentspan.resume`` or a worker, ``agentspan.serve(max_runs=1)``, chosen at random), may kill
that one too, and so on, up to 2 or 3 kills, until a child finishes the run. The seed also chooses
whether the embedded store commits steps in its step-writer helper process (``on`` / ``off``),
and each kill comes either after a random number of further live calls (counted in the side-effect
logs) plus up to 30 ms, or at a random time. Whenever the run waits for its approval, the fuzzer
approves it (from the fuzzer's process, as another process would). Then it checks (`fuzz_checks`):

* **Result**: the run is ``completed``; its stored output equals an uncrashed durable run's; the
  final output the last child got equals the SDK's plain ``Runner.run_sync``'s, and for a child
  that ran ``agentspan.run`` / ``resume`` so do its ``new_items`` (type and agent), ``last_agent``,
  usage (requests and tokens) and number of raw responses (a worker has only the stored output).
* **Journal**: no duplicate step keys; every step ``completed`` (none dangling); the same set of
  step keys as the uncrashed run; the run's token totals equal the sums over its steps and the
  uncrashed run's; ``run.steps`` equals the uncrashed run's.
* **Executions** (from the ``effects`` and ``model-calls`` logs, one line per live call): each
  model call and tool side effect ran at most once plus once per kill of a process that had run it
  while its step was not yet ``completed`` (in flight at the kill), so exactly once when no kill
  caught it in flight; none ran in a process started after its step was ``completed``; every tool
  side effect of the uncrashed run happened.
* **Trail**: ``agentspan runs show RUN_ID --json`` prints JSON.

A tool that ran more often than its step's ``attempt`` says is a note, not a violation (a call
killed within ~0.2 s of its start has no ``started`` marker in the journal yet).

Children are forked from a fork server with openai-agents imported (`ForkServer`; a fresh
interpreter each with ``AGENTSPAN_TESTS_FORK=0``), each with its own home in a temporary folder,
``AGENTSPAN_LEASE_TTL=1.5`` and ``AGENTSPAN_POLL_INTERVAL=0.02``. The models are `ScriptedModel`s:
no network, no provider. Kill timing is real time, so a seed fixes the decisions (helper, modes,
kill kinds and targets) but not exactly where each kill lands.

Run it from the repository root::

    uv run python tests/crash_fuzz.py --seeds 1-200          # also --seeds 3,7,10-20
    uv run python tests/crash_fuzz.py --iterations 40 --first-seed 1000
    uv run python tests/crash_fuzz.py --seeds 7 --keep       # keep the homes (logs, journals)

It prints one line per seed (``OK`` or ``VIOLATION: ...``) and a summary, and exits 1 if any
invariant broke. `tests/test_crash_fuzz.py` runs a few fixed seeds under pytest.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_checks import ProcessRecord, Reference, check_run, live_executions
from fuzz_runner import Children, Plan, drive_run, fuzz_environment, run_reference_child

import agentspan
from agentspan.records import new_id

HELPER_CHOICES = ("on", "on", "off")
"""The step-writer helper settings a seed picks from (the helper is the riskier path)."""


@dataclass
class SeedResult:
    """What one seed did and found.

    Attributes:
        seed: The seed.
        run_id: Its run.
        helper: The step-writer helper setting of its children.
        processes: Its children, in order.
        violations: The invariants that broke (empty: it held up).
        notes: Observations that are not violations.
        seconds: Wall time of the seed.
    """

    seed: int
    run_id: str
    helper: str
    processes: list[ProcessRecord]
    violations: list[str]
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def kills(self) -> int:
        """How many of its children were SIGKILLed."""
        return sum(p.killed for p in self.processes)

    def line(self) -> str:
        """One line for the fuzzer's output."""
        verdict = "OK" if not self.violations else "VIOLATION: " + " | ".join(self.violations)
        notes = f" NOTE: {' | '.join(self.notes)}" if self.notes else ""
        processes = ",".join(p.label() for p in self.processes)
        return (f"seed={self.seed} run={self.run_id} helper={self.helper} kills={self.kills} "
                f"procs=[{processes}] {verdict}{notes} ({self.seconds:.1f}s)")


def reference(workdir: Path, children: Children) -> Reference:
    """Runs the agent uncrashed: once with the SDK's plain runner, once durably (helper off).

    Raises:
        AssertionError: A reference child failed, or the durable run's caller saw something else
            than the plain runner's caller (then no seed could pass).
    """
    plain_home, durable_home = workdir / "reference-plain", workdir / "reference-durable"
    with fuzz_environment(plain_home):
        plain = run_reference_child(children, "plain", new_id(), plain_home)
    with fuzz_environment(durable_home):
        started = time.monotonic()
        run_id = new_id()
        durable = run_reference_child(children, "start", run_id, durable_home)
        seconds = time.monotonic() - started
        handle = agentspan.get(run_id)
        run, steps = handle.run(), handle.steps()
        effect_keys = sorted({key for kind, key in live_executions(durable_home) if kind == "tool"})
    differences = {k: (durable[k], plain[k]) for k in plain if k != "mode" and durable[k] != plain[k]}
    assert not differences, f"an uncrashed durable run differs from the plain runner: {differences}"
    return Reference(plain=plain, output=run.output, step_keys=[s.key for s in steps],
                     totals=(run.input_tokens, run.output_tokens), step_count=run.steps,
                     effect_keys=effect_keys, seconds=seconds, run_id=run_id, home=durable_home)


def fuzz_seed(seed: int, ref: Reference, workdir: Path, children: Children) -> SeedResult:
    """Starts, kills and resumes one run as ``seed`` decides, then checks every invariant.

    Args:
        seed: The seed of the run's decisions.
        ref: The uncrashed runs' `Reference`.
        workdir: Folder for the seed's home (``s<seed>``, replaced if present).
        children: Where child processes come from.
    """
    rng = random.Random(seed)
    home = workdir / f"s{seed}"
    shutil.rmtree(home, ignore_errors=True)
    helper = rng.choice(HELPER_CHOICES)
    plan = Plan(rng, kill_budget=rng.choice([2, 3]), reference_seconds=ref.seconds)
    started = time.monotonic()
    run_id = new_id()
    with fuzz_environment(home):
        processes, summary, failure = drive_run(run_id, seed, home, helper, plan, children)
        if failure:
            violations, notes = [failure], []
        else:
            try:
                violations, notes = check_run(run_id, home, processes, summary, ref)
            except Exception as exc:  # a check that cannot even read the run is a finding too
                violations, notes = [f"checking raised {exc!r}"], []
    return SeedResult(seed, run_id, helper, processes, violations, notes, time.monotonic() - started)


def parse_seeds(text: str) -> list[int]:
    """``"1-5,9"`` -> ``[1, 2, 3, 4, 5, 9]`` (ranges include both ends)."""
    seeds: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        seeds.extend(range(int(first), int(last or first) + 1))
    return seeds


def main(argv: list[str] | None = None) -> int:
    """The command: fuzzes the seeds asked for, prints a line each and a summary.

    Returns:
        0 when every invariant held for every seed, 1 otherwise.
    """
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seeds", help="seeds and ranges, e.g. 1-200 or 3,7,10-20")
    which.add_argument("--iterations", type=int, default=20, help="how many seeds, from --first-seed (default 20)")
    parser.add_argument("--first-seed", type=int, default=1, help="the first seed of --iterations (default 1)")
    parser.add_argument("--workdir", type=Path, help="where the seeds' homes go (default: a temporary folder)")
    parser.add_argument("--keep", action="store_true", help="keep the homes (runs' stores and logs)")
    args = parser.parse_args(argv)
    seeds = parse_seeds(args.seeds) if args.seeds else list(range(args.first_seed, args.first_seed + args.iterations))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="agentspan-crash-fuzz-"))
    workdir.mkdir(parents=True, exist_ok=True)
    children = Children()
    try:
        ref = reference(workdir, children)
        print(f"reference: output={ref.output!r} steps={ref.step_count} tokens={ref.totals} "
              f"({ref.seconds:.1f}s)", flush=True)
        results = []
        for seed in seeds:
            results.append(fuzz_seed(seed, ref, workdir, children))
            print(results[-1].line(), flush=True)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    failed = [r.seed for r in results if r.violations]
    print(f"DONE seeds={len(results)} passed={len(results) - len(failed)} failed={len(failed)} "
          f"kills={sum(r.kills for r in results)} notes={sum(bool(r.notes) for r in results)}"
          f"{f' failed_seeds={failed}' if failed else ''}" + (f" homes={workdir}" if args.keep else ""), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
