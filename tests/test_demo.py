"""`agentspan demo`, the README's main command, run as a user would run it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import agentspan


def test_demo_crashes_resumes_and_approves(home: Path):
    home = home / "not" / "made" / "yet"  # as ~/.agentspan on a fresh machine (was: FileNotFoundError)
    agentspan.configure(home=home)
    env = {**os.environ, "AGENTSPAN_HOME": str(home), "COLUMNS": "200"}
    env.pop("OPENAI_API_KEY", None)
    agentspan_cli = Path(sys.executable).parent / "agentspan"
    out = subprocess.run([str(agentspan_cli), "demo"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert "killed pid" in text and "run is waiting" in text
    assert "model calls replayed from the journal 1, made live 2" in text
    assert "tool calls replayed 1, run live 1" in text
    assert "side effects (each exactly once): 2" in text
    run_id = re.search(r"runs show ([0-9a-f-]{36})", text).group(1)
    run = agentspan.get(run_id).run()
    assert run.status is agentspan.RunStatus.COMPLETED and run.steps == 5
    lookups = (home / "demo-side-effects.log").read_text().splitlines()
    assert [line.split()[0] for line in lookups] == ["lookup_order", "refund"]


def test_a_home_the_demo_cannot_use_is_a_one_line_error(home: Path):
    blocker = home / "a-file"
    blocker.write_text("")
    agentspan_cli = Path(sys.executable).parent / "agentspan"
    for bad in (blocker, blocker / "sub"):  # a file; a folder under a file
        env = {**os.environ, "AGENTSPAN_HOME": str(bad)}
        out = subprocess.run([str(agentspan_cli), "demo"], env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr  # was: FileExistsError, ...
        assert out.stderr.startswith("error: cannot use the Agentspan home") and str(bad) in out.stderr
