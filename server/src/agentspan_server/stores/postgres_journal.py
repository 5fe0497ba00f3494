"""The PostgreSQL store's journal operations as plans: fenced step writes, lease renewal, run reads.

Each function here is one `Store` operation (same name, same arguments) written once as a `Plan`
(`postgres_pool`): `PostgresStore` runs it on a pooled connection and the server's asyncio path
(`postgres_async`) on an asyncio connection, so both send the same statements and raise the same
errors. The hot writes are one statement each (one round trip, see `postgres_schema`); a fenced
write that matches no row reads the run once to tell why (`refused`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any, NoReturn

from agentspan.errors import ConfigurationError, LeaseLostError, RunCancelledSignal, RunNotFound, StepNotFound
from agentspan.records import JSON, Run, RunStatus, Step, StepResult, StepStatus
from agentspan.stores.base import ENDED, check_deletion
from agentspan.stores.reopening import reopen_refusal, reopened_options
from agentspan_server.stores import postgres_schema as sql
from agentspan_server.stores.postgres_pool import InTransaction, Outcome, Plan, Statement
from agentspan_server.stores.postgres_schema import dump_json, load_json, run_from_row, step_from_row, step_values

__all__ = [
    "completed_error", "delete_runs", "finish_step", "get_run", "list_steps", "record_step", "refusal", "refused",
    "renew_lease", "reopen_run", "start_step", "start_tx", "supersede_steps",
]  # fmt: skip


# ---- refusals -------------------------------------------------------------------------------
def refusal(state: Any, run_id: str, epoch: int, *, cancelling: bool = False) -> BaseException:
    """Explains why a fenced write matched no row, from the run's `sql.RUN_STATE` row (None: no run)."""
    if state is None:
        return RunNotFound(run_id)
    if state[0] == "cancelled" and not cancelling:
        return RunCancelledSignal(run_id, state[2])
    return LeaseLostError(f"run {run_id!r} is held at lease epoch {state[1]}; the write carried epoch {epoch}")


def refused(run_id: str, epoch: int, *, cancelling: bool = False) -> Plan[NoReturn]:
    """Reads the run after a refused fenced write and raises the `refusal`."""
    state = yield Statement(sql.RUN_STATE, (run_id,))
    raise refusal(state.rows[0] if state.rows else None, run_id, epoch, cancelling=cancelling)


def completed_error(run_id: str, key: str) -> ConfigurationError:
    """The error for rewriting a completed step."""
    return ConfigurationError(
        f"step {key!r} of run {run_id!r} is already completed; a journal entry is never rewritten"
    )


def _check_result(result: StepResult) -> None:
    if result.status == StepStatus.STARTED:
        raise ConfigurationError("finish_step needs a 'completed' or 'failed' result")


def _result_params(result: StepResult) -> dict[str, Any]:
    """The parameters `FINISH_STEP_ONCE` and `RECORD_STEP` take from a step's result."""
    in_tok, out_tok, cost = result.input_tokens, result.output_tokens, result.cost_usd
    return {
        "status": str(result.status), "output": dump_json(result.output), "error": result.error,
        "ended_at": result.ended_at, "duration_ms": result.duration_ms, "provider": result.provider,
        "model": result.model, "input_tokens": in_tok, "output_tokens": out_tok, "cost_usd": cost,
        "add_input_tokens": in_tok or 0, "add_output_tokens": out_tok or 0, "add_cost_usd": float(cost or 0.0),
    }  # fmt: skip


def _journal(statement: str, params: dict[str, Any], run_id: str, epoch: int) -> Plan[bool]:
    """One of the single-statement step writes; returns whether it wrote.

    False means the fence held but the step write matched nothing (nothing was written; the
    caller tells why). A refused fence raises: only then is the run read, to tell why.
    """
    row = (yield Statement(statement, params)).rows[0]  # (fenced, written[, set_config's answer])
    if not row[0]:
        yield from refused(run_id, epoch)
    return bool(row[1])


# ---- runs -----------------------------------------------------------------------------------
def get_run(run_id: str) -> Plan[Run]:
    """`Store.get_run`."""
    rows = (yield Statement(sql.GET_RUN, (run_id,))).rows
    if not rows:
        raise RunNotFound(run_id)
    return run_from_row(rows[0])


def renew_lease(run_id: str, *, epoch: int, lease_expires_at: float) -> Plan[bool]:
    """`Store.renew_lease`: false for a stale epoch; `RunNotFound` for an unknown run."""
    if (yield Statement(sql.RENEW_LEASE, (lease_expires_at, run_id, epoch))).rowcount == 1:
        return True
    if not (yield Statement(sql.RUN_STATE, (run_id,))).rows:
        raise RunNotFound(run_id)
    return False


def delete_runs(*, ended_before: float, statuses: Sequence[RunStatus] = ENDED, limit: int = 1000) -> Plan[list[str]]:
    """`Store.delete_runs`: statements of one transaction (see `PostgresStore.delete_runs`).

    The arguments are checked here, when the plan is made, so bad ones raise before a connection
    is taken or a statement sent.

    Raises:
        ConfigurationError: As `check_deletion`.
    """
    wanted = check_deletion(statuses, limit)
    return _delete_runs(wanted, ended_before, min(limit, sql.BIGINT_MAX))


def _delete_runs(statuses: list[str], ended_before: float, limit: int) -> Plan[list[str]]:
    if not statuses or math.isnan(ended_before):  # no status, or no time before NaN: nothing to delete
        return []
    ids = [row[0] for row in (yield Statement(sql.ENDED_RUNS, (statuses, ended_before, limit))).rows]
    if ids:
        yield Statement(sql.DELETE_RUNS, {"ids": ids})
    return ids


def reopen_run(
    run_id: str, *, owner: str | None, lease_expires_at: float | None, options: Mapping[str, JSON] | None = None,
    by: str | None = None,
) -> Plan[Run]:
    """`Store.reopen_run`: statements of one transaction (see `PostgresStore.reopen_run`)."""
    rows = (yield Statement(sql.LOCK_FOR_REOPEN, (run_id,))).rows
    if not rows:
        raise RunNotFound(run_id)
    status, stored, error, failed_at = rows[0]
    if status != RunStatus.FAILED:
        raise reopen_refusal(run_id, status)
    now = time.time()
    merged = reopened_options(load_json(stored), options, error=error, failed_at=failed_at, owner=owner, now=now,
                              by=by)
    params = {
        "status": (RunStatus.PENDING if owner is None else RunStatus.RUNNING).value,
        "owner": owner,
        "expires": None if owner is None else lease_expires_at,
        "options": dump_json(merged),
        "now": now,
        "id": run_id,
    }
    return run_from_row((yield Statement(sql.REOPEN_RUN, params)).rows[0])


# ---- steps (the hot path) -------------------------------------------------------------------
def start_step(step: Step, *, epoch: int, durable: bool = True) -> Plan[None]:
    """`Store.start_step`: one statement (see `PostgresStore.start_step`)."""
    params = dict(zip(sql.STEP_FIELDS, step_values(step), strict=True))
    params["epoch"], params["now"] = epoch, time.time()
    statement = sql.START_STEP if durable else sql.START_STEP_NOT_DURABLE
    if not (yield from _journal(statement, params, step.run_id, epoch)):
        raise completed_error(step.run_id, step.key)
    return None


def finish_step(run_id: str, key: str, result: StepResult, *, epoch: int) -> Plan[None]:
    """`Store.finish_step`: one statement, or the transaction of several when no started step
    matched (see `PostgresStore.finish_step`)."""
    _check_result(result)
    params = _result_params(result)
    params["run_id"], params["key"], params["epoch"], params["now"] = run_id, key, epoch, time.time()
    if not (yield from _journal(sql.FINISH_STEP_ONCE, params, run_id, epoch)):
        return InTransaction(_finish_tx(run_id, key, result, epoch))
    return None


def record_step(step: Step, result: StepResult, *, epoch: int) -> Plan[None]:
    """`Store.record_step`: one statement, or a transaction of several for a step passed with a
    status other than ``started`` (see `PostgresStore.record_step`)."""
    values = step_values(step)
    _check_result(result)
    if step.status != StepStatus.STARTED:
        return InTransaction(_record_tx(step, result, epoch))
    params = dict(zip(sql.STEP_FIELDS, values, strict=True))
    merged = _result_params(result)
    for field in ("provider", "model", "input_tokens", "output_tokens", "cost_usd"):
        if merged[field] is None:
            merged[field] = params[field]
    params.update(merged)
    params["epoch"], params["now"] = epoch, time.time()
    if not (yield from _journal(sql.RECORD_STEP, params, step.run_id, epoch)):
        raise completed_error(step.run_id, step.key)
    return None


def _record_tx(step: Step, result: StepResult, epoch: int) -> Generator[Statement, Outcome, None]:
    yield from start_tx(step, epoch)
    yield from _finish_tx(step.run_id, step.key, result, epoch)


def start_tx(step: Step, epoch: int) -> Generator[Statement, Outcome, None]:
    """The start of a step as statements of a transaction (fence, insert or replace)."""
    values = step_values(step)
    run_id, key = values[0], values[1]
    fenced = (yield Statement(sql.FENCE_START, (*values, time.time(), run_id, epoch))).rows
    if not fenced:
        yield from refused(run_id, epoch)
    if not fenced[0][0] and (yield Statement(sql.REPLACE_STEP, (*values[3:], run_id, key))).rowcount == 0:
        raise completed_error(run_id, key)


def _finish_tx(run_id: str, key: str, result: StepResult, epoch: int) -> Generator[Statement, Outcome, None]:
    """The end of a step as statements of a transaction, whose later statements see steps
    committed while the first waited for the run's lock."""
    _check_result(result)
    ended_at = result.ended_at
    in_tok, out_tok, cost = result.input_tokens, result.output_tokens, result.cost_usd
    fence = (time.time(), in_tok or 0, out_tok or 0, float(cost or 0.0), run_id, epoch)
    step = (
        str(result.status), dump_json(result.output), result.error, ended_at, result.duration_ms, ended_at,
        result.provider, result.model, in_tok, out_tok, cost, run_id, key,
    )  # fmt: skip
    if (yield Statement(sql.FENCE_FINISH, fence)).rowcount == 0:
        yield from refused(run_id, epoch)
    if (yield Statement(sql.FINISH_STEP, step)).rowcount == 0:
        raise StepNotFound(run_id, key)


def supersede_steps(run_id: str, keys: Sequence[str], *, prefix: str, reason: str, epoch: int) -> Plan[None]:
    """`Store.supersede_steps`: statements of one transaction (see `PostgresStore.supersede_steps`)."""
    if not prefix:
        raise ConfigurationError("supersede_steps needs a non-empty prefix")
    wanted = list(dict.fromkeys(keys))
    if not (yield Statement(sql.LOCK_RUN, (run_id, epoch))).rows:
        yield from refused(run_id, epoch)
    names = [*wanted, *(prefix + key for key in wanted)]
    steps = {row[0] for row in (yield Statement(sql.STEP_KEYS, (run_id, names))).rows}
    for key in wanted:
        if key not in steps and prefix + key not in steps:
            raise StepNotFound(run_id, key)
    moving = [key for key in wanted if key in steps]  # the others moved already: skipped
    for key in moving:
        if prefix + key in steps:
            raise ConfigurationError(f"step {prefix + key!r} of run {run_id!r} exists already")
    if not moving:
        return None
    params = {"run_id": run_id, "keys": moving, "prefix": prefix, "reason": reason, "now": time.time()}
    clash = (yield Statement(sql.APPROVAL_CLASH, params)).rows
    if clash:
        raise ConfigurationError(f"an approval of step {prefix + clash[0][0]!r} of run {run_id!r} exists already")
    yield Statement(sql.SUPERSEDE, params)
    return None


def list_steps(run_id: str) -> Plan[list[Step]]:
    """`Store.list_steps`: one query, the run joined with its steps, in binary format."""
    rows = (yield Statement(sql.LIST_STEPS, (run_id,), binary=True)).rows
    if not rows:
        raise RunNotFound(run_id)
    if rows[0][1] is None:
        return []
    return [step_from_row(r[1:]) for r in rows]
