"""The step writes of `RemoteStore` for async code (a mixin): an httpx ``AsyncClient`` per event loop.

A run started with ``await agentspan.run_async(...)`` executes in the caller's event loop; its
journal writes (a step's start, end, or both at once) are awaited on an ``httpx.AsyncClient`` of
that loop, so the loop serves other tasks while a write is on the wire and no worker thread is
involved. Retries, backoff, moving on to the next server URL and the "already done" checks of a
retried write are the synchronous calls' (`remote.Backoff`); only the rare check of a refused
retry reads the run's steps on a worker thread.

``agentspan.run`` (synchronous) executes on an event loop of its own making, which nothing else
uses: its writes keep the synchronous client (`plain_http` on ``http://``, a third of httpx's CPU
per request) on a worker thread, which is faster there.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel

from agentspan import wire
from agentspan.records import Step, StepResult, StepStatus
from agentspan.stores.plain_http import Answer
from agentspan.stores.remote_answers import Backoff, Retryable, checked, error_from, failed_attempt, seg
from agentspan.stores.remote_texts import request_json

if TYPE_CHECKING:
    from agentspan.stores.deferred import DeferredStarts

__all__ = ["RemoteAsyncSteps"]


class RemoteAsyncSteps:
    """``astart_step``, ``afinish_step`` and ``arecord_step`` of `RemoteStore`."""

    async_steps = True
    """The store offers awaitable step writes (`agentspan.runtime` uses them in async code)."""

    if TYPE_CHECKING:
        urls: list[str]
        _shown: list[str]
        _current: int
        _deferred: DeferredStarts
        _async_options: dict[str, Any]
        _async_clients: dict[Any, httpx.AsyncClient]

        def _step_done(self, run_id: str, key: str, status: StepStatus) -> Callable[[BaseException], bool]: ...

    # ---- the writes ---------------------------------------------------------------------------
    async def astart_step(self, step: Step, *, epoch: int, durable: bool = True) -> None:
        """`Store.start_step`, awaited (a held-back start costs no request, as in `start_step`)."""
        if durable or not self._deferred.hold(step, epoch):
            await self._acall(f"/runs/{seg(step.run_id)}/steps/start",
                              wire.StartStep(step=step, epoch=epoch, durable=durable),
                              self._step_done(step.run_id, step.key, StepStatus.STARTED))

    async def afinish_step(self, run_id: str, key: str, result: StepResult, *, epoch: int) -> None:
        """`Store.finish_step`, awaited."""
        held = self._deferred.take(run_id, key)
        if held is not None:
            await self.arecord_step(held[0], result, epoch=epoch)
            return
        await self._acall(f"/runs/{seg(run_id)}/steps/finish", wire.FinishStep(key=key, result=result, epoch=epoch),
                          self._step_done(run_id, key, result.status))

    async def arecord_step(self, step: Step, result: StepResult, *, epoch: int) -> None:
        """`Store.record_step`, awaited."""
        await self._acall(f"/runs/{seg(step.run_id)}/steps/record",
                          wire.RecordStep(step=step, result=result, epoch=epoch),
                          self._step_done(step.run_id, step.key, result.status))

    # ---- plumbing -----------------------------------------------------------------------------
    def _async_client(self) -> httpx.AsyncClient:
        """The client of the running event loop (a client's connections belong to one loop)."""
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            for stale in [known for known in self._async_clients if known.is_closed()]:
                del self._async_clients[stale]  # its sockets went with the loop's transports
            client = self._async_clients[loop] = httpx.AsyncClient(**self._async_options)
        return client

    async def _aattempt(self, path: str, body: BaseModel) -> Answer:
        where = self._shown[self._current]
        try:
            response = await self._async_client().post(
                self.urls[self._current] + wire.API_PREFIX + path, content=request_json(body, where),
                headers={"Content-Type": "application/json"})
        except httpx.TransportError as exc:
            raise failed_attempt(where, exc) from exc
        return checked(Answer(response.status_code, response.content, where + wire.API_PREFIX + path), where)

    async def _acall(self, path: str, body: BaseModel, already_done: Callable[[BaseException], bool]) -> None:
        """POSTs ``body``, retrying as `RemoteStore._call` does."""
        backoff = Backoff(self)  # type: ignore[arg-type]
        while True:
            try:
                answer = await self._aattempt(path, body)
            except Retryable as exc:
                await asyncio.sleep(backoff.pause(exc))
                continue
            if answer.is_success:
                return
            error = error_from(answer)
            if backoff.maybe_applied and await asyncio.to_thread(already_done, error):
                return
            raise error

    def _close_async_clients(self) -> None:
        """Closes the clients whose loop can still run their close (others went with their loop)."""
        clients, self._async_clients = self._async_clients, {}
        for loop, client in clients.items():
            if not loop.is_closed() and not loop.is_running():
                with contextlib.suppress(Exception):
                    loop.run_until_complete(client.aclose())
