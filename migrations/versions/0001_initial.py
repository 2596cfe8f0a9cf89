"""Initial schema: agent versions, MCP servers, conversations and their record.

Revision ID: 0001
Revises:
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _timestamp(name: str, *, nullable: bool = False, now: bool = False) -> sa.Column[object]:
    default = sa.func.now() if now else None
    return sa.Column(name, sa.DateTime(timezone=True), server_default=default, nullable=nullable)


def _counter(name: str) -> sa.Column[object]:
    return sa.Column(name, sa.Integer(), server_default="0", nullable=False)


def _bigint_pk() -> sa.Column[object]:
    # SQLite only autoincrements an INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit key.
    id_type = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    return sa.Column("id", id_type, autoincrement=True, nullable=False)


def _conversation_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["conversation_id"], ["conversations.id"],
        name=op.f(f"fk_{table}_conversation_id_conversations"), ondelete="CASCADE",
    )


def upgrade() -> None:
    """Create every table."""
    _agent_versions_and_servers()
    _conversations()
    _items()
    _tool_calls()
    _handoffs()
    _responses()


def _agent_versions_and_servers() -> None:
    op.create_table(
        "agent_versions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        _timestamp("created_at", now=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agent_versions")),
        sa.UniqueConstraint("name", "sha256", name=op.f("uq_agent_versions_name_sha256")),
        sa.UniqueConstraint("name", "version", name=op.f("uq_agent_versions_name_version")),
    )
    op.create_table(
        "mcp_servers",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("definition", sa.JSON(), nullable=False),
        _timestamp("created_at", now=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_mcp_servers")),
    )


def _conversations() -> None:
    op.create_table(
        "conversations",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("agent_version", sa.Integer(), nullable=True),
        sa.Column("current_agent", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        _timestamp("started_at"),
        _timestamp("ended_at", nullable=True),
        sa.Column("end_reason", sa.String(), nullable=True),
        sa.Column("client", sa.JSON(), nullable=False),
        _counter("input_tokens"),
        _counter("output_tokens"),
        _counter("total_tokens"),
        _counter("item_count"),
        _counter("tool_call_count"),
        _counter("handoff_count"),
        _counter("response_count"),
        _counter("error_count"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
    )
    op.create_index(
        op.f("ix_conversations_agent_started_at"), "conversations", ["agent", "started_at"]
    )
    op.create_index(op.f("ix_conversations_started_at_id"), "conversations", ["started_at", "id"])
    op.create_index(op.f("ix_conversations_status"), "conversations", ["status"])


def _items() -> None:
    op.create_table(
        "items",
        _bigint_pk(),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.String(), nullable=True),
        sa.Column("type", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=True),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("status", sa.String(), nullable=True),
        sa.Column("call_id", sa.String(), nullable=True),
        sa.Column("name", sa.String(), nullable=True),
        _timestamp("created_at"),
        _conversation_fk("items"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("conversation_id", "seq", name=op.f("uq_items_conversation_id_seq")),
    )


def _tool_calls() -> None:
    op.create_table(
        "tool_calls",
        _bigint_pk(),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("server", sa.String(), nullable=False),
        sa.Column("tool", sa.String(), nullable=False),
        sa.Column("arguments", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        _timestamp("started_at"),
        _timestamp("finished_at"),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        _conversation_fk("tool_calls"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_calls")),
        sa.UniqueConstraint(
            "conversation_id", "call_id", name=op.f("uq_tool_calls_conversation_id_call_id")
        ),
    )
    for column in ("server", "started_at", "status", "tool"):
        op.create_index(op.f(f"ix_tool_calls_{column}"), "tool_calls", [column])


def _handoffs() -> None:
    op.create_table(
        "handoffs",
        _bigint_pk(),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("from_agent", sa.String(), nullable=False),
        sa.Column("to_agent", sa.String(), nullable=False),
        sa.Column("call_id", sa.String(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        _timestamp("at"),
        _conversation_fk("handoffs"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_handoffs")),
        sa.UniqueConstraint(
            "conversation_id", "call_id", name=op.f("uq_handoffs_conversation_id_call_id")
        ),
    )


def _responses() -> None:
    op.create_table(
        "responses",
        _bigint_pk(),
        sa.Column("conversation_id", sa.String(), nullable=False),
        sa.Column("response_id", sa.String(), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("usage", sa.JSON(), nullable=True),
        _counter("input_tokens"),
        _counter("output_tokens"),
        _counter("total_tokens"),
        sa.Column("first_output_latency_ms", sa.Float(), nullable=True),
        _timestamp("created_at"),
        _timestamp("done_at"),
        _conversation_fk("responses"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responses")),
        sa.UniqueConstraint(
            "conversation_id", "response_id",
            name=op.f("uq_responses_conversation_id_response_id"),
        ),
    )


def downgrade() -> None:
    """Drop every table (children first)."""
    for table in ("responses", "handoffs", "tool_calls", "items", "conversations"):
        op.drop_table(table)
    op.drop_table("mcp_servers")
    op.drop_table("agent_versions")
