"""The CLI needs no separately installed ``click``: typer 0.29+ vendors its own copy and no longer
installs click, and ``agentspan`` declares only typer (a fresh environment without another
package that pulls click in failed at ``import agentspan.cli``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

CODE = """
import sys
sys.modules["click"] = None  # as in an environment where click is not installed
from typer.testing import CliRunner
import agentspan.cli
runner = CliRunner()
for args in (["--help"], ["runs", "list", "--help"], ["demo", "--help"]):
    result = runner.invoke(agentspan.cli.app, args)
    assert result.exit_code == 0, (args, result.output, result.exception)
result = runner.invoke(agentspan.cli.app, ["runs", "list"])  # an error through the group's own invoke
assert result.exit_code == 1 and result.output.startswith("error: no Agentspan store"), result.output
print("ok")
"""


def test_the_cli_runs_where_click_is_not_installed(tmp_path: Path) -> None:
    env = {**os.environ, "AGENTSPAN_HOME": str(tmp_path)}
    env.pop("AGENTSPAN_SERVER_URL", None)
    done = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
