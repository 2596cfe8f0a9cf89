"""`GET /metrics`: Prometheus text with live sessions, relayed events, tool calls by tool and
outcome, tool and first-output latency histograms, recorder queue depth."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.admin_world import admin_server, converse, settled
from tests.conftest import sqlite_url
from tests.realtime_client import connect
from tests.server import RunningServer


async def _samples(server: RunningServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(base_url=server.http) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text) for s in family.samples
    }


async def test_metrics_count_what_happened(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Metrics do not touch the database: one backend is enough.
    async with admin_server(sqlite_url(tmp_path / "db.sqlite"), tmp_path, monkeypatch) as server:
        before = await _samples(server)
        assert before[("orchestrator_live_sessions", ())] == 0
        await converse(server, "desk", "What time is it in Tokyo?", "The printer is broken")
        await settled(server)
        after = await _samples(server)
        async with connect(server.realtime_url("desk"), server.token) as live:
            await live.turn("hello")
            during = await _samples(server)
    assert during[("orchestrator_live_sessions", ())] == 1
    assert after[("orchestrator_recorder_queue_depth", ())] == 0
    relayed_in = after[("orchestrator_events_relayed_total", (("direction", "from_client"),))]
    relayed_out = after[("orchestrator_events_relayed_total", (("direction", "to_client"),))]
    assert relayed_in >= 5 and relayed_out > relayed_in  # a reply streams many events
    time_ok = (("outcome", "completed"), ("server", "time"), ("tool", "get_current_time"))
    fail = (("outcome", "failed"), ("server", "lab"), ("tool", "fail"))
    assert after[("orchestrator_tool_calls_total", time_ok)] == 1
    assert after[("orchestrator_tool_calls_total", fail)] == 1
    assert after[("orchestrator_tool_call_seconds_count",
                  (("server", "time"), ("tool", "get_current_time")))] == 1
    first_output = after[("orchestrator_first_output_seconds_count", (("agent", "desk"),))]
    assert first_output >= 2
    assert during[("orchestrator_events_relayed_total", (("direction", "to_client"),))] \
        > relayed_out
