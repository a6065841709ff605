"""Turning a message's attachments into parts of the prompt.

- Images go to the agent as file parts (the engine sends them as data URLs).
- Text files up to 64 KiB are inlined into the prompt with their name.
- Larger text files are saved under `<data-dir>/attachments/` and the prompt names the path,
  so the agent can read as much of them as it needs.
- Audio is left out: the router has transcribed it already (voice messages, `kimaki.voice`).
- Anything else is refused with a one-line reason the thread shows.

Attachment names come from Discord users, so a saved file's name is rebuilt from safe
characters and prefixed with the attachment's id: nothing a user types picks a path.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Final, final

import attrs
import trio

from kimaki.threads._prompt import AttachmentInfo, PromptFile

__all__ = [
    "INLINE_TEXT_LIMIT",
    "AttachmentInfo",
    "PreparedAttachments",
    "prepare_attachments",
    "safe_filename",
]

log = logging.getLogger("kimaki.threads")

INLINE_TEXT_LIMIT: Final = 64 * 1024
IMAGE_LIMIT: Final = 20 * 1024 * 1024
SAVED_TEXT_LIMIT: Final = 100 * 1024 * 1024

_IMAGE_TYPES: Final = frozenset({"image/png", "image/jpeg", "image/gif", "image/webp"})
_TEXT_TYPES: Final = frozenset(
    {
        "application/json",
        "application/xml",
        "application/javascript",
        "application/x-javascript",
        "application/typescript",
        "application/x-sh",
        "application/x-python",
        "application/x-yaml",
        "application/yaml",
        "application/toml",
        "application/sql",
        "application/x-httpd-php",
    }
)
_TEXT_SUFFIXES: Final = frozenset(
    (
        ".txt .md .rst .py .pyi .js .jsx .ts .tsx .mjs .cjs .json .jsonl .yaml .yml .toml .ini "
        ".cfg .conf .sh .bash .zsh .fish .rs .go .java .kt .c .h .cc .cpp .hpp .cs .rb .php "
        ".swift .sql .html .htm .css .scss .xml .csv .tsv .log .diff .patch .gitignore "
        ".dockerfile .lua .pl .r .scala .ex .exs .erl .hs .ml .vue .svelte .tf .proto .graphql "
        ".gradle"
    ).split()
)

Fetch = Callable[[str], Awaitable[bytes]]


@final
@attrs.frozen
class PreparedAttachments:
    """`text` goes after the message text; `refused` lines are shown in the thread."""

    text: str = ""
    files: tuple[PromptFile, ...] = ()
    refused: tuple[str, ...] = ()


def safe_filename(attachment_id: int, filename: str) -> str:
    """`<id>-<name>` from `[A-Za-z0-9._-]` only, never hidden, at most 120 characters."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", os.path.basename(filename)).lstrip(".")
    stem = re.sub(r"\.{2,}", ".", stem)[:100] or "attachment"
    return f"{attachment_id}-{stem}"


_AUDIO_SUFFIXES: Final = (".ogg", ".oga", ".opus", ".mp3", ".m4a", ".wav", ".webm", ".flac")


def _kind(info: AttachmentInfo) -> str:
    mime = (info.content_type or "").split(";")[0].strip().lower()
    if mime in _IMAGE_TYPES:
        return "image"
    name = info.filename.lower()
    if mime.startswith("audio/") or name.endswith(_AUDIO_SUFFIXES):
        return "audio"
    if mime.startswith("text/") or mime in _TEXT_TYPES:
        return "text"
    if any(name.endswith(suffix) for suffix in _TEXT_SUFFIXES) or name in {
        "makefile",
        "dockerfile",
    }:
        return "text"
    return "other"


def _decode_text(data: bytes) -> str | None:
    if b"\x00" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


async def prepare_attachments(
    attachments: Sequence[AttachmentInfo], *, fetch: Fetch, save_dir: Path
) -> PreparedAttachments:
    """Download and sort `attachments` (see the module docstring)."""
    blocks: list[str] = []
    files: list[PromptFile] = []
    refused: list[str] = []
    for info in attachments:
        kind = _kind(info)
        if kind == "audio":
            continue  # transcribed by the router into the prompt's text
        if kind == "other":
            refused.append(
                f"{info.filename}: not an image or a text file "
                f"({info.content_type or 'unknown type'}), so the agent cannot read it"
            )
            continue
        limit = IMAGE_LIMIT if kind == "image" else SAVED_TEXT_LIMIT
        if info.size > limit:
            refused.append(f"{info.filename}: {info.size // 2**20} MiB is over the {kind} limit")
            continue
        try:
            data = await fetch(info.url)
        except Exception as exc:
            log.warning("could not download attachment %s: %r", info.filename, exc)
            refused.append(f"{info.filename}: could not be downloaded from Discord")
            continue
        if kind == "image":
            mime = (info.content_type or "image/png").split(";")[0].strip()
            files.append(PromptFile(filename=info.filename, mime=mime, data=data))
            continue
        text = _decode_text(data)
        if text is None:
            refused.append(f"{info.filename}: not UTF-8 text, so the agent cannot read it")
            continue
        if len(data) <= INLINE_TEXT_LIMIT:
            blocks.append(f"Attached file {info.filename}:\n```\n{text}\n```")
            continue
        path = save_dir / safe_filename(info.attachment_id, info.filename)
        await trio.Path(save_dir).mkdir(mode=0o700, parents=True, exist_ok=True)
        await trio.Path(path).write_bytes(data)
        blocks.append(
            f"Attached file {info.filename} ({len(data) // 1024} KiB) is saved at {path}; "
            "read it from there."
        )
    return PreparedAttachments(text="\n\n".join(blocks), files=tuple(files), refused=tuple(refused))
