"""Testing kit: run real agents against a scripted model, offline, and check what they did.

```python
from agentspan.testing import approve, call, expect, mock_run, reply

result = mock_run(agent, "Refund order 42",
                  script=[call("lookup_order", order_id="42"), call("refund", order_id="42"), approve(),
                          reply("Refunded.")],
                  tools={"refund": lambda **args: "ok"})
expect(result).completed().tool_order(["lookup_order", "refund"]).output_contains("Refunded")
```

The pytest plugin (`agentspan.testing.pytest_plugin`, loaded automatically) adds the
``agentspan_store`` and ``mock_model`` fixtures, blocks real model requests in tests, and replays
recorded HTTP cassettes (`cassette`, ``@pytest.mark.agentspan_cassette``, ``--agentspan-record``).
``agentspan.testing.conformance`` is the store conformance suite (needs pytest). Importing this
package needs no framework; the framework's adapter is used when a run starts.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentspan.errors import CassetteError, CassetteMismatch, ReplayDivergenceError, ScriptError
    from agentspan.testing.cassettes import Cassette, cassette
    from agentspan.testing.expectations import Expectation, expect
    from agentspan.testing.mock import mock_run
    from agentspan.testing.replay import replay
    from agentspan.testing.result import MockResult, ToolCallRecord
    from agentspan.testing.script import Call, Decision, Reply, Turn, approve, call, reject, reply
    from agentspan.testing.stand_ins import MockSetup, StandIns, context_scope

_LAZY = {
    "mock_run": "agentspan.testing.mock", "expect": "agentspan.testing.expectations",
    "Expectation": "agentspan.testing.expectations", "MockResult": "agentspan.testing.result",
    "ToolCallRecord": "agentspan.testing.result", "reply": "agentspan.testing.script",
    "call": "agentspan.testing.script", "approve": "agentspan.testing.script", "reject": "agentspan.testing.script",
    "Reply": "agentspan.testing.script", "Call": "agentspan.testing.script", "Decision": "agentspan.testing.script",
    "Turn": "agentspan.testing.script", "MockSetup": "agentspan.testing.stand_ins",
    "StandIns": "agentspan.testing.stand_ins", "context_scope": "agentspan.testing.stand_ins",
    "ScriptError": "agentspan.errors",
    "replay": "agentspan.testing.replay", "ReplayDivergenceError": "agentspan.errors",
    "cassette": "agentspan.testing.cassettes", "Cassette": "agentspan.testing.cassettes",
    "CassetteError": "agentspan.errors", "CassetteMismatch": "agentspan.errors",
}

__all__ = [
    "Call", "Cassette", "CassetteError", "CassetteMismatch", "Decision", "Expectation", "MockResult", "MockSetup",
    "ReplayDivergenceError", "Reply", "ScriptError", "StandIns", "ToolCallRecord", "Turn", "approve", "call",
    "cassette", "context_scope", "expect", "mock_run", "reject", "replay", "reply",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'agentspan.testing' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
