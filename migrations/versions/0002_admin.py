"""Admin: API keys, client secrets, conversation erasure, tokens by modality, audit indexes,
full-text search over item text (SQLite FTS5 / PostgreSQL tsvector + GIN).

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MODALITY_COLUMNS = (
    "input_text_tokens", "input_audio_tokens", "output_text_tokens", "output_audio_tokens",
)

# SQLite: an external-content FTS5 table over items.text, kept in step by triggers.
_SQLITE_FTS = [
    "CREATE VIRTUAL TABLE items_fts USING fts5(text, content='items', content_rowid='id', "
    "tokenize='unicode61 remove_diacritics 2')",
    "INSERT INTO items_fts(rowid, text) SELECT id, text FROM items WHERE text IS NOT NULL",
    "CREATE TRIGGER items_fts_ai AFTER INSERT ON items WHEN new.text IS NOT NULL BEGIN "
    "INSERT INTO items_fts(rowid, text) VALUES (new.id, new.text); END",
    "CREATE TRIGGER items_fts_ad AFTER DELETE ON items WHEN old.text IS NOT NULL BEGIN "
    "INSERT INTO items_fts(items_fts, rowid, text) VALUES ('delete', old.id, old.text); END",
    "CREATE TRIGGER items_fts_au AFTER UPDATE OF text ON items BEGIN "
    "INSERT INTO items_fts(items_fts, rowid, text) SELECT 'delete', old.id, old.text "
    "WHERE old.text IS NOT NULL; "
    "INSERT INTO items_fts(rowid, text) SELECT new.id, new.text WHERE new.text IS NOT NULL; END",
]
_SQLITE_FTS_DROP = [
    "DROP TRIGGER IF EXISTS items_fts_au", "DROP TRIGGER IF EXISTS items_fts_ad",
    "DROP TRIGGER IF EXISTS items_fts_ai", "DROP TABLE IF EXISTS items_fts",
]
# PostgreSQL: a GIN index on the same expression the search query uses.
_PG_FTS = (
    "CREATE INDEX ix_items_text_fts ON items "
    "USING gin (to_tsvector('simple', coalesce(text, '')))"
)


def upgrade() -> None:
    """Add the admin tables, columns, indexes and the text search index."""
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("sha256", name=op.f("uq_api_keys_sha256")),
    )
    op.create_table(
        "client_secrets",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("agent", sa.String(), nullable=False),
        sa.Column("session", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_client_secrets")),
    )
    op.create_index(op.f("ix_client_secrets_expires_at"), "client_secrets", ["expires_at"])
    # Plain ADD/DROP COLUMN (SQLite >= 3.35 has both): no table rebuild, no cascade risk.
    op.add_column("conversations", sa.Column("erased_at", sa.DateTime(timezone=True)))
    for name in MODALITY_COLUMNS:
        op.add_column(
            "responses", sa.Column(name, sa.Integer(), server_default="0", nullable=False)
        )
    _indexes()
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS:
            op.execute(statement)
    else:
        op.execute(_PG_FTS)


def _indexes() -> None:
    # Stats scan a time window per tool / agent; these cover those scans (no table lookups).
    op.create_index(
        op.f("ix_tool_calls_server_tool_duration_ms_started_at_status"), "tool_calls",
        ["server", "tool", "duration_ms", "started_at", "status"],
    )
    op.create_index(
        op.f("ix_tool_calls_started_at_tool_server_status_duration_ms"), "tool_calls",
        ["started_at", "tool", "server", "status", "duration_ms"],
    )
    op.create_index(op.f("ix_tool_calls_conversation_id_tool_status"), "tool_calls",
                    ["conversation_id", "tool", "status"])
    op.create_index(op.f("ix_tool_calls_agent_started_at_status"), "tool_calls",
                    ["agent", "started_at", "status"])
    op.create_index(op.f("ix_responses_created_at_agent"), "responses", ["created_at", "agent"])
    op.create_index(
        op.f("ix_responses_agent_first_output_latency_ms_created_at"), "responses",
        ["agent", "first_output_latency_ms", "created_at"],
    )
    op.create_index(op.f("ix_handoffs_to_agent"), "handoffs", ["to_agent"])


def downgrade() -> None:
    """Drop everything `upgrade` added."""
    if op.get_bind().dialect.name == "sqlite":
        for statement in _SQLITE_FTS_DROP:
            op.execute(statement)
    else:
        op.execute("DROP INDEX IF EXISTS ix_items_text_fts")
    op.drop_index(op.f("ix_handoffs_to_agent"), table_name="handoffs")
    op.drop_index(op.f("ix_responses_agent_first_output_latency_ms_created_at"),
                  table_name="responses")
    op.drop_index(op.f("ix_responses_created_at_agent"), table_name="responses")
    op.drop_index(op.f("ix_tool_calls_agent_started_at_status"), table_name="tool_calls")
    op.drop_index(op.f("ix_tool_calls_conversation_id_tool_status"), table_name="tool_calls")
    op.drop_index(op.f("ix_tool_calls_started_at_tool_server_status_duration_ms"),
                  table_name="tool_calls")
    op.drop_index(op.f("ix_tool_calls_server_tool_duration_ms_started_at_status"),
                  table_name="tool_calls")
    for name in MODALITY_COLUMNS:
        op.drop_column("responses", name)
    op.drop_column("conversations", "erased_at")
    op.drop_index(op.f("ix_client_secrets_expires_at"), table_name="client_secrets")
    op.drop_table("client_secrets")
    op.drop_table("api_keys")
