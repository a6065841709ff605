"""What a thread runtime serves: one prompt, from a message, a command or the scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, final

import attrs

__all__ = ["AttachmentInfo", "Prompt", "PromptFile", "PromptSource", "QuotedMessage"]

PromptSource = Literal["message", "command", "scheduled", "voice", "resume"]


@final
@attrs.frozen
class PromptFile:
    """A file sent to the agent as a part of the prompt (an image, for now)."""

    filename: str
    mime: str
    data: bytes = attrs.field(repr=lambda data: f"<{len(data)} bytes>")


@final
@attrs.frozen
class AttachmentInfo:
    """What the prompt builder needs of a Discord attachment."""

    attachment_id: int
    filename: str
    url: str
    size: int
    content_type: str | None = None


@final
@attrs.frozen
class QuotedMessage:
    """The message a prompt replied to, as the agent should see it."""

    author_name: str
    content: str
    message_id: int | None = None


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
    # Discord attachments, downloaded by the thread's runtime when the turn starts (the router
    # only routes; a slow download must not hold up other threads' messages).
    attachments: tuple[AttachmentInfo, ...] = ()
    reply_to: QuotedMessage | None = None
    thread_id: int | None = None
    # source "resume": follow this engine turn, started before an in-place restart.
    resume_turn_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible, for the store (a queue handed to the next process). Files sent as
        bytes are left out: a prompt with files is rare and their bytes do not belong there."""
        return attrs.asdict(self, filter=lambda attribute, _: attribute.name != "files")

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prompt:
        fields = {name: value for name, value in data.items() if name in _PROMPT_FIELDS}
        fields["attachments"] = tuple(
            AttachmentInfo(**item) for item in fields.get("attachments") or ()
        )
        reply = fields.get("reply_to")
        fields["reply_to"] = QuotedMessage(**reply) if isinstance(reply, Mapping) else None
        return cls(**fields)


_PROMPT_FIELDS: Final = frozenset(a.name for a in attrs.fields(Prompt)) - {"files"}
