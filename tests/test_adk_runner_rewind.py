"""A user-built ADK Runner's crashed turn sent again: the session is rewound to before the dead
attempt and the invocation replays from the journal. What the replay reads must be what the first
attempt read: the artifacts its replayed calls saved (was: the rewind saved an empty version over
them, so a later tool read ``None``), and no state key the first attempt had not set yet (was: ADK's
rewind leaves such keys ``None``, so a callback's ``state.get("visits", 0) + 1`` failed the run).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest

from crash_support import calls_of, lines, run_child

pytestmark = pytest.mark.crash
child = partial(run_child, str(Path(__file__).parent / "adk_rewind_child.py"))


@pytest.fixture(autouse=True)
def _home(home):
    return home


@pytest.mark.parametrize(("variant", "crash_at", "expected", "calls"), [
    # killed in the model call after the tool that saved the artifact (journaled)
    ("artifact", "model:writer:1", ["read hello", "end visits=None latest=hello"], {"writer": [0, 1, 1, 2]}),
    # killed in the sub-agent's model call: both agents' callbacks run again, live, on the resend
    ("state", "model:sub:0", ["read None", "end visits=2 latest=None"], {"root": [0, 1], "sub": [0, 0]}),
])
def test_a_resent_turn_reads_what_the_first_attempt_read(child_env, variant, crash_at, expected, calls):
    crashed = child(child_env, variant, crash_at=crash_at)
    assert crashed.returncode == -9, crashed.stderr
    resent = child(child_env, variant)
    assert resent.returncode == 0, resent.stderr
    assert lines("log")[-len(expected):] == expected  # as an uncrashed run ends
    # the completed model calls are not made again, only the one in flight at the kill
    assert {model: calls_of(model) for model in calls} == calls
