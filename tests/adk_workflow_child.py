"""Child process for the ADK workflow crash tests.

``python adk_workflow_child.py start|resume RUN_ID``: ``agentspan.run`` / ``agentspan.resume``
of `adk_workflow_support.refund_flow`. Prints ``FINAL: <finish node's output as JSON>``.
"""

from __future__ import annotations

import json
import sys

import adk_workflow_support as flows

import agentspan

if __name__ == "__main__":
    mode, run_id = sys.argv[1], sys.argv[2]
    if mode == "start":
        result = agentspan.run(flows.refund_flow(), flows.PROMPT, run_id=run_id)
    elif mode == "resume":
        result = agentspan.resume(run_id, flows.refund_flow()).result(timeout=60)
    else:
        raise SystemExit(f"unknown mode {mode!r}")
    print("FINAL:", json.dumps(flows.final_output(result.events, "finish"), sort_keys=True), flush=True)
