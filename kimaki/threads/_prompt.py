"""What a thread runtime serves: one prompt, from a message, a command or the scheduler.

A prompt may carry several messages: those that arrived before it reached the engine join it
(`Prompt.joined`) and are sent as one, in arrival order, each with its author, message id,
reply and attachments (`Prompt.parts`).

A prompt from a routed message carries its `Place` (the thread's record and its project
channel's, as the router found them), so the turn does not read them from the store again.

Whoever must know how a prompt ended (a scheduled run waits for its answer) gives it an
`on_done`: the runtime calls it once, with a `PromptOutcome`, when the prompt's turn ends, is
interrupted, is dropped from the queue, or cannot start. A prompt handed to the next process
by an in-place restart is not ended here, so its `on_done` is not called (it is not stored).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, final

import attrs

from kimaki.store import ChannelRecord, ThreadRecord
from kimaki.turn_hooks import TurnSource

__all__ = [
    "AttachmentInfo",
    "Place",
    "Prompt",
    "PromptDone",
    "PromptFile",
    "PromptOutcome",
    "PromptSource",
    "PromptStatus",
    "QuotedMessage",
]

log = logging.getLogger("kimaki.threads")

PromptSource = TurnSource
PromptStatus = Literal["answered", "failed", "interrupted", "dropped"]


@final
@attrs.frozen
class PromptOutcome:
    """How a prompt ended, for whoever waits on it (`Prompt.on_done`).

    "answered": its turn ran to the agent's end; "failed": the agent could not take it, or its
    turn ended in an error (`error` says why); "interrupted": a newer message, `/abort` or the
    daemon stopping cut its turn short; "dropped": it never ran (`/clear-queue`, `/abort` while
    it was being joined, the thread deleted). `answer` is the agent's final text, if it said any.
    """

    status: PromptStatus
    answer: str | None = None
    error: str | None = None


PromptDone = Callable[[PromptOutcome], None]
"""Told how a prompt ended; synchronous, so calling it can never block the runtime."""


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
class Place:
    """Where a message belongs: its project channel and, in a thread, the thread's record.

    Resolved once per routed message (from the store's write-through caches) and handed on
    with its prompt: the thread's turn uses it instead of asking the store again which thread,
    which directory, which engine and which verbosity.
    """

    project: ChannelRecord
    thread: ThreadRecord | None = None


@final
@attrs.frozen
class Prompt:
    """A person's (or the scheduler's) request to the thread's agent session.

    `queued` prompts wait for the running turn; others interrupt it. The fields describe the
    first message; `followups` are the messages that joined it before it reached the engine.
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
    # Messages that arrived after this one and before it reached the engine, oldest first
    # (each without followups of its own): the agent gets them all as one prompt.
    followups: tuple[Prompt, ...] = ()
    # Where the message was routed (None for a prompt restored after a restart or made by a
    # command: the turn then reads the records). Not stored with a queue: read again then.
    place: Place | None = attrs.field(default=None, eq=False, repr=False)
    # For a scheduled run: the persona and model of this prompt's turn, over the thread's.
    agent: str | None = None
    model: str | None = None
    # Called once with how this message's prompt ended (see `finish`). Not stored.
    on_done: PromptDone | None = attrs.field(default=None, eq=False, repr=False)

    @property
    def parts(self) -> tuple[Prompt, ...]:
        """Each message of the prompt in arrival order: one, unless later ones joined it."""
        if not self.followups:
            return (self,)
        return (attrs.evolve(self, followups=()), *self.followups)

    @property
    def message_ids(self) -> tuple[int, ...]:
        """The Discord messages the prompt carries, in arrival order (commands have none)."""
        return tuple(
            part.message_id
            for part in self.parts
            if part.source == "message" and part.message_id is not None
        )

    def finish(self, outcome: PromptOutcome) -> None:
        """Tell every part of the prompt that waits (`on_done`) how it ended. A part's
        `on_done` failing is logged, never raised into the runtime that serves the thread."""
        for part in self.parts:
            if part.on_done is None:
                continue
            try:
                part.on_done(outcome)
            except Exception:
                log.exception("thread %s: a prompt's on_done failed", part.thread_id)

    def joined(self, later: Prompt) -> Prompt:
        """This prompt and then `later` (with whatever joined it), served as one turn.

        It interrupts unless both parts were queued: the runtime joins a newer interrupting
        message to a prompt that has not reached the engine, instead of starting a turn for
        each and aborting all but the last.
        """
        if self.resume_turn_id is not None or later.resume_turn_id is not None:
            raise ValueError("a resumed turn is already in the engine: nothing can join it")
        return attrs.evolve(
            self,
            queued=self.queued and later.queued,
            followups=(*self.followups, *later.parts),
            place=later.place if later.place is not None else self.place,
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-compatible, for the store (a queue handed to the next process). Files sent as
        bytes are left out: a prompt with files is rare and their bytes do not belong there;
        so is the place, which may have changed by the time the queue is served, and so is
        `on_done`, a callable of this process."""
        return attrs.asdict(self, filter=lambda attribute, _: attribute.name not in _NOT_STORED)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prompt:
        fields = {name: value for name, value in data.items() if name in _PROMPT_FIELDS}
        fields["attachments"] = tuple(
            AttachmentInfo(**item) for item in fields.get("attachments") or ()
        )
        reply = fields.get("reply_to")
        fields["reply_to"] = QuotedMessage(**reply) if isinstance(reply, Mapping) else None
        followups = fields.get("followups") or ()
        if not isinstance(followups, list | tuple) or not all(
            isinstance(item, Mapping) for item in followups
        ):
            raise TypeError("followups must be a list of prompts")
        fields["followups"] = tuple(cls.from_json(item) for item in followups)
        return cls(**fields)


_NOT_STORED: Final = frozenset({"files", "place", "on_done"})
_PROMPT_FIELDS: Final = frozenset(a.name for a in attrs.fields(Prompt)) - _NOT_STORED
