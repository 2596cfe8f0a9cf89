"""Prometheus metrics (`GET /metrics`): live sessions, events relayed, tool calls by tool and
outcome, tool and first-output latency histograms, recorder queue depth.

Each app has its own `CollectorRegistry` (no import-time globals). The relay path pays one
counter increment per frame on a pre-resolved child, in an ASGI wrapper around the realtime
socket, so the relay code itself is untouched. Tool calls and first-output latencies are
observed as the session hands their records to the recorder (`MeteredRecorder`), once per call
or response, never per frame.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orchestrator.store.recorder import SqlRecorder
from orchestrator.store.records import Record, ResponseRecorded, ToolCallRecorded

REALTIME_PATH = "/v1/realtime"
_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    """The metrics of one app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.live_sessions = Gauge(
            "orchestrator_live_sessions", "Realtime sessions being served.",
            registry=self.registry)
        self.recorder_queue = Gauge(
            "orchestrator_recorder_queue_depth", "Records waiting to be written.",
            registry=self.registry)
        relayed = Counter(
            "orchestrator_events_relayed", "WebSocket frames on the realtime endpoint.",
            ["direction"], registry=self.registry)
        # Children resolved once: the relay path never looks labels up.
        self.from_client = relayed.labels("from_client")
        self.to_client = relayed.labels("to_client")
        self.tool_calls = Counter(
            "orchestrator_tool_calls", "Server-run tool calls (MCP tools and handoffs).",
            ["server", "tool", "outcome"], registry=self.registry)
        self.tool_seconds = Histogram(
            "orchestrator_tool_call_seconds", "Tool call duration.", ["server", "tool"],
            buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.first_output_seconds = Histogram(
            "orchestrator_first_output_seconds",
            "From the end of the user's turn to the response's first output.", ["agent"],
            buckets=_LATENCY_BUCKETS, registry=self.registry)

    def track(self, live_sessions: Callable[[], int], queue_depth: Callable[[], int]) -> None:
        """Read the gauges from the running services at scrape time."""
        self.live_sessions.set_function(lambda: float(live_sessions()))
        self.recorder_queue.set_function(lambda: float(queue_depth()))

    def observe(self, row: Record) -> None:
        """Count a tool call or a response's first-output latency from its record."""
        if isinstance(row, ToolCallRecorded):
            self.tool_calls.labels(row.server, row.tool, row.status).inc()
            self.tool_seconds.labels(row.server, row.tool).observe(row.duration_ms / 1000)
        elif isinstance(row, ResponseRecorded) and row.first_output_latency_ms is not None:
            self.first_output_seconds.labels(row.agent).observe(
                row.first_output_latency_ms / 1000)

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class MeteredRecorder(SqlRecorder):
    """The SQL recorder, observing tool calls and responses for the metrics as they pass."""

    def __init__(self, engine: AsyncEngine, *, metrics: Metrics, **options: Any) -> None:
        super().__init__(engine, **options)
        self._metrics = metrics

    def record(self, row: Record) -> None:
        """Observe, then enqueue as usual."""
        self._metrics.observe(row)
        super().record(row)


class RelayCounter:
    """ASGI middleware: counts frames in and out of realtime WebSockets."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Wrap `receive`/`send` of realtime sockets; pass everything else through."""
        if scope["type"] != "websocket" or scope["path"] != REALTIME_PATH:
            await self.app(scope, receive, send)
            return
        inbound, outbound = self.metrics.from_client.inc, self.metrics.to_client.inc

        async def counted_receive() -> Message:
            message = await receive()
            if message["type"] == "websocket.receive":
                inbound()
            return message

        async def counted_send(message: Message) -> None:
            if message["type"] == "websocket.send":
                outbound()
            await send(message)

        await self.app(scope, counted_receive, counted_send)


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format (no auth, like `/healthz`: put it behind your network policy)."""
    exposition: Metrics = request.app.state.metrics
    return Response(exposition.render(), media_type=CONTENT_TYPE_LATEST)
