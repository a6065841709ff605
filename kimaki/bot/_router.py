"""The router: a message in a project channel or one of its threads → a prompt for a thread.

It runs in gateway order (the dispatcher awaits it) and only *routes*: a message in a thread
is submitted to that thread's runtime at once, so a thread's prompts keep the order people
wrote them in. A message in the channel itself opens a thread, which takes a REST call, so that
happens in a task of its own and no other thread waits for it.

Ignored without a word (logged at debug): our own messages, webhooks and system messages,
channels this bot does not own (another machine's bot may share the guild), and people who may
not drive the bot (`kimaki.access`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Final, final

import attrs
import trio

from kimaki.access import may_drive
from kimaki.discord.errors import HTTPError, NetworkError
from kimaki.discord.models import Member, Message, MessageReference, MessageType, User
from kimaki.sessions import AttachmentInfo, Prompt, QuotedMessage
from kimaki.store import ChannelRecord

if TYPE_CHECKING:
    from kimaki.bot._bot import Bot

__all__ = ["CONTENT_INTENT_HELP", "QUEUE_SUFFIX", "Router", "split_queue_suffix"]

log = logging.getLogger("kimaki.router")

QUEUE_SUFFIX: Final = ". queue"
CONTENT_INTENT_HELP: Final = (
    "⚠️ This message reached me without its text: the **Message Content Intent** is off. "
    "Turn it on in the Discord Developer Portal (your application → Bot → Privileged Gateway "
    "Intents → Message Content Intent), then write again."
)
_ROUTED_TYPES: Final = frozenset({MessageType.DEFAULT, MessageType.REPLY})


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


@final
class Router:
    def __init__(self, bot: Bot) -> None:
        self._bot = bot

    async def on_message(self, message: Message) -> None:
        bot = self._bot
        author = message.author
        if (
            author.id == bot.bot_user_id
            or message.webhook_id is not None
            or author.system
            or message.type not in _ROUTED_TYPES
            or message.guild_id is None
        ):
            return
        project = await bot.project_of(message.channel_id)
        if project is None:
            log.debug("message %d: channel %d is not a project", message.id, message.channel_id)
            return
        verdict = may_drive(bot.guilds.guild(message.guild_id), author, message.member)
        if not verdict:
            log.debug("message %d from %s ignored: %s", message.id, author.username, verdict.reason)
            return
        # Replayed after a crash (RESUME from a stale sequence) or taken over from the
        # previous process's queue: acted on once already.
        if not bot.handled.claim(message.id):
            log.debug("message %d: already handled (replayed)", message.id)
            return
        if not message.content and not message.attachments:
            if not message.embeds and not message.components:
                bot.nursery.start_soon(self._explain_content_intent, message)
            return
        prompt = self._prompt(message)
        # Only in memory until its prompt reaches the agent: replayed if the process dies first.
        bot.handled.hold(message.id)
        if message.channel_id == project.channel_id:
            bot.nursery.start_soon(self._new_thread, project, message, prompt)
            return
        thread_id = message.channel_id
        if await bot.store.get_thread(thread_id) is None:
            await bot.threads.adopt_thread(project, thread_id)
        try:
            position = bot.threads.submit(thread_id, attrs.evolve(prompt, thread_id=thread_id))
        except trio.ClosedResourceError:
            log.info("message %d not served: the bot is stopping", message.id)
            return
        if position > 0:
            bot.nursery.start_soon(self._say_queued, thread_id, message.id, position)

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
        threads = self._bot.threads
        if await threads.open_existing_thread(project, message.id, prompt):
            return
        try:
            await self._bot.threads.start_thread(
                project, name=name, prompt=prompt, from_message_id=message.id
            )
        except (HTTPError, NetworkError) as exc:
            log.warning("message %d: could not open a thread: %s", message.id, exc)
            self._bot.handled.settle([message.id])  # answered: a replay must not try again
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
        await self._bot.handled.record("message", [message.id])
        await self._reply(message.channel_id, message.id, CONTENT_INTENT_HELP)

    async def _reply(self, channel_id: int, message_id: int, content: str) -> None:
        try:
            await self._bot.rest.create_message(
                channel_id,
                content,
                reply_to=MessageReference(message_id=message_id, fail_if_not_exists=False),
            )
        except (HTTPError, NetworkError) as exc:
            log.warning("channel %d: could not reply: %s", channel_id, exc)
