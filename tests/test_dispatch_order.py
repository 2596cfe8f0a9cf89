"""A finished server-run call's output goes upstream before the call's frames go to the client.

The model is waiting on that output; the client's `mcp_call` frames are only a view. Sending
the output first takes the client-side writes off the tool dispatch latency (bench/tools.py).
The order is observed inside the orchestrator: one log of what the live session sends to the
fake upstream and to the client, in the order it sends them.
"""

from __future__ import annotations

from typing import Any

from orchestrator.realtime.protocol import sniff_type
from tests.events import index_of, is_final_done
from tests.fake_upstream import Review
from tests.fake_upstream import review as review  # the fixture


def log_sends(session: Any, log: list[tuple[str, str | None]]) -> None:
    """Record every frame the session sends, upstream and to the client, in order."""
    upstream_send, client_send = session.upstream.send, session.client.send

    async def to_upstream(frame: str) -> None:
        log.append(("upstream", sniff_type(frame)))
        await upstream_send(frame)

    async def to_client(frame: str) -> None:
        log.append(("client", sniff_type(frame)))
        await client_send(frame)

    session.upstream.send = to_upstream
    session.outbox._send = to_client


async def test_call_output_goes_upstream_before_the_client_frames(review: Review) -> None:
    log: list[tuple[str, str | None]] = []
    async with review.client("fake") as client:
        up = await review.upstream()
        log_sends(review.session(), log)
        await client.say("slow please")
        rid = await up.turn()
        # The response ends while the tool still runs, as a model's response does.
        call = await up.call(rid, 0, "slow", '{"seconds": 0.2}')
        await up.end(rid, [call])
        output = await up.expect("conversation.item.create")
        assert output["item"]["type"] == "function_call_output"
        await up.ack(output)
        await up.expect("response.create")
        rid2 = await up.begin()
        await up.end(rid2, [await up.say(rid2, 0, "Done.")])
        await client.until(lambda e: is_final_done(e, "Done."))
    sent_output = log.index(("upstream", "conversation.item.create"), 1)  # 0: the user's item
    shown = [{"type": t, "to": to} for to, t in log]
    for kind in ("response.mcp_call.completed", "response.done"):
        assert sent_output < index_of(shown, lambda e, k=kind: e == {"type": k, "to": "client"})
