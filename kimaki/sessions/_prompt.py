"""What a thread runtime serves: one prompt, from a message, a command or the scheduler."""

from __future__ import annotations

from typing import Literal, final

import attrs

__all__ = ["Prompt", "PromptFile", "PromptSource"]

PromptSource = Literal["message", "command", "scheduled", "voice"]


@final
@attrs.frozen
class PromptFile:
    """A file sent to the agent as a part of the prompt (an image, for now)."""

    filename: str
    mime: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@final
@attrs.frozen
class Prompt:
    """A person's (or the scheduler's) request to the thread's agent session.

    `queued` prompts wait for the running turn; others interrupt it.
    """

    text: str
    author_id: int
    author_name: str
    message_id: int | None = None
    queued: bool = False
    source: PromptSource = "message"
    files: tuple[PromptFile, ...] = ()
