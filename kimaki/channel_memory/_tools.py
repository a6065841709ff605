"""The agent's memory tools: `memory_list` and `memory_add` (on the `kimaki` tool server).

An agent may read its channel's memory and propose an entry; it cannot change memory itself.
`memory_add` posts the proposal in the calling thread (in the thread's order, through the
tool context) and the door puts Accept / Reject under it: the entry is stored only when
someone allowed to drive the bot presses Accept. There is no `memory_remove`: removing a
standing instruction is a person's call (`/memory remove`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Protocol

from kimaki._redact import secret_reason
from kimaki.channel_memory._memory import (
    ENTRY_LIMIT,
    MemoryKind,
    MemoryRefusedError,
    Proposal,
    memory_size,
)
from kimaki.store import MemoryEntry
from kimaki.tools import ToolContext, ToolError, ToolResult, ToolSpec, _args

__all__ = ["MemoryDoor", "memory_tools", "proposal_text"]

REASON_LIMIT: Final = 300
# What the model may send before whitespace is collapsed (the door checks the entry's limit).
_RAW_LIMIT: Final = 4 * ENTRY_LIMIT


class MemoryDoor(Protocol):
    """What the tools use of `ChannelMemory` (the door satisfies it)."""

    limit_bytes: int

    async def entries(self, channel_id: int, kind: MemoryKind) -> tuple[MemoryEntry, ...]: ...

    def check(self, text: str, kind: MemoryKind = ...) -> str: ...

    async def propose(self, proposal: Proposal, message_id: int) -> None: ...


def proposal_text(proposal: Proposal) -> str:
    """The proposal as posted in the thread (its buttons' answers are added below it)."""
    return (
        "🧠 The agent proposes a channel memory entry (sent with every prompt in this channel):"
        f"\n> {proposal.text}\nWhy: {proposal.reason}"
    )


def memory_tools(door: MemoryDoor) -> tuple[ToolSpec, ...]:
    return (
        ToolSpec(
            name="memory_list",
            description=LIST_DESCRIPTION,
            input_schema={"type": "object", "properties": {}},
            run=lambda ctx, arguments: _list(door, ctx),
        ),
        ToolSpec(
            name="memory_add",
            description=ADD_DESCRIPTION,
            input_schema=ADD_SCHEMA,
            run=lambda ctx, arguments: _add(door, ctx, arguments),
        ),
    )


LIST_DESCRIPTION: Final = (
    "List this project channel's memory: the standing instructions sent before every prompt "
    "in the channel (always follow them), and its flash memory (what to emphasise for now). "
    "Numbered as people see them in /memory list."
)

ADD_DESCRIPTION: Final = (
    "Propose a standing instruction for this project channel's memory (for example a "
    "convention the person keeps repeating). It is posted in this thread with Accept / "
    "Reject buttons and stored only if a person accepts; you are not told the outcome, so do "
    "not wait for it. One short instruction per call, at most "
    f"{ENTRY_LIMIT} characters; never a secret (keys, tokens, passwords are refused)."
)

ADD_SCHEMA: Final[Mapping[str, Any]] = {
    "type": "object",
    "properties": {
        "text": {
            "type": "string",
            "description": "The instruction, as it should be followed in every future turn.",
            "minLength": 1,
            "maxLength": ENTRY_LIMIT,
        },
        "reason": {
            "type": "string",
            "description": "Why it should be remembered: shown to the person deciding.",
            "minLength": 1,
            "maxLength": REASON_LIMIT,
        },
    },
    "required": ["text", "reason"],
}


async def _list(door: MemoryDoor, ctx: ToolContext) -> ToolResult:
    memory = await door.entries(ctx.channel_id, "memory")
    flash = await door.entries(ctx.channel_id, "flash")
    lines = [
        f"Channel memory ({len(memory)} entries, {memory_size(memory)} of {door.limit_bytes} "
        "bytes):"
    ]
    lines += [f"{n}. {entry.text}" for n, entry in enumerate(memory, 1)] or ["(none)"]
    lines.append(f"Flash memory ({len(flash)} entries; gone at a restart):")
    lines += [f"{n}. {entry.text}" for n, entry in enumerate(flash, 1)] or ["(none)"]
    return ToolResult("\n".join(lines))


async def _add(door: MemoryDoor, ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    text = _args.required_text(arguments, "text", limit=_RAW_LIMIT)
    reason = " ".join(_args.required_text(arguments, "reason", limit=REASON_LIMIT).split())
    try:
        entry = door.check(text)
    except MemoryRefusedError as exc:
        raise ToolError(str(exc)) from exc
    secret = secret_reason(reason)
    if secret is not None:
        raise ToolError(f"`reason` cannot be shown: {secret}; write it without the secret")
    current = await door.entries(ctx.channel_id, "memory")
    if any(existing.text == entry for existing in current):
        return ToolResult("That entry is in the channel memory already; nothing was proposed.")
    proposal = Proposal(ctx.channel_id, ctx.thread_id, entry, reason)
    message_id = await ctx.post(proposal_text(proposal))
    try:
        await door.propose(proposal, message_id)
    except MemoryRefusedError as exc:
        raise ToolError(str(exc)) from exc
    return ToolResult(
        "Proposed in this thread; it is stored only if a person presses Accept. Carry on "
        "without waiting for the answer."
    )
