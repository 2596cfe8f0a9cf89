"""The tool router: which tools an agent shows the model and what each name runs, against a
real pool (mcp-server-time and the toolbox over stdio); plus result conversion."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from mcp.types import (
    AudioContent,
    CallToolResult,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from orchestrator.agents.spec import AgentSpec, McpServerSpec
from orchestrator.tools.convert import error_result, to_tool_result
from orchestrator.tools.mcp_pool import McpPool
from orchestrator.tools.router import (
    HANDOFF_PARAMETERS,
    HandoffBinding,
    McpBinding,
    build_toolset,
    run_tool,
)

REPO = Path(__file__).resolve().parent.parent
in_module_loop = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def pool() -> AsyncIterator[McpPool]:
    """mcp-server-time and the toolbox, started once for the module."""
    servers = {
        "time": McpServerSpec(
            command=["python", "-m", "mcp_server_time", "--local-timezone", "UTC"]),
        "box": McpServerSpec(command=["python", "-m", "tests.mcp_servers.toolbox"], cwd=str(REPO)),
    }
    started = McpPool(servers)
    await started.start()
    assert all(s.connected for s in started.status())
    yield started
    await started.aclose()


def agent(**fields: Any) -> AgentSpec:
    """A scripted agent with the given tools and handoffs."""
    return AgentSpec.model_validate({"name": "concierge", "model": "scripted", **fields})


@in_module_loop
async def test_allowlist_keeps_only_the_allowed_tools(pool: McpPool) -> None:
    toolset = build_toolset(agent(tools=[{"mcp": "box", "allow": ["echo", "add"]}]), pool)
    assert list(toolset.bindings) == ["echo", "add"]
    assert toolset.bindings["add"] == McpBinding(server="box", tool="add", timeout_s=10.0)
    assert toolset.owns("echo") and not toolset.owns("slow") and not toolset.owns("crash")


@in_module_loop
async def test_without_allowlist_every_tool_is_shown(pool: McpPool) -> None:
    toolset = build_toolset(agent(tools=[{"mcp": "time"}]), pool)
    assert set(toolset.bindings) == {"get_current_time", "convert_time"}


@in_module_loop
async def test_prefix_renames_and_definitions_are_ga_function_tools(pool: McpPool) -> None:
    spec = agent(tools=[{"mcp": "time", "prefix": "clock_", "timeout_s": 3}])
    toolset = build_toolset(spec, pool)
    assert toolset.bindings["clock_get_current_time"] == McpBinding("time", "get_current_time", 3)
    [definition] = [d for d in toolset.definitions if d["name"] == "clock_get_current_time"]
    assert set(definition) == {"type", "name", "description", "parameters"}
    assert definition["type"] == "function" and definition["description"]
    assert definition["parameters"]["type"] == "object"
    assert "timezone" in definition["parameters"]["properties"]
    assert [d["name"] for d in toolset.definitions] == list(toolset.bindings)


@in_module_loop
async def test_handoffs_become_transfer_functions(pool: McpPool) -> None:
    spec = agent(handoffs=[{"agent": "billing-desk", "description": "Invoices and refunds."},
                           {"agent": "sales"}])
    toolset = build_toolset(spec, pool)
    assert toolset.bindings == {"transfer_to_billing_desk": HandoffBinding("billing-desk"),
                                "transfer_to_sales": HandoffBinding("sales")}
    assert toolset.definitions == [
        {"type": "function", "name": "transfer_to_billing_desk",
         "description": "Invoices and refunds.", "parameters": HANDOFF_PARAMETERS},
        {"type": "function", "name": "transfer_to_sales",
         "description": "Transfer the conversation to the sales agent.",
         "parameters": HANDOFF_PARAMETERS},
    ]
    assert HANDOFF_PARAMETERS["additionalProperties"] is False


@in_module_loop
async def test_the_first_of_two_equal_names_wins(pool: McpPool) -> None:
    spec = agent(tools=[{"mcp": "box", "allow": ["echo"], "timeout_s": 1},
                        {"mcp": "box", "allow": ["echo", "pid"], "timeout_s": 2}])
    toolset = build_toolset(spec, pool)
    assert toolset.bindings == {"echo": McpBinding("box", "echo", 1),
                                "pid": McpBinding("box", "pid", 2)}
    assert [d["name"] for d in toolset.definitions] == ["echo", "pid"]


@in_module_loop
async def test_an_unknown_server_contributes_nothing(pool: McpPool) -> None:
    toolset = build_toolset(agent(tools=[{"mcp": "ghost"}]), pool)
    assert toolset.bindings == {} and toolset.definitions == []


@in_module_loop
async def test_bad_arguments_are_never_executed(pool: McpPool) -> None:
    tally = McpBinding("box", "tally", 5.0)
    for bad in ("{not json", "[1, 2]", '"text"', "42"):
        result = await run_tool(pool, tally, bad)
        assert result.is_error and result.error_kind == "invalid", bad
        assert json.loads(result.output)["error"]
    # The first real call is the tool's first run: none of the bad ones reached it.
    assert (await run_tool(pool, tally, "{}")).output == "1"


@in_module_loop
async def test_arguments_are_checked_against_the_input_schema(pool: McpPool) -> None:
    add = McpBinding("box", "add", 5.0)
    wrong = await run_tool(pool, add, '{"a": "two", "b": 3}')
    assert wrong.is_error and wrong.error_kind == "invalid"
    assert "a:" in (wrong.error or "")
    missing = await run_tool(pool, add, '{"a": 2}')
    assert missing.error_kind == "invalid" and "'b' is a required property" in (missing.error or "")
    assert (await run_tool(pool, add, '{"a": 2, "b": 3}')).output == "5"
    assert not (await run_tool(pool, McpBinding("box", "pid", 5.0), "")).is_error


@in_module_loop
async def test_run_tool_uses_the_binding_timeout(pool: McpPool) -> None:
    started = time.perf_counter()
    result = await run_tool(pool, McpBinding("box", "slow", 0.3), '{"seconds": 20}')
    assert result.error_kind == "timeout" and time.perf_counter() - started < 1.5


@in_module_loop
async def test_run_tool_reaches_mcp_server_time(pool: McpPool) -> None:
    binding = McpBinding("time", "get_current_time", 5.0)
    result = await run_tool(pool, binding, '{"timezone": "Asia/Tokyo"}')
    assert json.loads(result.output)["timezone"] == "Asia/Tokyo"


# -- conversion ------------------------------------------------------------------------------
def test_text_blocks_are_joined_and_other_blocks_become_placeholders() -> None:
    result = CallToolResult(content=[
        TextContent(type="text", text="one"),
        ImageContent(type="image", data="AAAA", mime_type="image/png"),
        AudioContent(type="audio", data="AAAAAA==", mime_type="audio/wav"),
        ResourceLink(type="resource_link", uri="file:///a.txt", name="a"),
        EmbeddedResource(type="resource", resource=TextResourceContents(
            uri="file:///b.txt", text="embedded")),
        TextContent(type="text", text="two"),
    ])
    converted = to_tool_result(result)
    assert not converted.is_error
    assert converted.output.split("\n") == [
        "one", "[image: image/png, 3 bytes]", "[audio: audio/wav, 4 bytes]",
        "[resource: file:///a.txt]", "embedded", "two",
    ]


def test_structured_content_stands_in_for_missing_text() -> None:
    result = CallToolResult(content=[], structured_content={"a": [1, 2]})
    assert json.loads(to_tool_result(result).output) == {"a": [1, 2]}
    assert to_tool_result(CallToolResult(content=[])).output == ""


def test_error_results_are_marked_for_the_model() -> None:
    failed = to_tool_result(CallToolResult(
        content=[TextContent(type="text", text="bad input")], is_error=True))
    assert failed.is_error and failed.error_kind == "tool" and failed.error == "bad input"
    assert json.loads(failed.output) == {"error": "bad input"}
    assert json.loads(error_result("down", "unavailable").output) == {"error": "down"}
