"""`orchestrator chat`: a text conversation with an agent over the realtime endpoint."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import websockets
from rich.console import Console

console = Console(highlight=False)


async def chat(url: str, key: str, lines: list[str] | None = None) -> int:
    """Talk to the agent at `url`; read turns from `lines` or stdin. Returns an exit code."""
    headers = {"Authorization": f"Bearer {key}"}
    async with websockets.connect(url, additional_headers=headers, compression=None,
                                  max_size=None) as ws:
        first = json.loads(await ws.recv())
        if first.get("type") == "error":
            console.print(f"[red]error:[/] {first['error'].get('message')}")
            return 1
        console.print(f"[dim]connected to {url}; Ctrl-D to quit[/]")
        await ws.send(json.dumps({"type": "session.update", "session": {
            "type": "realtime", "output_modalities": ["text"]}}))
        source = iter(lines) if lines is not None else None
        while True:
            text = await _next_line(source)
            if text is None:
                return 0
            if not text.strip():
                continue
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": text}]}}))
            await ws.send(json.dumps({"type": "response.create"}))
            if not await _show_turn(ws):
                return 1


async def _next_line(source: Any) -> str | None:
    if source is not None:
        return next(source, None)
    console.print("[bold cyan]you>[/] ", end="")
    line = await asyncio.to_thread(sys.stdin.readline)
    return line.rstrip("\n") if line else None


async def _show_turn(ws: Any) -> bool:
    """Print one turn's events until the last response of the turn is done."""
    continuing = False
    speaking = False
    while True:
        event: dict[str, Any] = json.loads(await ws.recv())
        kind = event.get("type")
        if kind in ("response.output_text.delta", "response.output_audio_transcript.delta"):
            if not speaking:
                console.print("[bold green]agent>[/] ", end="")
                speaking = True
            console.print(event.get("delta", ""), end="")
        elif kind == "response.output_item.done":
            continuing |= _show_item(event.get("item") or {})
            if speaking:
                console.print()
                speaking = False
        elif kind == "error":
            err: dict[str, Any] = event.get("error") or {}
            console.print(f"[red]error ({err.get('code')}):[/] {err.get('message')}")
        elif kind == "response.done":
            response: dict[str, Any] = event.get("response") or {}
            status = response.get("status")
            if status not in (None, "completed"):
                console.print(f"[yellow]response {status}[/]")
            if not continuing:
                return True
            continuing = False


def _show_item(item: dict[str, Any]) -> bool:
    """Print a tool call; True if the server will continue the turn after it."""
    kind = item.get("type")
    if kind == "mcp_call":
        if item.get("server_label") == "handoff":
            console.print(f"[magenta]→ handoff[/] {item.get('name')} {item.get('arguments')}")
        else:
            console.print(f"[magenta]⚙ {item.get('server_label')}.{item.get('name')}[/]"
                          f"({item.get('arguments')})")
        if item.get("error"):
            console.print(f"  [red]✗ {item['error'].get('message')}[/]")
        else:
            console.print(f"  [dim]→ {item.get('output')}[/]")
        return True
    if kind == "function_call":
        console.print(
            f"[yellow]client tool requested:[/] {item.get('name')}({item.get('arguments')})")
    return False
