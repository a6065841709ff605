"""`send_file`: upload a file from the session's directory to its thread.

The path is the model's, so it is checked after resolving it (symlinks followed, `..` gone):
the file must be inside the session's directory and not inside the daemon's data dir (which
may itself sit inside a project, and holds the bot's token and every thread's records). It is
opened without following a last symlink and checked again on the open file, so a link swapped
in after the check cannot point the upload elsewhere; only a regular file is read (never a
FIFO or a device), and never more than the limit.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import trio

from kimaki.tools import _args
from kimaki.tools._spec import ToolContext, ToolError, ToolResult, ToolSpec

__all__ = ["SEND_FILE", "size_text"]

MIB: Final = 1024 * 1024
LIMIT: Final = 8 * MIB
# The text goes in the same message as the file: one Discord message.
CONTENT_LIMIT: Final = 2000


def size_text(size: int) -> str:
    """A size as a person reads it; never rounded onto the limit it is compared with."""
    if size < 1024:
        return f"{size} bytes"
    if size < MIB:
        return f"{size / 1024:.1f} KiB"
    text = f"{size / MIB:.1f} MiB"
    return f"{size:,} bytes" if text == f"{LIMIT / MIB:.1f} MiB" and size != LIMIT else text


def _load(asked: str, path: Path, directory: Path, data_dir: Path) -> bytes:
    """Check and read `path` (already resolved); runs in a worker thread."""
    if not path.is_relative_to(directory):
        raise ToolError(f"{asked} is outside the project directory ({directory})")
    if path.is_relative_to(data_dir):
        raise ToolError(f"{asked} is inside kimaki's data directory, which tools cannot read")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ToolError(f"there is no file at {asked}") from None
    except PermissionError:
        raise ToolError(f"{asked} cannot be read (permission denied)") from None
    except OSError as exc:
        raise ToolError(f"{asked} cannot be opened ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise ToolError(f"{asked} is {kind}; send_file uploads one regular file")
        if info.st_size > LIMIT:
            raise ToolError(
                f"{asked} is {size_text(info.st_size)}; the limit is {LIMIT // MIB} MiB"
            )
        file = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with file:
        data = file.read(LIMIT + 1)
    if len(data) > LIMIT:
        raise ToolError(f"{asked} grew past the limit of {LIMIT // MIB} MiB while being read")
    return data


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    asked = _args.required_text(arguments, "path", limit=4096)
    content = _args.optional_text(arguments, "content", limit=CONTENT_LIMIT)
    if "\0" in asked:
        raise ToolError("`path` contains a NUL character")
    directory = await trio.Path(ctx.directory).resolve()
    data_dir = await trio.Path(ctx.data_dir).resolve()
    try:
        path = await (trio.Path(directory) / asked).resolve()
    except (OSError, RuntimeError):  # a symlink loop (RuntimeError before Python 3.13)
        raise ToolError(f"{asked} cannot be resolved (a symlink loop?)") from None
    data = await trio.to_thread.run_sync(_load, asked, Path(path), Path(directory), Path(data_dir))
    message_id = await ctx.upload(Path(path), data, content)
    return ToolResult(f"uploaded {path.name} ({size_text(len(data))}) (message {message_id})")


SEND_FILE: Final = ToolSpec(
    name="send_file",
    description=(
        "Upload a file from the project's directory to this session's Discord thread, "
        "optionally with a short message above it. Use it when a person should get the file "
        "itself (a generated report, an image, a log excerpt, a patch), not for showing code "
        "you can quote in your answer. The file must be inside the project directory and at "
        f"most {LIMIT // MIB} MiB."
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
