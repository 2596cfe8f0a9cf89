"""The admin REST API (design §4.6): every route here needs the admin token."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query

from orchestrator.admin import agents, api_keys, audit, mcp_servers
from orchestrator.admin.deps import SessionDep, require_admin
from orchestrator.admin.schemas import ConversationDetailRead, ConversationList, ConversationRead
from orchestrator.store import queries

router = APIRouter(prefix="/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/conversations", response_model=ConversationList)
async def list_conversations(
    session: SessionDep,
    filters: Annotated[queries.ConversationFilter, Query()],
    limit: audit.LimitQuery = 50,
    cursor: audit.CursorQuery = None,
) -> ConversationList:
    """Conversations, newest first, filtered; cursor pagination."""
    with audit.cursor_checked():
        rows, next_cursor = await queries.list_conversations(
            session, filters, limit=limit, cursor=cursor)
    data = [ConversationRead.model_validate(row) for row in rows]
    return ConversationList(data=data, next_cursor=next_cursor)


@router.get("/conversations/{conversation_id}", response_model=ConversationDetailRead)
async def get_conversation(conversation_id: str, session: SessionDep) -> ConversationDetailRead:
    """One conversation with its items, tool calls, handoffs and responses as one timeline."""
    return ConversationDetailRead.from_detail(
        await audit.conversation_detail(session, conversation_id))


router.include_router(api_keys.router)
router.include_router(agents.router)
router.include_router(mcp_servers.router)
router.include_router(audit.router)
