"""Erasing a conversation's content (`DELETE /admin/conversations/{id}`).

What is said is removed: items (and so their full-text entries), tool arguments, outputs and
errors, handoff reasons, response usage details, client information. What stays is a tombstone:
the conversation's id, agent, times, status and counters, and the ids and times of its tool
calls, handoffs and responses, so audit counts and stats stay true.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from orchestrator.store.tables import Conversation, Handoff, Item, Response, ToolCall

EraseOutcome = Literal["erased", "not_found", "active"]


async def erase_conversation(session: AsyncSession, conversation_id: str) -> EraseOutcome:
    """Erase the content of an ended conversation, in one transaction."""
    conversation = await session.get(Conversation, conversation_id)
    if conversation is None:
        return "not_found"
    if conversation.ended_at is None:
        return "active"  # the recorder is still writing it
    await session.execute(delete(Item).where(Item.conversation_id == conversation_id))
    await session.execute(
        update(ToolCall).where(ToolCall.conversation_id == conversation_id)
        .values(arguments="", output=None, error=None))
    await session.execute(
        update(Handoff).where(Handoff.conversation_id == conversation_id).values(reason=None))
    await session.execute(
        update(Response).where(Response.conversation_id == conversation_id).values(usage=None))
    conversation.client = {}
    conversation.erased_at = datetime.now(UTC)
    await session.commit()
    return "erased"
