"""The client side of `bench_server`'s throughput test: one process journaling one run.

Kept apart from `bench_server` so the spawned client processes import only the SDK's store client.
"""

from __future__ import annotations

import os
import time

from agentspan.records import Run, Step, StepKind, StepResult, StepStatus
from agentspan.stores.remote import RemoteStore


def journal_one_run(args: tuple[str, int, float]) -> tuple[float, float, list[float]]:
    """Journals one run of ``steps`` steps through a server.

    Returns:
        (wall time of the first step's start, of the last step's end, per-step latencies in s).
    """
    url, steps, start_at = args
    store = RemoteStore(url)
    run, _ = store.create_run(Run(framework="bench", agent="bench", input={"q": "x"}))
    run = store.claim_run(run.id, owner=f"bench:{os.getpid()}", expected_epoch=0, lease_expires_at=time.time() + 600)
    output = {"output": [{"type": "message", "content": [{"type": "output_text", "text": "ok " * 20}]}]}
    while time.time() < start_at:
        time.sleep(0.001)
    latencies = []
    first = time.time()
    for i in range(steps):
        began = time.perf_counter()
        if i % 2 == 0:  # a model call: journaled once, when it ends
            step = Step(run_id=run.id, key=f"llm:{i}", seq=i, kind=StepKind.LLM, name="m", input={"n": i})
            store.record_step(step, StepResult(status=StepStatus.COMPLETED, output=output, input_tokens=100,
                                               output_tokens=20), epoch=run.lease_epoch)
        else:  # a tool call (in-doubt policy "retry", the default): started, then completed
            key = f"llm:{i - 1}/call:c{i}"
            store.start_step(Step(run_id=run.id, key=key, seq=i, kind=StepKind.TOOL, name="add", input={"a": i}),
                             epoch=run.lease_epoch, durable=False)
            store.finish_step(run.id, key, StepResult(status=StepStatus.COMPLETED, output=i), epoch=run.lease_epoch)
        latencies.append(time.perf_counter() - began)
    last = time.time()
    store.close()
    return first, last, latencies
