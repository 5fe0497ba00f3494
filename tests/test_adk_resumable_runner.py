"""A user-built Runner whose crashed turn is sent again (which claims the message's run and starts a
new ADK invocation), then goes on in that new invocation: by ADK's own resume of it on a resumable
App (``ResumabilityConfig(is_resumable=True)``, ``run_async(invocation_id=...)``) after a second
crash, or by the answer to a confirmation it asked for.

Was: both looked the run up by the first invocation's id, found none, and opened a second run
holding only the calls made after them; the message's run stayed ``running`` (or ``waiting``, its
approval open) for ever, and a later identical message was taken for a retry of it (answered with
the old turn).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

import agentspan
from agentspan.records import RunStatus

import adk_support
from crash_support import calls_of, final_line, run_child

pytestmark = pytest.mark.crash
child = partial(run_child, str(Path(__file__).parent / "adk_child.py"))


@pytest.fixture(autouse=True)
def _home(home):
    return home


def test_adks_own_resume_after_a_resent_message_goes_on_with_the_messages_run(child_env):
    session_id = "resumable-1"
    first = child(child_env, "runner-resumable", session_id, "support", crash_at="lookup:before")
    assert first.returncode == -9, first.stderr
    (adk_support.home() / "crashed").unlink()  # (a crash point fires once per store)
    resent = child(child_env, "runner-resumable", session_id, "support", crash_at="model:support:1")
    assert resent.returncode == -9, resent.stderr
    resumed = child(child_env, "runner-adk-resume", session_id, "support")
    assert resumed.returncode == 0, resumed.stderr
    assert final_line(resumed.stdout) == adk_support.FINAL

    runs = agentspan.get_store().list_runs()
    assert [(r.status, r.session_id) for r in runs] == [(RunStatus.COMPLETED, session_id)]  # one run, ended
    steps = {s.key: s for s in agentspan.get(runs[0].id).steps()}
    assert {"support/llm:0", "support/llm:0/call:0", "support/llm:1", "support/billing/llm:0",
            "support/billing/llm:1"} <= set(steps), sorted(steps)
    assert all(s.status is agentspan.StepStatus.COMPLETED for s in steps.values())
    # the completed model call is never made again; the one in flight at the second crash is
    assert calls_of("support") == [0, 1, 1] and calls_of("billing") == [0, 1]
    effects = adk_support.effects()
    assert effects.count("lookup 42") == 1 and effects.count("quote 42") == 1 and effects.count("notify 42") == 1


def test_an_answer_to_an_invocation_a_resent_message_started_goes_on_with_the_messages_run(child_env):
    session_id = "answered-1"
    crashed = child(child_env, "runner", session_id, "confirm", crash_at="model:orders:0")
    assert crashed.returncode == -9, crashed.stderr
    asked = child(child_env, "runner", session_id, "confirm")  # sent again: asks for the confirmation
    assert asked.returncode == 0, asked.stderr
    answered = child(child_env, "runner-confirm", session_id, "confirm")
    assert answered.returncode == 0, answered.stderr
    assert final_line(answered.stdout) == "Cancelled."
    runs = agentspan.get_store().list_runs()
    assert [r.status for r in runs] == [RunStatus.COMPLETED]  # one run, not a second for the answer
    assert adk_support.effects() == ["cancel 42"]
    assert agentspan.get(runs[0].id).pending_approvals() == []
