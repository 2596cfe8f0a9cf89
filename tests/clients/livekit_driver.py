"""One tool-calling turn through LiveKit Agents' OpenAI realtime plugin, without a room.

Usage: `python livekit_driver.py http://H:P/v1 KEY --model demo`.
The session is opened with `model.session()`; the user's message goes in through
`update_chat_ctx` (which waits up to 5 s for `conversation.item.added` with the item id LiveKit
chose) and the turn starts with `generate_reply()` (which times out after 10 s unless
`response.created` echoes `metadata.client_event_id`). The server answers the tool call itself,
so the spoken reply comes in a second, server-initiated generation: every generation is read.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from driver_support import QUESTION, DriverArgs, Observation, run
from livekit.agents import llm
from livekit.plugins import openai


async def _read(generation: llm.GenerationCreatedEvent) -> str:
    """All text of one generation (its message streams, in order)."""
    parts: list[str] = []
    async for message in generation.message_stream:
        async for chunk in message.text_stream:
            parts.append(str(chunk))
    return "".join(parts)


async def turn(args: DriverArgs, seen: Observation) -> None:
    """Open a session, add the user message, ask for a reply, wait for text."""
    model = openai.realtime.RealtimeModel(base_url=args.url, api_key=args.key, model=args.model,
                                          modalities=["text"])
    session = model.session()
    replies: asyncio.Queue[str] = asyncio.Queue()
    readers: set[asyncio.Task[None]] = set()

    async def read_into_queue(generation: llm.GenerationCreatedEvent) -> None:
        await replies.put(await _read(generation))

    def on_generation(generation: llm.GenerationCreatedEvent) -> None:
        seen.extra.setdefault("generations_user_initiated", []).append(generation.user_initiated)
        task = asyncio.create_task(read_into_queue(generation))
        readers.add(task)
        task.add_done_callback(readers.discard)

    def on_server_event(event: dict[str, Any]) -> None:
        seen.saw(str(event.get("type")))
        if event.get("type") == "response.created":
            seen.extra.setdefault("response_metadata", []).append(
                event.get("response", {}).get("metadata"))
        elif event.get("type") == "conversation.item.added":
            seen.extra.setdefault("added_item_ids", []).append(event["item"].get("id"))

    def on_client_event(event: dict[str, Any]) -> None:
        if event.get("type") == "conversation.item.create":
            seen.extra.setdefault("client_item_ids", []).append(event["item"].get("id"))

    def on_error(error: llm.RealtimeModelError) -> None:
        seen.errors.append(f"{error.label}: {error.error!r} (recoverable={error.recoverable})")

    # `on` is an untyped event emitter (callbacks typed `(...) -> Unknown`).
    on: Any = session.on  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
    on("generation_created", on_generation)
    on("openai_server_event_received", on_server_event)
    on("openai_client_event_queued", on_client_event)
    on("error", on_error)
    try:
        chat_ctx = session.chat_ctx.copy()
        chat_ctx.add_message(role="user", content=QUESTION)
        started = time.monotonic()
        await session.update_chat_ctx(chat_ctx)  # raises after 5 s without the item echoed
        seen.extra["update_chat_ctx_s"] = round(time.monotonic() - started, 3)
        created = await session.generate_reply()
        seen.extra["generate_reply_user_initiated"] = created.user_initiated
        while seen.reply is None:
            text = await replies.get()
            seen.reply = text or None
    finally:
        for task in list(readers):
            task.cancel()
        await session.aclose()
        await model.aclose()


if __name__ == "__main__":
    run("livekit", turn, __doc__ or "")
