"""`send_file`: upload a file from the session's directory to its thread.

The path is the model's, so the file egress policy (`kimaki.egress`) decides what of it may
leave: nothing outside the session's directory (after resolving symlinks), nothing in the
daemon's data dir, nothing sensitive by name (`.env*`, keys, credentials); text as a redacted
copy, images whose content is their type as they are, a PDF as its text, anything else refused.
A refusal is told to the model (its tool result) and to the thread (one line), so the person
sees why the file did not come.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from kimaki import egress
from kimaki.tools import _args
from kimaki.tools._spec import ToolContext, ToolError, ToolResult, ToolSpec

__all__ = ["SEND_FILE", "size_text"]

# The text goes in the same message as the file: one Discord message.
CONTENT_LIMIT: Final = 2000
size_text = egress.size_text


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    asked = _args.required_text(arguments, "path", limit=4096)
    content = _args.optional_text(arguments, "content", limit=CONTENT_LIMIT)
    origin = egress.Origin("send_file", channel_id=ctx.channel_id or None, thread_id=ctx.thread_id)
    try:
        outgoing = await egress.prepare_path(
            asked, directory=ctx.directory, data_dir=ctx.data_dir, origin=origin
        )
    except egress.EgressRefused as exc:
        await ctx.post(egress.refusal_line(exc.reason))
        raise ToolError(exc.reason) from None
    source = outgoing.source or Path(ctx.directory) / outgoing.name
    message_id = await ctx.upload(source.with_name(outgoing.name), outgoing.data, content)
    done = outgoing.describe()
    return ToolResult(
        f"uploaded {outgoing.name} ({size_text(len(outgoing.data))}"
        f"{'; ' + done if done else ''}) (message {message_id})"
    )


SEND_FILE: Final = ToolSpec(
    name="send_file",
    description=(
        "Upload a file from the project's directory to this session's Discord thread, "
        "optionally with a short message above it. Use it when a person should get the file "
        "itself (a generated report, an image, a log excerpt, a patch), not for showing code "
        "you can quote in your answer. Sent: UTF-8 text files up to "
        f"{egress.TEXT_LIMIT // egress.MIB} MiB (secrets redacted), PNG/JPEG/GIF/WebP images up "
        f"to {egress.IMAGE_LIMIT // egress.MIB} MiB, PDFs as their text. Refused: anything "
        "else, files outside the project directory, and secrets such as .env files, keys and "
        "credentials."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "path": {
                "type": "string",
                "description": "The file: relative to the project directory, or absolute.",
                "minLength": 1,
            },
            "content": {
                "type": "string",
                "description": f"A message to post with the file (at most {CONTENT_LIMIT} "
                "characters).",
                "maxLength": CONTENT_LIMIT,
            },
        },
        "required": ["path"],
    },
    run=_run,
)
