"""The rules of the scripted model: which reply a user turn gets (design §4.5).

Pure functions over the conversation as GA item dicts. A rule fires at most once per user turn,
so a call's output or a handoff never brings the same rule back round in a loop.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.agents.spec import ScriptRule, handoff_tool_name

NO_MATCH_TEXT = "(no script rule matched)"
# How the orchestrator asks any model for a filler line (an out-of-band response with these
# instructions); the scripted model says the rest of the instructions verbatim.
SAY_EXACTLY = "Say exactly the following words, and nothing else: "
AFTER_TOOL_TEXT = "Okay."


@dataclass(frozen=True, slots=True)
class Say:
    """An assistant message."""

    text: str


@dataclass(frozen=True, slots=True)
class Call:
    """A function call; `rule` is kept to answer the call's output later."""

    name: str
    arguments: str
    rule: ScriptRule


Output = Say | Call


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule with its regex compiled and a key that identifies it across scripts."""

    rule: ScriptRule
    key: str
    pattern: re.Pattern[str] | None

    def matches(self, text: str) -> bool:
        """Whether this rule answers `text`."""
        return self.pattern is None or self.pattern.search(text) is not None


def compile_script(script: Sequence[ScriptRule]) -> tuple[CompiledRule, ...]:
    """Compile the rules once, when a script is put in use."""
    return tuple(
        CompiledRule(rule, rule.model_dump_json(),
                     re.compile(rule.when, re.IGNORECASE) if rule.when is not None else None)
        for rule in script
    )


@dataclass(slots=True)
class Plan:
    """What one response will say or call, and the rule it used (to mark it fired)."""

    outputs: list[Output]
    fired: CompiledRule | None = None


def plan_reply(
    items: Sequence[Mapping[str, Any]],
    script: Sequence[CompiledRule],
    fired: set[str],
    calls: Mapping[str, ScriptRule],
) -> Plan:
    """Choose the reply to the conversation `items` (oldest first).

    `fired` holds the keys of the rules used since the last user message; `calls` maps the
    call ids the model produced to the rules that produced them.
    """
    outputs = _trailing_outputs(items)
    for call_id, output in outputs:
        rule = calls.get(call_id)
        if rule is not None and rule.call is not None and rule.say is not None:
            return Plan([Say(rule.say.replace("{output}", output))])
    text = user_text(items)
    for compiled in script:
        if compiled.key not in fired and compiled.matches(text):
            return Plan(_act(compiled.rule), fired=compiled)
    return Plan([Say(AFTER_TOOL_TEXT if outputs else NO_MATCH_TEXT)])


def _act(rule: ScriptRule) -> list[Output]:
    if rule.call is not None:
        arguments = rule.raw_arguments
        if arguments is None:
            arguments = json.dumps(rule.arguments, separators=(",", ":"))
        return [Call(rule.call, arguments, rule)]
    if rule.handoff is not None:
        # A handoff rule's `say` is spoken before the transfer, as a model would.
        preface: list[Output] = [Say(rule.say)] if rule.say else []
        return [*preface, Call(handoff_tool_name(rule.handoff), "{}", rule)]
    return [Say(rule.say or "")]


def _trailing_outputs(items: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(call_id, output) of the function_call_output items that end the conversation.

    Function calls between them are skipped: a response may hold several calls, each
    followed by its output, or all the calls first.
    """
    found: list[tuple[str, str]] = []
    for item in reversed(items):
        kind = item.get("type")
        if kind == "function_call_output":
            found.append((str(item.get("call_id", "")), str(item.get("output", ""))))
        elif kind != "function_call":
            break
    found.reverse()
    return found


def user_text(items: Sequence[Mapping[str, Any]]) -> str:
    """The text of the last user message: its input_text parts and audio transcripts."""
    for item in reversed(items):
        if item.get("type") == "message" and item.get("role") == "user":
            parts: list[str] = []
            for part in item.get("content") or ():
                piece = part.get("text") if part.get("type") == "input_text" else None
                if part.get("type") == "input_audio":
                    piece = part.get("transcript")
                if isinstance(piece, str) and piece:
                    parts.append(piece)
            return " ".join(parts)
    return ""
