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

Voice messages (and audio attachments) are transcribed before they take their place: in a
thread, a message that arrives while one is being transcribed waits behind it (a line per
thread, served by a task of its own, so other threads are not held up); in the project
channel, the thread opens once the transcript names it. The thread shows `🎤 Transcribing…`,
then `📝 <transcript>`, then the agent's work; a failure is one line, and the message's text
and other attachments still go to the agent.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki._audit import audit
from kimaki._redact import redact
from kimaki.access import may_drive
from kimaki.discord.errors import ModelError, RESTError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import (
    Guild,
    Member,
    Message,
    MessageFlags,
    MessageHead,
    MessageReference,
    MessageType,
    User,
    structure,
)
from kimaki.store import ChannelRecord, ThreadRecord
from kimaki.threads import AttachmentInfo, Place, Prompt, QuotedMessage
from kimaki.voice import AudioClip, TranscriptionError, is_audio

__all__ = [
    "CONTENT_INTENT_HELP",
    "QUEUE_SUFFIX",
    "PlaceLookup",
    "RoutedMessages",
    "Router",
    "RouterGuilds",
    "RouterREST",
    "RouterThreads",
    "RouterVoice",
    "ThreadArrivals",
    "split_queue_suffix",
    "split_spoken_queue",
]

log = logging.getLogger("kimaki.router")

QUEUE_SUFFIX: Final = ". queue"
CONTENT_INTENT_HELP: Final = (
    "⚠️ This message reached me without its text: the **Message Content Intent** is off. "
    "Turn it on in the Discord Developer Portal (your application → Bot → Privileged Gateway "
    "Intents → Message Content Intent), then write again."
)
_ROUTED_TYPES: Final = frozenset({MessageType.DEFAULT, MessageType.REPLY})
TRANSCRIBING: Final = "🎤 Transcribing…"
TRANSCRIPT_MARK: Final = "📝 "
# A transcript ending with "queue" ("… queue", "… queue this") is queued, as ". queue" is.
_SPOKEN_QUEUE: Final = re.compile(
    r"(?is)^(?P<rest>.*?)[\s,.;:!?-]*\bqueue(?:\s+(?:this|that|it))?[\s.!?]*$"
)
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


def split_spoken_queue(transcript: str) -> tuple[str, bool]:
    """`("Run the tests", True)` for "Run the tests, queue." (any case): a spoken ". queue"."""
    match = _SPOKEN_QUEUE.match(transcript.strip())
    if match is None:
        return transcript, False
    return match.group("rest").rstrip(" ,;:-"), True


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

    async def record(self, thread_id: int) -> ThreadRecord | None: ...


class RouterVoice(Protocol):
    """Audio → text (`kimaki.voice.Transcriber` is one); raises `TranscriptionError` with the
    one line the thread shows."""

    async def transcribe(self, clip: AudioClip, *, directory: Path) -> str: ...


class ThreadArrivals(Protocol):
    """Told when a person writes in a thread (`kimaki.schedules.Schedules` is one: the
    sleeps of that thread's agent end, since someone is talking to it now)."""

    def message_arrived(self, thread_id: int) -> None: ...


class RouterREST(Protocol):
    """The router's Discord calls: a reply, and the transcription's status line edited or
    removed (`kimaki.discord.rest.RESTClient` is one)."""

    async def create_message(
        self, channel_id: int, content: str | None = ..., *, reply_to: MessageReference | None = ...
    ) -> Message: ...

    async def edit_message(self, channel_id: int, message_id: int, *, content: str) -> object: ...

    async def delete_message(self, channel_id: int, message_id: int) -> None: ...


@final
@attrs.frozen
class _Voiced:
    """A message waiting in a thread's line behind a transcription (or being transcribed)."""

    message: Message
    prompt: Prompt
    place: Place
    audio: tuple[AudioClip, ...]


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
        voice: RouterVoice | None = None,
    ) -> None:
        self._bot_user_id = bot_user_id
        self._voice = voice
        # Per thread, the messages behind a transcription, in arrival order (the first is the
        # one being served); a thread is here only while its line has messages.
        self._voice_lines: dict[int, list[_Voiced]] = {}
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
        audio = self._audio(message)
        # Only in memory until its prompt reaches the agent: replayed if the process dies first.
        handled.hold(message.id)
        if message.channel_id == project.channel_id:
            self._tasks.start_soon(self._new_thread, project, message, prompt, audio)
            return
        thread_id = message.channel_id
        if place.thread is None:
            place = Place(project, await self._threads.adopt_thread(project, thread_id))
        if self._arrivals is not None:
            self._arrivals.message_arrived(thread_id)
        line = self._voice_lines.get(thread_id)
        if audio or line is not None:
            # Behind a transcription (or one itself): its place is taken once that is done.
            if line is None:
                line = self._voice_lines[thread_id] = []
                self._tasks.start_soon(self._serve_voice_line, thread_id, line)
            line.append(_Voiced(message, prompt, place, audio))
            return
        self._submit(thread_id, place, prompt)

    def _submit(self, thread_id: int, place: Place, prompt: Prompt) -> None:
        message_id = prompt.message_id
        try:
            position = self._threads.submit(
                thread_id, attrs.evolve(prompt, thread_id=thread_id, place=place)
            )
        except trio.ClosedResourceError:
            log.info("message %s not served: the bot is stopping", message_id)
            return
        if position > 0 and message_id is not None:
            self._tasks.start_soon(self._say_queued, thread_id, message_id, position)

    # ---- voice messages

    def _audio(self, message: Message) -> tuple[AudioClip, ...]:
        """The message's audio to transcribe (none when this router has no transcriber)."""
        if self._voice is None:
            return ()
        voice_message = bool(message.flags & MessageFlags.IS_VOICE_MESSAGE)
        return tuple(
            AudioClip(
                filename=a.filename,
                url=a.url,
                size=a.size,
                content_type=a.content_type,
                duration_secs=a.duration_secs,
            )
            for a in message.attachments
            if voice_message or is_audio(a.content_type, a.filename)
        )

    async def _serve_voice_line(self, thread_id: int, line: list[_Voiced]) -> None:
        """Serve a thread's line in arrival order: each voice message once transcribed, each
        message behind it as it comes; the line ends when it is empty."""
        while True:
            waiting = line[0]
            prompt: Prompt | None = waiting.prompt
            if waiting.audio:
                directory = (
                    waiting.place.thread.directory
                    if waiting.place.thread is not None
                    else waiting.place.project.directory
                )
                status = await self._post(thread_id, TRANSCRIBING, reply_to=waiting.message.id)
                texts, failures = await self._transcribe(
                    waiting.message, waiting.audio, waiting.place.project, directory
                )
                await self._show(thread_id, status, _shown(texts, failures))
                prompt = self._voiced(waiting, texts)
            if prompt is not None:
                self._submit(thread_id, waiting.place, prompt)
            line.pop(0)
            if not line:
                del self._voice_lines[thread_id]
                return

    async def _transcribe(
        self,
        message: Message,
        audio: tuple[AudioClip, ...],
        project: ChannelRecord,
        directory: Path,
    ) -> tuple[list[str], list[str]]:
        """The transcripts of `audio`, and a line for each that failed."""
        assert self._voice is not None
        voice_message = bool(message.flags & MessageFlags.IS_VOICE_MESSAGE)
        texts: list[str] = []
        failures: list[str] = []
        for clip in audio:
            what = "the voice message" if voice_message else clip.filename
            thread_id = None if message.channel_id == project.channel_id else message.channel_id
            ids = {
                "channel_id": project.channel_id,
                "thread_id": thread_id,
                "user_id": message.author.id,
            }
            try:
                text = await self._voice.transcribe(clip, directory=directory)
            except TranscriptionError as exc:
                log.info("message %d: %s not transcribed: %s", message.id, what, exc)
                audit("voice.failed", **ids, message_id=message.id, reason=str(exc))
                failures.append(f"⚠️ I could not transcribe {what}: {exc}.")
            except Exception:
                log.exception("message %d: transcribing %s failed", message.id, what)
                failures.append(f"⚠️ I could not transcribe {what}: an unexpected error.")
            else:
                # The transcript goes to the agent as the message's text (audited as such);
                # here only that there was one.
                audit("voice.transcribed", **ids, message_id=message.id, characters=len(text))
                texts.append(text)
        return texts, failures

    def _voiced(self, waiting: _Voiced, texts: list[str]) -> Prompt | None:
        """The message's prompt with its transcripts after its text, the audio taken out;
        None (the message settled) when nothing is left for the agent."""
        prompt = waiting.prompt
        transcript, spoken_queue = split_spoken_queue("\n\n".join(texts))
        audio_urls = {clip.url for clip in waiting.audio}
        attachments = tuple(a for a in prompt.attachments if a.url not in audio_urls)
        text = "\n\n".join(part for part in (prompt.text, transcript) if part)
        if not text and not attachments:
            self._handled.settle([waiting.message.id])  # answered with the failure line
            return None
        return attrs.evolve(
            prompt, text=text, queued=prompt.queued or spoken_queue, attachments=attachments
        )

    async def _post(
        self, channel_id: int, content: str, *, reply_to: int | None = None
    ) -> Message | None:
        reference = (
            None
            if reply_to is None
            else MessageReference(message_id=reply_to, fail_if_not_exists=False)
        )
        try:
            return await self._rest.create_message(channel_id, content, reply_to=reference)
        except RESTError as exc:
            log.warning("channel %d: could not post: %s", channel_id, exc)
            return None

    async def _show(self, channel_id: int, status: Message | None, text: str) -> None:
        """`text` in `channel_id`, split like any message: the status line becomes its first
        part (or is removed when there is nothing to show)."""
        chunks = [chunk for chunk in split_message(redact(text)) if chunk.strip()]
        try:
            if status is not None:
                if chunks:
                    await self._rest.edit_message(
                        status.channel_id, status.id, content=chunks.pop(0)
                    )
                else:
                    await self._rest.delete_message(status.channel_id, status.id)
            for chunk in chunks:
                await self._rest.create_message(channel_id, chunk)
        except RESTError as exc:
            log.warning("channel %d: could not show the transcript: %s", channel_id, exc)

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

    async def _new_thread(
        self,
        project: ChannelRecord,
        message: Message,
        prompt: Prompt,
        audio: tuple[AudioClip, ...] = (),
    ) -> None:
        if audio:
            await self._new_voice_thread(project, message, prompt, audio)
            return
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

    async def _new_voice_thread(
        self,
        project: ChannelRecord,
        message: Message,
        prompt: Prompt,
        audio: tuple[AudioClip, ...],
    ) -> None:
        """A voice message in the project channel: transcribed first (the status line is a
        reply in the channel, since the thread is named from the transcript), then its thread
        opens with the transcript and the agent's work."""
        status = await self._post(message.channel_id, TRANSCRIBING, reply_to=message.id)
        texts, failures = await self._transcribe(message, audio, project, project.directory)
        voiced = self._voiced(_Voiced(message, prompt, Place(project), audio), texts)
        if voiced is None:
            await self._show(message.channel_id, status, "\n".join(failures))
            return
        threads = self._threads
        if await threads.open_existing_thread(project, message.id, voiced):
            await self._show(message.channel_id, status, "")
            return
        name = voiced.text or (message.attachments[0].filename if message.attachments else "")
        try:
            await threads.start_thread(project, name=name, from_message_id=message.id)
        except RESTError as exc:
            log.warning("message %d: could not open a thread: %s", message.id, exc)
            self._handled.settle([message.id])
            await self._show(
                message.channel_id, status, f"⚠️ I could not open a thread for this: {exc}"
            )
            return
        await self._show(message.channel_id, status, "")
        # A thread started from a message has the message's id.
        thread_id = message.id
        await self._show(thread_id, None, _shown(texts, failures))
        record = await threads.record(thread_id)
        self._submit(thread_id, Place(project, record), voiced)

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


def _shown(texts: list[str], failures: list[str]) -> str:
    """What the thread shows of a transcription: each transcript, then each failure's line."""
    return "\n\n".join([TRANSCRIPT_MARK + text for text in texts] + failures)
