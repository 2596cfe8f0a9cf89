"""MCP results → `function_call_output` text the model can read (design §2 step 3).

Text blocks are joined; structured content stands in when there is no text; other blocks
become short placeholders (the realtime model takes text only); a failure of any kind is an
`{"error": ...}` JSON object, so the model sees plainly that the call failed and can recover.
"""

from __future__ import annotations

import json
from typing import Literal

from mcp.types import (
    AudioContent,
    BlobResourceContents,
    CallToolResult,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from orchestrator.tools.types import ToolResult

ErrorKind = Literal["tool", "timeout", "unavailable", "protocol", "invalid"]


def error_result(message: str, kind: ErrorKind) -> ToolResult:
    """A failed call: the message for people, an `{"error": ...}` object for the model."""
    return ToolResult(
        output=json.dumps({"error": message}, ensure_ascii=False),
        is_error=True,
        error=message,
        error_kind=kind,
    )


def to_tool_result(result: CallToolResult) -> ToolResult:
    """Convert an MCP tool result; an `is_error` result becomes an error of kind `tool`."""
    text = result_text(result)
    if result.is_error:
        return error_result(text or "the tool reported an error without a message", "tool")
    return ToolResult(output=text)


def result_text(result: CallToolResult) -> str:
    """The text of a result: joined text blocks, else its structured content as JSON."""
    has_text = any(isinstance(block, TextContent) for block in result.content)
    if not has_text and result.structured_content is not None:
        structured = json.dumps(result.structured_content, ensure_ascii=False, default=str)
        rest = [block_text(block) for block in result.content]
        return "\n".join([structured, *rest])
    return "\n".join(block_text(block) for block in result.content)


def block_text(block: ContentBlock) -> str:
    """One content block as text: the text itself or a placeholder naming what it was."""
    match block:
        case TextContent():
            return block.text
        case ImageContent():
            return f"[image: {block.mime_type}, {base64_size(block.data)} bytes]"
        case AudioContent():
            return f"[audio: {block.mime_type}, {base64_size(block.data)} bytes]"
        case ResourceLink():
            return f"[resource: {block.uri}]"
        case EmbeddedResource():
            return _embedded_text(block)


def _embedded_text(block: EmbeddedResource) -> str:
    resource: TextResourceContents | BlobResourceContents = block.resource
    if isinstance(resource, TextResourceContents):
        return resource.text
    mime = resource.mime_type or "application/octet-stream"
    return f"[resource: {resource.uri}, {mime}, {base64_size(resource.blob)} bytes]"


def base64_size(data: str) -> int:
    """Decoded length of base64 text, computed without decoding it."""
    stripped = data.strip()
    if not stripped:
        return 0
    padding = len(stripped) - len(stripped.rstrip("="))
    return len(stripped) * 3 // 4 - padding

