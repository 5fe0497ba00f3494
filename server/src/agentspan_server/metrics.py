"""Prometheus metrics of one server: journal traffic, HTTP requests, and store gauges.

Each app gets its own `CollectorRegistry`, so several apps (tests) never share counters.

- ``agentspan_steps_total{kind,status}``: journal writes (``started`` on `start_step`, the
  result's status on `finish_step` and `record_step`).
- ``agentspan_step_duration_seconds{kind}``: durations of finished and recorded steps.
- ``agentspan_tokens_total{direction}`` and ``agentspan_cost_usd_total``: model usage journaled.
- ``agentspan_http_requests_total{method,route,status}``: requests by route template.
- ``agentspan_runs{status}`` and ``agentspan_pending_approvals``: read from the store at scrape time.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentspan.approvals import effective_status
from agentspan.records import ApprovalStatus, RunStatus, Step, StepResult, now
from agentspan.stores.base import Store

GAUGE_CAP = 1000
"""Store gauges count at most this many runs per status (one bounded listing per status), and
at most this many pending approvals (`live_pending_approvals`).

Good enough for a dashboard of a small deployment; a store-side ``count`` operation would lift
the cap (the `Store` contract has none yet).
"""

_STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
_KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_STARTED_CAP = 10_000  # started steps remembered for the kind/latency of their finish


class _StoreGauges(Collector):
    """Computes the run and approval gauges from the store on each scrape."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> Iterable[Metric]:
        yield GaugeMetricFamily("agentspan_runs", "Runs by status", labels=["status"])
        yield GaugeMetricFamily("agentspan_pending_approvals", "Approvals waiting for a decision")

    def collect(self) -> Iterable[Metric]:
        runs = GaugeMetricFamily("agentspan_runs", f"Runs by status (counted up to {GAUGE_CAP})", labels=["status"])
        for status in RunStatus:
            runs.add_metric([status.value], len(self.store.list_runs(status=status, limit=GAUGE_CAP)))
        yield runs
        pending = live_pending_approvals(self.store, now(), GAUGE_CAP)
        yield GaugeMetricFamily(
            "agentspan_pending_approvals", f"Approvals waiting for a decision (counted up to {GAUGE_CAP})", pending
        )


def live_pending_approvals(store: Store, at: float, cap: int) -> int:
    """Counts the approvals pending at ``at``, up to ``cap``: one past its deadline counts as
    expired, as everywhere else (`agentspan.approvals.effective_status`).

    Expired approvals stay ``pending`` in the store, so the first ``cap`` pending rows may hold few
    live ones (was: those rows were taken, then the expired ones dropped: an under-count). A store
    with ``count_pending_approvals`` (SQLite, PostgreSQL) counts in one query that skips the expired
    ones; any other is listed in growing pages until ``cap`` live ones are seen or none are left.

    Args:
        store: The store.
        at: The time deadlines are compared with (epoch seconds).
        cap: The most to count.

    Returns:
        The number of live pending approvals, at most ``cap``.
    """
    count = getattr(store, "count_pending_approvals", None)
    if callable(count):
        return min(int(count(at=at, limit=cap)), cap)
    limit = cap
    while True:  # the contract's listing has no offset: each page is a longer listing
        listed = store.list_approvals(status="pending", limit=limit)
        live = sum(1 for approval in listed if effective_status(approval, at) is ApprovalStatus.PENDING)
        if live >= cap or len(listed) < limit:
            return min(live, cap)
        limit *= 4


class ServerMetrics:
    """The metrics of one app.

    Args:
        store: The store the scrape-time gauges are read from.
    """

    def __init__(self, store: Store) -> None:
        self.registry = CollectorRegistry()
        self.steps = Counter(
            "agentspan_steps", "Journal writes by step kind and status", ["kind", "status"], registry=self.registry
        )
        self.step_seconds = Histogram(
            "agentspan_step_duration_seconds",
            "Duration of finished and recorded steps",
            ["kind"],
            buckets=_STEP_BUCKETS,
            registry=self.registry,
        )
        self.tokens = Counter("agentspan_tokens", "Model tokens journaled", ["direction"], registry=self.registry)
        self.cost = Counter("agentspan_cost_usd", "Model cost journaled, in US dollars", registry=self.registry)
        self.requests = Counter(
            "agentspan_http_requests",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.registry.register(_StoreGauges(store))
        self._started: OrderedDict[tuple[str, str], tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, kept: `labels` validates and locks on every call (~2 us),
        and a request counts up to five. The label values are few (kinds, statuses, routes)."""
        key = (metric, *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    # ---- journal ------------------------------------------------------------------------------
    def step_started(self, step: Step) -> None:
        """Counts a `start_step` and remembers the step's kind and start for its finish."""
        kind = str(step.kind)
        self._child(self.steps, kind, "started").inc()
        with self._lock:
            self._started[(step.run_id, step.key)] = (kind, step.started_at)
            self._started.move_to_end((step.run_id, step.key))
            while len(self._started) > _STARTED_CAP:
                self._started.popitem(last=False)

    def step_finished(self, run_id: str, key: str, result: StepResult) -> None:
        """Counts a `finish_step` (kind ``unknown`` when its start went through another server)."""
        with self._lock:
            kind, started_at = self._started.pop((run_id, key), ("unknown", None))
        self._ended(kind, started_at, result)

    def step_recorded(self, step: Step, result: StepResult) -> None:
        """Counts a `record_step`."""
        self._ended(str(step.kind), step.started_at, result)

    def _ended(self, kind: str, started_at: float | None, result: StepResult) -> None:
        self._child(self.steps, kind, str(result.status)).inc()
        if result.duration_ms is not None:
            seconds: float | None = result.duration_ms / 1000.0
        elif started_at is not None:
            seconds = result.ended_at - started_at
        else:
            seconds = None
        if seconds is not None and math.isfinite(seconds) and seconds >= 0:
            self._child(self.step_seconds, kind).observe(seconds)
        # Counters only go up: a (nonsensical) negative amount is not counted.
        if result.input_tokens is not None and result.input_tokens > 0:
            self._child(self.tokens, "input").inc(result.input_tokens)
        if result.output_tokens is not None and result.output_tokens > 0:
            self._child(self.tokens, "output").inc(result.output_tokens)
        if result.cost_usd is not None and math.isfinite(result.cost_usd) and result.cost_usd > 0:
            self.cost.inc(result.cost_usd)

    # ---- HTTP ---------------------------------------------------------------------------------
    def request(self, method: str, route: str, status: int) -> None:
        """Counts an answered HTTP request."""
        self._child(self.requests, method if method in _KNOWN_METHODS else "OTHER", route, str(status)).inc()

    def render(self) -> tuple[bytes, str]:
        """Returns the Prometheus text exposition and its content type.

        Raises:
            StoreError: The store failed while computing the gauges.
        """
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_template(scope: Scope, routes: Sequence[BaseRoute]) -> str:
    """The template of the route a request matched (``unmatched`` when none)."""
    route = scope.get("route")
    if route is None:  # answered before routing (401, 413): find the route it was meant for
        for candidate in routes:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                route = candidate
                break
    return getattr(route, "path", None) or "unmatched"


class HttpMetricsMiddleware:
    """ASGI middleware counting every HTTP request by method, route template and status.

    Args:
        app: The wrapped application.
        metrics: Where to count.
        routes: The app's routes (to name requests answered before routing).
    """

    def __init__(self, app: ASGIApp, *, metrics: ServerMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counting_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        finally:
            self.metrics.request(scope["method"], route_template(scope, self.routes), status)
