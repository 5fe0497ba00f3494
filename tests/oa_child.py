"""Child process for crash tests: ``python oa_child.py start|resume|serve RUN_ID [approval]``."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import agentspan

import oa_support

if __name__ == "__main__":
    mode, run_id = sys.argv[1], sys.argv[2]
    approval = len(sys.argv) > 3 and sys.argv[3] == "approval"
    agent = oa_support.support_agent(approval=approval)
    hooks = {"hooks": oa_support.CrashHooks()}
    barrier = os.environ.get("BARRIER")
    if barrier:  # line up with a racing process: announce readiness, wait for the go
        Path(f"{barrier}.{os.getpid()}").touch()
        while not Path(barrier).exists():
            time.sleep(0.001)
    if mode == "start":
        result = agentspan.run(agent, oa_support.PROMPT, run_id=run_id, **hooks)
    elif mode == "resume":
        result = agentspan.resume(run_id, agent, **hooks).result(timeout=60)
    elif mode == "serve":
        agentspan.serve(agent, max_runs=1)
        result = agentspan.get(run_id).result(timeout=60)
    print("FINAL:", result.final_output if hasattr(result, "final_output") else result, flush=True)
