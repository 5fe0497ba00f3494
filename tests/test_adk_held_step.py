"""`agentspan_adk._held_step.HeldStep`: a coroutine run by hand as its task would run it."""

from __future__ import annotations

import asyncio
import contextvars

import pytest

from agentspan_adk._held_step import HeldStep

var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outer")


async def held(future: asyncio.Future[int], log: list[str], then_sleep: bool = False) -> int:
    token = var.set("inner")
    log.append("entered")
    try:
        value = await future
        log.append(f"got {value} in {var.get()}")
        if then_sleep:  # suspends again after the first wait: on a timer, then on a bare yield
            await asyncio.sleep(0.01)
            await asyncio.sleep(0)
            log.append("slept")
        return value * 2
    finally:
        var.reset(token)  # fails outside the context the coroutine started in
        log.append("finally")


def test_runs_to_first_suspension_at_once_then_finishes_in_its_own_context():
    async def main() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        log: list[str] = []
        step = HeldStep(held(future, log))
        assert log == ["entered"] and var.get() == "outer"
        future.set_result(21)
        assert await step.finish() == 42
        assert log == ["entered", "got 21 in inner", "finally"] and var.get() == "outer"

    asyncio.run(main())


def test_awaits_what_it_suspends_on_after_the_first_wait():
    async def main() -> None:
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        log: list[str] = []
        step = HeldStep(held(future, log, then_sleep=True))
        future.set_result(1)
        assert await step.finish() == 2
        assert log == ["entered", "got 1 in inner", "slept", "finally"]

    asyncio.run(main())


def test_errors_come_out_of_finish_and_cancel_runs_finally_blocks():
    async def main() -> None:
        loop = asyncio.get_running_loop()
        failing: asyncio.Future[int] = loop.create_future()
        step = HeldStep(held(failing, []))
        failing.set_exception(ValueError("model down"))
        with pytest.raises(ValueError, match="model down"):
            await step.finish()

        log: list[str] = []
        dropped = HeldStep(held(loop.create_future(), log))
        dropped.cancel()
        dropped.cancel()  # idempotent
        assert log == ["entered", "finally"] and var.get() == "outer"

    asyncio.run(main())


def test_a_coroutine_that_never_suspends_is_done_at_once():
    async def at_once() -> str:
        return "served"

    async def main() -> None:
        assert await HeldStep(at_once()).finish() == "served"

    asyncio.run(main())
