"""What every store's `Store.reopen_run` shares: its refusal and the run's retry history.

A retried run keeps the record of each failure it was retried from in its options, under
`RETRIES` (a core option: adapters never see it, `agentspan.divergence.without_core_options`):
the error, when the run failed, when it was retried, by which lease owner (None: left
``pending`` for a worker) and who asked for the retry (``by``: None when the caller named nobody,
and in entries written before it was recorded). The failed call's step is rewritten by the new attempt (its
``attempt`` goes up), so this history is where the earlier failure stays visible.
"""

from __future__ import annotations

from collections.abc import Mapping

from agentspan.errors import RunStateError
from agentspan.records import JSON

RETRIES = "agentspan.retries"
"""Key of ``Run.options``: the failures a run was retried from, oldest first."""


def reopen_refusal(run_id: str, status: str) -> RunStateError:
    """`Store.reopen_run`'s refusal of a run that is not ``failed`` (the same text from every store)."""
    return RunStateError(f"run {run_id!r} is {status}; only a failed run can be retried")


def reopened_options(stored: Mapping[str, JSON] | None, options: Mapping[str, JSON] | None, *, error: str | None,
                     failed_at: float, owner: str | None, now: float, by: str | None = None) -> dict[str, JSON]:
    """The options of a reopened run: ``options`` merged over the stored ones, and the failure
    it is retried from appended to `RETRIES` (a caller's own value of that key is ignored).

    Args:
        stored: The failed run's options.
        options: The options given to `Store.reopen_run`.
        error: The failed run's error.
        failed_at: When it failed (its ``updated_at``).
        owner: The lease owner taking it up (None: left for a worker).
        now: The time of the retry.
        by: Who asked for the retry (``cli:USER``, ``api:ROLE``, a web UI user), None: unknown.
    """
    stored = stored or {}
    history = stored.get(RETRIES)
    entries = list(history) if isinstance(history, list) else []
    entries.append({"error": error, "failed_at": failed_at, "retried_at": now, "owner": owner, "by": by})
    return {**stored, **(options or {}), RETRIES: entries}


def retries_of(options: Mapping[str, JSON]) -> list[dict[str, JSON]]:
    """The retry history in a run's options (`RETRIES`), oldest first; entries of another shape
    are left out. An entry written before ``by`` was recorded reads as ``by`` None."""
    history = options.get(RETRIES)
    return [{"by": None, **entry} for entry in history if isinstance(entry, dict)] if isinstance(history, list) else []
