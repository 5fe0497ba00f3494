"""A few fixed seeds of the randomized SIGKILL crash fuzzer (`crash_fuzz`), as a regression test.

Each seed starts a run of the `fuzz_agent` team in a child process, SIGKILLs it and the children
that take the run up (``agentspan.resume`` or ``agentspan.serve(max_runs=1)``) at points the seed
chooses, and checks the durability invariants listed in `crash_fuzz` once a child finished the run.
For more seeds: ``uv run python tests/crash_fuzz.py --seeds 1-200``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from crash_fuzz import SeedResult, fuzz_seed, reference
from fuzz_checks import Reference, check_executions, check_journal, check_summary
from fuzz_runner import Children, fuzz_environment

pytestmark = pytest.mark.crash

SEEDS = {
    2: "helper on; kills the runner, then a resume; a worker finishes the run",
    6: "helper off; kills the runner, then a worker that decided the approval; a resume finishes",
    21: "helper on; kills the runner, then a resume just as it starts (3-kill budget)",
    5: "helper off; up to 3 kills, the first often before the run exists; resumes finish it",
    35: "helper off; kills the runner by time after its approval; a worker finishes the run",
    40: "helper on; kills the runner, then a worker; another worker finishes the run",
}
"""The seeds and what they cover (kill points are timed, so the labels are what they usually do)."""


@pytest.fixture(scope="module")
def fuzz_setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Reference, Children, Path]:
    """The uncrashed reference runs, the child launcher and the module's working folder."""
    workdir = tmp_path_factory.mktemp("crash-fuzz")
    children = Children()
    return reference(workdir, children), children, workdir


def test_fixed_seeds_keep_every_durability_invariant(fuzz_setup: tuple[Reference, Children, Path]) -> None:
    ref, children, workdir = fuzz_setup
    results: list[SeedResult] = [fuzz_seed(seed, ref, workdir, children) for seed in SEEDS]
    report = "\n".join(r.line() for r in results)
    assert not [r for r in results if r.violations], report
    processes = [p for r in results for p in r.processes]
    killed_modes = {p.mode for p in processes if p.killed}
    finishing_modes = {r.processes[-1].mode for r in results}
    # what the seeds are there for: kills in the runner and in the processes that took the run up,
    # takeovers through resume and through a worker, the step-writer helper on and off
    assert "start" in killed_modes and killed_modes & {"resume", "serve"}, report
    assert {p.mode for p in processes} >= {"start", "resume", "serve"}, report
    assert finishing_modes & {"resume", "serve"}, report
    assert {r.helper for r in results} == {"on", "off"}, report
    assert sum(r.kills for r in results) >= len(SEEDS), report
    # the run waited for its approval in every seed, and the fuzzer (the only approver) decided it
    assert all(any(p.approved for p in r.processes) for r in results), report


def test_checks_catch_a_broken_run(fuzz_setup: tuple[Reference, Children, Path]) -> None:
    """The checks themselves: the uncrashed reference run passes them, and each of a wrong output,
    a duplicated side effect and a caller's wrong result is reported."""
    ref, _, _ = fuzz_setup
    home = ref.home
    with fuzz_environment(home):
        assert check_journal(ref.run_id, ref) == []
        assert check_executions(ref.run_id, home, [], ref) == ([], [])
        wrong = dataclasses.replace(ref, output="Case closed [000000000000]", step_count=ref.step_count + 1)
        assert len(check_journal(ref.run_id, wrong)) == 2
        with (home / "effects").open() as effects:
            first_effect = effects.readline()
        with (home / "effects").open("a") as effects:
            effects.write(first_effect)  # the same call's side effect, again, with no kill
        violations, _ = check_executions(ref.run_id, home, [], ref)
        assert len(violations) == 1 and "executed 2x" in violations[0]
    assert check_summary({**ref.plain, "mode": "resume", "usage": [0, 0, 0, 0]}, ref) != []
    assert check_summary({"final": ref.plain["final"], "usage": None, "mode": "serve"}, ref) == []
    assert check_summary(None, ref) != []
