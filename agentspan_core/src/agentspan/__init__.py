"""Agentspan: durable runs, human approvals and an audit trail for existing AI agents.

Keep the agent; change one call::

    import agentspan
    result = agentspan.run(agent, "Refund order 42")   # was: Runner.run_sync(agent, ...)

``import agentspan`` is cheap: the runtime (and pydantic) load on first use of a name below.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from agentspan import errors
from agentspan.tools import StepInfo, ToolOptions, current_step, tool, tool_options

if TYPE_CHECKING:
    from agentspan.api import get, resume, resume_async, retry, run, run_async, start
    from agentspan.attempt import LlmMetrics
    from agentspan.clock import now, uuid4
    from agentspan.clock import random as random
    from agentspan.config import configure, get_store, settings
    from agentspan.handle import Handle
    from agentspan.instrumentation import instrument, uninstrument
    from agentspan.records import Approval, ApprovalStatus, Run, RunStatus, Step, StepKind, StepStatus
    from agentspan.runtime import ActiveRun, active_run, replaying
    from agentspan.streaming import StreamedRun, resume_streamed, run_streamed
    from agentspan.worker import serve

__version__ = "0.1.0"

_LAZY = {
    "Handle": "agentspan.handle", "get": "agentspan.api", "resume": "agentspan.api",
    "resume_async": "agentspan.api", "retry": "agentspan.api", "run": "agentspan.api",
    "run_async": "agentspan.api", "serve": "agentspan.worker", "start": "agentspan.api",
    "instrument": "agentspan.instrumentation", "uninstrument": "agentspan.instrumentation",
    "configure": "agentspan.config", "get_store": "agentspan.config", "settings": "agentspan.config",
    "Approval": "agentspan.records", "ApprovalStatus": "agentspan.records", "Run": "agentspan.records",
    "RunStatus": "agentspan.records", "Step": "agentspan.records", "StepKind": "agentspan.records",
    "StepStatus": "agentspan.records",
    "ActiveRun": "agentspan.runtime", "LlmMetrics": "agentspan.attempt", "active_run": "agentspan.runtime",
    "replaying": "agentspan.runtime", "now": "agentspan.clock", "random": "agentspan.clock",
    "uuid4": "agentspan.clock",
    "StreamedRun": "agentspan.streaming", "run_streamed": "agentspan.streaming",
    "resume_streamed": "agentspan.streaming",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentspan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "ActiveRun", "Approval", "ApprovalStatus", "Handle", "LlmMetrics", "Run", "RunStatus", "Step",
    "StepInfo", "StepKind", "StepStatus", "StreamedRun", "ToolOptions", "__version__", "active_run",
    "configure", "current_step", "errors", "get", "get_store", "instrument", "now", "replaying", "resume",
    "resume_async", "resume_streamed", "retry", "run", "run_async", "run_streamed", "serve", "settings", "start",
    "tool", "tool_options", "uninstrument", "uuid4",
    # not "random": `from agentspan import *` would hide the standard library's module
]
