"""Test helper: fabricate the journal a crashed process would have left behind."""

from __future__ import annotations

import agentspan
from agentspan.records import StepResult, StepStatus


def crashed_copy(run_id: str, keep: int | None, keys: set[str] | None = None) -> str:
    """Creates a new run holding the first ``keep`` completed steps of ``run_id``'s journal (or,
    with ``keys``, the steps of those keys).

    That is exactly the state a process killed right after its ``keep``-th step leaves behind;
    resuming it must replay those steps and run the rest live.
    """
    store = agentspan.get_store()
    run = store.get_run(run_id)
    copy = agentspan.Run(framework=run.framework, agent=run.agent, input=run.input,
                         options=run.options, status=agentspan.RunStatus.RUNNING)
    store.create_run(copy)
    steps = store.list_steps(run_id)
    for step in steps[:keep] if keys is None else [s for s in steps if s.key in keys]:
        store.start_step(step.model_copy(update={"run_id": copy.id, "status": StepStatus.STARTED}), epoch=0)
        store.finish_step(copy.id, step.key, StepResult(status=step.status, output=step.output, error=step.error,
                                                        input_tokens=step.input_tokens,
                                                        output_tokens=step.output_tokens), epoch=0)
    return copy.id
