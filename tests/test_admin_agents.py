"""`/admin/agents`: list, detail, versions, and hot reload during a live session."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx
import pytest

from tests.admin_world import AGENTS, admin_server, http_client, ids, settled
from tests.realtime_client import connect, text_of


async def _list_and_detail(http: httpx.AsyncClient) -> None:
        listed = (await http.get("/admin/agents")).json()["data"]
        assert [(a["name"], a["version"], a["model"]) for a in listed] == [
            ("billing", 1, "scripted"), ("desk", 1, "scripted")]
        assert sorted(listed[1]["tools"]) == ["echo", "fail", "get_current_time"]
        detail = (await http.get("/admin/agents/desk")).json()
        attachments = {a["mcp"]: a for a in detail["attachments"]}
        assert attachments["time"]["tools"] == ["get_current_time"]
        assert attachments["time"]["connected"] is True
        assert sorted(attachments["lab"]["tools"]) == ["echo", "fail"]
        assert attachments["lab"]["timeout_s"] == 5 and attachments["lab"]["missing"] == []
        assert detail["handoff_targets"] == [
            {"agent": "billing", "description": "Invoices and refunds.",
             "tool": "transfer_to_billing"}]
        assert detail["instructions"] == "You are the front desk."
        assert (await http.get("/admin/agents/nobody")).status_code == 404
        assert (await http.get("/admin/agents/nobody/versions")).status_code == 404


async def test_reload_during_a_live_session(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    agents = tmp_path / "agents"
    shutil.copytree(AGENTS, agents)
    desk = agents / "desk.yaml"
    async with admin_server(database_url, tmp_path, monkeypatch, agents_dir=agents) as server, \
            http_client(server) as http:
        await _list_and_detail(http)
        async with connect(server.realtime_url("desk"), server.token) as live:
            assert "Front desk here." in text_of(await live.turn("hello"))
            desk.write_text(desk.read_text().replace("Front desk here.", "Front desk, v2."))
            reloaded = (await http.post("/admin/agents/reload")).json()
            assert (reloaded["changed"], reloaded["problems"]) == (["desk"], [])
            # The live session keeps the version it started with ...
            assert "Front desk here." in text_of(await live.turn("hello again"))
            # ... while a new one gets the new version.
            async with connect(server.realtime_url("desk"), server.token) as fresh:
                assert "Front desk, v2." in text_of(await fresh.turn("hello"))
        await settled(server)
        versions = (await http.get("/admin/agents/desk/versions")).json()["data"]
        assert [(v["version"], v["current"]) for v in versions] == [(2, True), (1, False)]
        assert "Front desk, v2." in versions[0]["definition"]
        listing = (await http.get("/admin/conversations", params={"agent": "desk"})).json()
        assert [c["agent_version"] for c in listing["data"]] == [2, 1]
        assert len(ids(listing)) == 2

        # An invalid file is reported; the previous version stays active.
        desk.write_text("name: desk\nmodel: [not, a, string]\n")
        broken = (await http.post("/admin/agents/reload")).json()
        assert broken["changed"] == [] and broken["problems"]
        assert any("desk.yaml" in p for p in broken["problems"])
        detail = (await http.get("/admin/agents/desk")).json()
        assert detail["version"] == 2
        async with connect(server.realtime_url("desk"), server.token) as again:
            assert "Front desk, v2." in text_of(await again.turn("hello"))
