"""One tool-calling turn through Pipecat's `OpenAIRealtimeLLMService`, in a minimal pipeline.

Usage: `python pipecat_driver.py ws://H:P/v1/realtime KEY --model 'demo&tool_events=none'`.
No transport and no audio device: the pipeline is `[service, collector]`, driven by one
`LLMContextFrame` holding the user's message, the way a context aggregator would start it.
Pipecat appends `?model=` itself (unencoded), so the query rides in the model name; it cannot
parse `mcp_call` items, hence `tool_events=none`.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import Any

from driver_support import QUESTION, DriverArgs, Observation, run
from loguru import logger
from pipecat.frames.frames import (
    ErrorFrame,
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMTextFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.openai.realtime.events import SessionProperties
from pipecat.services.openai.realtime.llm import OpenAIRealtimeLLMService
from pipecat.workers.runner import WorkerRunner


class Collector(FrameProcessor):
    """The pipeline's sink: joins text frames; a response end with text is the reply."""

    def __init__(self, seen: Observation, done: asyncio.Future[None]) -> None:
        super().__init__(name="collector")  # pyright: ignore[reportUnknownMemberType]
        self.seen = seen
        self.done = done
        self.text: list[str] = []

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        """Note every frame; finish once a response ended after some text."""
        await super().process_frame(frame, direction)
        self.seen.saw(type(frame).__name__)
        if isinstance(frame, ErrorFrame):
            self.seen.errors.append(str(frame.error)[:2000])
        elif isinstance(frame, LLMTextFrame):
            self.text.append(frame.text)
        elif isinstance(frame, LLMFullResponseEndFrame) and self.text:
            self.seen.reply = "".join(self.text)
            if not self.done.done():
                self.done.set_result(None)
        await self.push_frame(frame, direction)


def _route_loguru(seen: Observation) -> None:
    """Pipecat logs through loguru: keep INFO on stderr, collect WARNING and up."""
    logger.remove()
    logger.add(sys.stderr, level="INFO")

    def collect(message: Any) -> None:
        record = message.record
        text = f"{record['name']}: {record['message']}"[:2000]
        if record["level"].no >= 40:
            seen.error_logs.append(text)
        else:
            seen.warning_logs.append(text)

    logger.add(collect, level="WARNING")


async def turn(args: DriverArgs, seen: Observation) -> None:
    """Run the pipeline until the reply arrives, then cancel it (bounded)."""
    _route_loguru(seen)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    llm = OpenAIRealtimeLLMService(
        api_key=args.key, base_url=args.url,
        settings=OpenAIRealtimeLLMService.Settings(
            model=args.model, session_properties=SessionProperties(output_modalities=["text"])),
    )
    collector = Collector(seen, done)
    worker = PipelineWorker(Pipeline([llm, collector]), enable_rtvi=False,
                            idle_timeout_secs=None, check_dangling_tasks=False)

    @worker.event_handler("on_pipeline_error")
    async def on_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:  # pyright: ignore[reportUnusedFunction]
        seen.errors.append(str(frame.error)[:2000])

    @worker.event_handler("on_pipeline_started")
    async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:  # pyright: ignore[reportUnusedFunction]
        context = LLMContext(messages=[{"role": "user", "content": QUESTION}])
        await worker.queue_frame(LLMContextFrame(context))

    runner = WorkerRunner(handle_sigint=False, check_dangling_tasks=False)
    await runner.add_workers(worker)
    running = asyncio.create_task(runner.run())
    try:
        await asyncio.wait({running, done}, return_when=asyncio.FIRST_COMPLETED)
        if running.done():
            running.result()
            raise RuntimeError("the pipeline ended before a reply")
    finally:
        # Bounded: with its receive task dead (e.g. on an `mcp_call` item) cancelling can stall.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_stop(worker, running), 5)


async def _stop(worker: PipelineWorker, running: asyncio.Task[None]) -> None:
    await worker.cancel(reason="driver done")
    await running


if __name__ == "__main__":
    run("pipecat", turn, __doc__ or "")
