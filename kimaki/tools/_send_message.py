"""`send_message`: post to the session's thread, or to its project channel."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kimaki.tools import _args
from kimaki.tools._spec import ToolContext, ToolResult, ToolSpec

__all__ = ["SEND_MESSAGE"]

# Longer than one Discord message on purpose: the context splits under 2000 characters.
LIMIT: Final = 8000


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    content = _args.required_text(arguments, "content", limit=LIMIT)
    where = _args.where(arguments)
    message_id = await ctx.post(content, where=where)
    return ToolResult(f"sent (message {message_id})")


SEND_MESSAGE: Final = ToolSpec(
    name="send_message",
    description=(
        'Post a message to this session\'s Discord thread right now (or, with where="channel", '
        "to the thread's project channel). Use it for explicit notifications and hand-offs "
        "while you keep working: a progress note someone should see, a heads-up before a long "
        "step, a summary meant for the whole channel. Do NOT use it for your final answer: the "
        "bot already posts your reply to the thread when your turn ends."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "content": {
                "type": "string",
                "description": f"The message, in Discord markdown (at most {LIMIT} characters).",
                "minLength": 1,
                "maxLength": LIMIT,
            },
            "where": {
                "type": "string",
                "enum": ["thread", "channel"],
                "default": "thread",
                "description": "thread: this session's thread; channel: its project channel.",
            },
        },
        "required": ["content"],
    },
    run=_run,
)
