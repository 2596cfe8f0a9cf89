"""Prometheus metrics (`GET /metrics`): live sessions, events relayed, tool calls by tool and
outcome, tool and first-output latency histograms, recorder queue depth.

Each app has its own `CollectorRegistry` (no import-time globals). The relay path pays one
integer addition per frame (`FrameTally`, summed by the gateway's socket and read at scrape
time): no lock, no label lookup, no extra ASGI layer per frame. Tool calls and first-output
latencies are
observed as the session hands their records to the recorder (`MeteredRecorder`), once per call
or response, never per frame.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
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
from prometheus_client.core import CounterMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.ext.asyncio import AsyncEngine

from orchestrator.realtime.gateway import FrameTally
from orchestrator.store.recorder import SqlRecorder
from orchestrator.store.records import Record, ResponseRecorded, ToolCallRecorded

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class _FrameCollector(Collector):
    """`orchestrator_events_relayed_total`, read from the tally at scrape time."""

    def __init__(self, tally: FrameTally) -> None:
        self.tally = tally

    def collect(self) -> Iterator[CounterMetricFamily]:
        family = CounterMetricFamily(
            "orchestrator_events_relayed", "WebSocket frames on the realtime endpoint.",
            labels=["direction"])
        family.add_metric(["from_client"], self.tally.from_client)
        family.add_metric(["to_client"], self.tally.to_client)
        yield family


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
        self.frames = FrameTally()
        self.registry.register(_FrameCollector(self.frames))
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


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    """Prometheus text format (no auth, like `/healthz`: put it behind your network policy)."""
    exposition: Metrics = request.app.state.metrics
    return Response(exposition.render(), media_type=CONTENT_TYPE_LATEST)
