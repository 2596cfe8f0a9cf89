"""schemathesis against `/openapi.json` of the real server: no 5xx, and every documented
response matches its schema. Bounded: a few examples per operation (~20 s on this machine)."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.admin_world import AGENTS
from tests.conftest import sqlite_url
from tests.server import ADMIN_TOKEN, REPO, serve

MAX_EXAMPLES = 12


@pytest.fixture(scope="module")
def live_base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The real server (SQLite) in a thread of its own, since schemathesis calls it blocking."""
    tmp = tmp_path_factory.mktemp("schemathesis")
    ready, stop = threading.Event(), threading.Event()
    url: list[str] = []
    failure: list[BaseException] = []

    async def main() -> None:
        async with serve(sqlite_url(tmp / "db.sqlite"), tmp, agents_dir=AGENTS) as server:
            url.append(server.http)
            ready.set()
            await asyncio.to_thread(stop.wait)

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by the fixture
            failure.append(exc)
            ready.set()

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ORCH_TEST_REPO", str(REPO))
        thread = threading.Thread(target=run, name="schemathesis-server")
        thread.start()
        try:
            assert ready.wait(60), "the server did not start"
            if failure:
                raise failure[0]
            yield url[0]
        finally:
            stop.set()
            thread.join(60)


@pytest.fixture(scope="module")
def api_schema(live_base_url: str) -> schemathesis.BaseSchema:
    """The served OpenAPI document; attaching MCP servers is left out (it spawns processes)."""
    schema = schemathesis.openapi.from_url(f"{live_base_url}/openapi.json")
    return schema.exclude(method="POST", path="/admin/mcp-servers")


def test_api_conforms(api_schema: schemathesis.BaseSchema) -> None:
    # Hypothesis driven by hand: schemathesis' pytest plugin does not run on this pytest.
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 15
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=MAX_EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def conforms(case: schemathesis.Case) -> None:
            response = case.call_and_validate(
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                checks=[not_a_server_error, response_schema_conformance],
            )
            statuses[response.status_code] += 1

        conforms()
    # The admin token was accepted and most generated requests were served.
    assert statuses[401] == 0 and statuses[200] > len(operations), statuses


def test_openapi_lists_the_admin_api(live_base_url: str) -> None:
    import httpx

    paths = httpx.get(f"{live_base_url}/openapi.json").json()["paths"]
    for path in ("/admin/agents", "/admin/agents/{name}/versions", "/admin/mcp-servers",
                 "/admin/conversations/{conversation_id}/transcript", "/admin/tool-calls",
                 "/admin/stats/tools", "/admin/stats/agents", "/admin/api-keys",
                 "/v1/realtime/client_secrets"):
        assert path in paths, path
