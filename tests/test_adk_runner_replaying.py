"""`agentspan.replaying()` in the callbacks of an agent run by a user-built ADK Runner with
``AgentspanPlugin``: True in an ``after_tool`` callback about a call served from the journal (ADK
runs those callbacks for a replayed call too: one with an outside effect skips it), False about
a live one and after the invocation (was: False in every callback)."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from crash_support import calls_of, lines, run_child

pytestmark = pytest.mark.crash
child = partial(run_child, str(Path(__file__).parent / "adk_replaying_child.py"))


@pytest.fixture(autouse=True)
def _home(home):
    return home


def test_replaying_tells_a_replayed_calls_callbacks_from_a_live_ones(child_env):
    crashed = child(child_env, crash_at="model:w:2")  # killed in the final model call, both tool turns journaled
    assert crashed.returncode == -9, crashed.stderr
    first = lines("log")
    assert first[:3] == ["after_model replaying=False", "after_tool one replaying=False", "after_model replaying=False"]
    assert sorted(first[3:]) == ["after_tool three replaying=False", "after_tool two replaying=False"]
    resent = child(child_env)
    assert resent.returncode == 0, resent.stderr
    again = lines("log")[len(first):]
    # the replayed model calls run no agent callback (ADK skips them after the plugin's answer)
    assert again[0] == "after_tool one replaying=True"
    assert sorted(again[1:3]) == ["after_tool three replaying=True", "after_tool two replaying=True"]
    assert again[3:] == ["after_model replaying=False", "after the invocation replaying=False"]
    assert calls_of("w") == [0, 1, 2, 2]  # only the call in flight at the kill is made again


def test_a_live_call_after_replayed_ones_reads_false(child_env):
    crashed = child(child_env, crash_at="tool:three")  # killed in a parallel tool call
    assert crashed.returncode == -9, crashed.stderr
    first = lines("log")
    resent = child(child_env)
    assert resent.returncode == 0, resent.stderr
    again = lines("log")[len(first):]
    assert again[0] == "after_tool one replaying=True"  # its model call was replayed too
    assert "after_tool three replaying=False" in again[1:3]  # made again: live, whatever came before it
    assert again[3:] == ["after_model replaying=False", "after the invocation replaying=False"]


def test_after_an_invocation_that_replayed_to_its_end_replaying_is_false(child_env):
    crashed = child(child_env, crash_at="final-event")
    assert crashed.returncode == -9, crashed.stderr
    first = lines("log")
    resent = child(child_env)
    assert resent.returncode == 0, resent.stderr
    again = lines("log")[len(first):]
    assert again[0] == "after_tool one replaying=True" and again[-1] == "after the invocation replaying=False"
    assert calls_of("w") == [0, 1, 2]  # every model call served from the journal
