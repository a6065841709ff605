"""`channel_history`: recent messages of the session's thread or its project channel, paged."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from kimaki.tools import _args
from kimaki.tools._spec import HistoryEntry, ToolContext, ToolError, ToolResult, ToolSpec, Where

__all__ = ["CHANNEL_HISTORY", "format_history"]

DEFAULT_LIMIT: Final = 20
MAX_LIMIT: Final = 50


def _before(arguments: Mapping[str, Any]) -> int | None:
    value = arguments.get("before")
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ToolError(f"`before` must be a message id (digits, as a string), not {value!r}")


def format_history(
    entries: Sequence[HistoryEntry], *, where: Where, limit: int, before: int | None
) -> str:
    """`entries` (newest first, as the context gives them) as the model reads them: oldest
    first, one line each, then how to get the page before."""
    place = "this thread" if where == "thread" else "the project channel"
    since = f" before message {before}" if before is not None else ""
    if not entries:
        return f"No messages in {place}{since}."
    count = f"{len(entries)} message" + ("" if len(entries) == 1 else "s")
    lines = [f"{count} of {place}{since}, oldest first:"]
    for entry in reversed(entries):
        content = entry.content.replace("\n", "\n    ") if entry.content else "(no text)"
        lines.append(f"{entry.time} {entry.author} (id {entry.message_id}): {content}")
    if len(entries) < limit:
        lines.append(f"That is the beginning of {place}.")
    else:
        oldest = entries[-1].message_id
        where_arg = "" if where == "thread" else ', where="channel"'
        lines.append(f'For older messages, call channel_history with before="{oldest}"{where_arg}.')
    return "\n".join(lines)


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    limit = _args.optional_int(arguments, "limit", default=DEFAULT_LIMIT, low=1, high=MAX_LIMIT)
    before = _before(arguments)
    where = _args.where(arguments)
    entries = await ctx.history(where=where, limit=limit, before=before)
    entries = entries[:limit]
    return ToolResult(format_history(entries, where=where, limit=limit, before=before))


CHANNEL_HISTORY: Final = ToolSpec(
    name="channel_history",
    description=(
        'Read recent messages of this session\'s Discord thread (or, with where="channel", of '
        "its project channel): time, author, message id and text, oldest first. Use it when "
        "you need what people said outside the prompts you were given (earlier discussion, a "
        "message someone refers to). Pages backwards: the result says which `before` id "
        "gets the previous page."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_LIMIT,
                "default": DEFAULT_LIMIT,
                "description": "How many messages (the newest ones before `before`).",
            },
            "before": {
                "type": "string",
                "description": "A message id: only messages older than it (for the next page).",
            },
            "where": {
                "type": "string",
                "enum": ["thread", "channel"],
                "default": "thread",
                "description": "thread: this session's thread; channel: its project channel.",
            },
        },
    },
    run=_run,
)
