"""The router: a message in a project channel or one of its threads → a prompt for a thread.

It runs in gateway order (the dispatcher awaits it) and only *routes*: a message in a thread
is submitted to that thread's runtime at once, so a thread's prompts keep the order people
wrote them in. A message in the channel itself opens a thread, which takes a REST call, so that
happens in a task of its own and no other thread waits for it.

Ignored without a word: our own messages, webhooks and system messages, channels this bot
does not own (another machine's bot may share the guild), and people who may not drive the bot
(`kimaki.access`); logged at debug, a channel that is not a project once (a busy guild would
otherwise write a line per message). Most messages a bot sees in a busy guild are of that
kind, so `accepts` drops them from a `MessageHead` before the dispatcher builds a `Message`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki.access import may_drive
from kimaki.discord.errors import ModelError, RESTError
from kimaki.discord.models import (
    Guild,
    Member,
    Message,
    MessageHead,
    MessageReference,
    MessageType,
    User,
    structure,
)
from kimaki.store import ChannelRecord, ThreadRecord
from kimaki.threads import AttachmentInfo, Place, Prompt, QuotedMessage

__all__ = [
    "CONTENT_INTENT_HELP",
    "QUEUE_SUFFIX",
    "PlaceLookup",
    "RoutedMessages",
    "Router",
    "RouterGuilds",
    "RouterREST",
    "RouterThreads",
    "ThreadArrivals",
    "split_queue_suffix",
]

log = logging.getLogger("kimaki.router")

QUEUE_SUFFIX: Final = ". queue"
CONTENT_INTENT_HELP: Final = (
    "⚠️ This message reached me without its text: the **Message Content Intent** is off. "
    "Turn it on in the Discord Developer Portal (your application → Bot → Privileged Gateway "
    "Intents → Message Content Intent), then write again."
)
_ROUTED_TYPES: Final = frozenset({MessageType.DEFAULT, MessageType.REPLY})
# Channels already logged as not a project; forgotten all at once past this many.
_QUIET_CHANNELS_LIMIT: Final = 4096


def split_queue_suffix(text: str) -> tuple[str, bool]:
    """`("do this", True)` for "do this. queue" (any case): queue instead of interrupting."""
    stripped = text.rstrip()
    if stripped.lower().endswith(QUEUE_SUFFIX):
        return stripped[: -len(QUEUE_SUFFIX)].rstrip(), True
    if stripped.lower() == QUEUE_SUFFIX.lstrip(". "):
        return "", True
    return text, False


def display_name(user: User, member: Member | None) -> str:
    if member is not None and member.nick:
        return member.nick
    return user.display_name


class PlaceLookup(Protocol):
    """Where a message in a channel belongs (the bot's `ProjectPlaces` is one)."""

    async def place_of(self, channel_id: int) -> Place | None: ...


class RouterGuilds(Protocol):
    """The guilds, for who may drive the bot (`kimaki.guilds.GuildCache` is one)."""

    def guild(self, guild_id: int) -> Guild | None: ...


class RoutedMessages(Protocol):
    """Which messages were acted on, and which are held until their prompt reaches the agent
    (the bot's `HandledEvents` is one)."""

    def claim(self, event_id: int) -> bool: ...

    def hold(self, event_id: int) -> None: ...

    def settle(self, event_ids: Iterable[int]) -> None: ...

    async def record(self, kind: str, event_ids: Iterable[int]) -> None: ...


class RouterThreads(Protocol):
    """The thread pipeline's door, as far as the router goes through it
    (`kimaki.threads.Threads` is one)."""

    def submit(self, thread_id: int, prompt: Prompt) -> int: ...

    async def adopt_thread(self, project: ChannelRecord, thread_id: int) -> ThreadRecord: ...

    async def open_existing_thread(
        self, project: ChannelRecord, message_id: int, prompt: Prompt
    ) -> bool: ...

    async def start_thread(
        self,
        project: ChannelRecord,
        *,
        name: str,
        prompt: Prompt | None = ...,
        from_message_id: int | None = ...,
    ) -> object: ...


class ThreadArrivals(Protocol):
    """Told when a person writes in a thread (`kimaki.schedules.Schedules` is one: the
    sleeps of that thread's agent end, since someone is talking to it now)."""

    def message_arrived(self, thread_id: int) -> None: ...


class RouterREST(Protocol):
    """The router's one Discord call: a reply (`kimaki.discord.rest.RESTClient` is one)."""

    async def create_message(
        self, channel_id: int, content: str | None = ..., *, reply_to: MessageReference | None = ...
    ) -> object: ...


@final
class Router:
    """Create, `subscribe` its `accepts` and `on_message`, then `await nursery.start(router.run)`
    before the first message (the thread openings and replies run in its nursery)."""

    def __init__(
        self,
        *,
        bot_user_id: int,
        places: PlaceLookup,
        guilds: RouterGuilds,
        handled: RoutedMessages,
        threads: RouterThreads,
        rest: RouterREST,
        arrivals: ThreadArrivals | None = None,
    ) -> None:
        self._bot_user_id = bot_user_id
        self._arrivals = arrivals
        self._places = places
        self._guilds = guilds
        self._handled = handled
        self._threads = threads
        self._rest = rest
        self._nursery: trio.Nursery | None = None
        self._quiet_channels: set[int] = set()
        # The place `accepts` found for the message it let through (by message id), so that
        # `on_message` does not resolve it again: once per routed message.
        self._accepted: tuple[int, Place] | None = None

    @property
    def _tasks(self) -> trio.Nursery:
        """The router's own nursery, for work that outlives one event (opening a thread)."""
        if self._nursery is None:
            raise RuntimeError("Router.run has not started")
        return self._nursery

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    async def accepts(self, data: Any) -> bool:
        """Whether a MESSAGE_CREATE's raw `data` is worth a `Message`: False for what
        `on_message` would ignore before it looks past the channel, judged on its head alone.
        A head that does not convert is let through, for the dispatcher to log as malformed."""
        try:
            head = structure(data, MessageHead)
        except ModelError:
            return True
        if self._ignored(head.author, head.webhook_id, head.type) or head.guild_id is None:
            return False
        place = await self._places.place_of(head.channel_id)
        if place is None:
            self._not_a_project(head.id, head.channel_id)
            return False
        self._accepted = (head.id, place)
        return True

    def _ignored(self, author: User, webhook_id: int | None, kind: MessageType) -> bool:
        """Our own messages, webhooks, system messages and types that are not a prompt."""
        return (
            author.id == self._bot_user_id
            or webhook_id is not None
            or author.system
            or kind not in _ROUTED_TYPES
        )

    def _not_a_project(self, message_id: int, channel_id: int) -> None:
        if channel_id in self._quiet_channels:
            return
        if len(self._quiet_channels) >= _QUIET_CHANNELS_LIMIT:
            self._quiet_channels.clear()
        self._quiet_channels.add(channel_id)
        log.debug(
            "message %d: channel %d is not a project (its messages are ignored; logged once)",
            message_id,
            channel_id,
        )

    async def on_message(self, message: Message) -> None:
        handled = self._handled
        author = message.author
        if self._ignored(author, message.webhook_id, message.type) or message.guild_id is None:
            return
        # Resolved once (by `accepts`, when the dispatcher asked it first): the prompt carries
        # it to the thread's turn.
        accepted, self._accepted = self._accepted, None
        if accepted is not None and accepted[0] == message.id:
            place: Place | None = accepted[1]
        else:
            place = await self._places.place_of(message.channel_id)
        if place is None:
            self._not_a_project(message.id, message.channel_id)
            return
        project = place.project
        verdict = may_drive(self._guilds.guild(message.guild_id), author, message.member)
        if not verdict:
            log.debug("message %d from %s ignored: %s", message.id, author.username, verdict.reason)
            return
        # Replayed after a crash (RESUME from a stale sequence) or taken over from the
        # previous process's queue: acted on once already.
        if not handled.claim(message.id):
            log.debug("message %d: already handled (replayed)", message.id)
            return
        if not message.content and not message.attachments:
            if not message.embeds and not message.components:
                self._tasks.start_soon(self._explain_content_intent, message)
            return
        prompt = self._prompt(message)
        # Only in memory until its prompt reaches the agent: replayed if the process dies first.
        handled.hold(message.id)
        if message.channel_id == project.channel_id:
            self._tasks.start_soon(self._new_thread, project, message, prompt)
            return
        thread_id = message.channel_id
        if place.thread is None:
            place = Place(project, await self._threads.adopt_thread(project, thread_id))
        if self._arrivals is not None:
            self._arrivals.message_arrived(thread_id)
        try:
            position = self._threads.submit(
                thread_id, attrs.evolve(prompt, thread_id=thread_id, place=place)
            )
        except trio.ClosedResourceError:
            log.info("message %d not served: the bot is stopping", message.id)
            return
        if position > 0:
            self._tasks.start_soon(self._say_queued, thread_id, message.id, position)

    def _prompt(self, message: Message) -> Prompt:
        text, queued = split_queue_suffix(message.content)
        quoted = None
        referenced = message.referenced_message
        if referenced is not None:
            quoted = QuotedMessage(
                author_name=display_name(referenced.author, referenced.member),
                content=referenced.content,
                message_id=referenced.id,
            )
        return Prompt(
            text=text,
            author_id=message.author.id,
            author_name=display_name(message.author, message.member),
            message_id=message.id,
            queued=queued,
            attachments=tuple(
                AttachmentInfo(
                    attachment_id=a.id,
                    filename=a.filename,
                    url=a.url,
                    size=a.size,
                    content_type=a.content_type,
                )
                for a in message.attachments
            ),
            reply_to=quoted,
        )

    async def _new_thread(self, project: ChannelRecord, message: Message, prompt: Prompt) -> None:
        name = prompt.text or (message.attachments[0].filename if message.attachments else "")
        threads = self._threads
        if await threads.open_existing_thread(project, message.id, prompt):
            return
        try:
            await threads.start_thread(
                project, name=name, prompt=prompt, from_message_id=message.id
            )
        except RESTError as exc:
            log.warning("message %d: could not open a thread: %s", message.id, exc)
            self._handled.settle([message.id])  # answered: a replay must not try again
            await self._reply(
                message.channel_id, message.id, f"⚠️ I could not open a thread for this: {exc}"
            )

    async def _say_queued(self, thread_id: int, message_id: int, position: int) -> None:
        ahead = "1 turn" if position == 1 else f"{position} turns"
        await self._reply(
            thread_id, message_id, f"📋 Queued at position {position} (after {ahead})."
        )

    async def _explain_content_intent(self, message: Message) -> None:
        # Recorded first: a reply cannot be taken back, so a replay must not repeat it.
        await self._handled.record("message", [message.id])
        await self._reply(message.channel_id, message.id, CONTENT_INTENT_HELP)

    async def _reply(self, channel_id: int, message_id: int, content: str) -> None:
        try:
            await self._rest.create_message(
                channel_id,
                content,
                reply_to=MessageReference(message_id=message_id, fail_if_not_exists=False),
            )
        except RESTError as exc:
            log.warning("channel %d: could not reply: %s", channel_id, exc)
