"""The thread side of agent tools: `ThreadTools`, one thread as its tools see it, and
`ToolButtons`, the buttons tools posted and what a press on one does.

A tool call reaches the daemon on the lock port with its session's grant; `Threads.tool_context`
finds the live runtime whose engine session made it and hands the tool that thread's
`ThreadTools` (`kimaki.tools.ToolContext`). Everything it does is bound to that thread and its
project channel, whatever the model wrote:

- messages, files, buttons and questions in the thread go through the thread's `ThreadWriter`
  in order (`in_order()`): after the agent's text so far, before the turn's final answer;
- a message for the project channel is posted there directly (nothing there is ordered with
  the thread);
- questions are the thread's question menus (`Asks.ask_for_tool`), answered back to the call;
- buttons are custom ids bound to the thread (`CustomIds`, kind "tool-button"); a press by
  someone allowed to drive the bot (the interactions check that before anything here) shows
  the choice and who made it, and enters the thread as the prompt "<name> pressed: <label>",
  in arrival order with the thread's messages. A new message dismisses the open buttons.

Open buttons are kept in memory by `Threads` (not by a runtime, which goes away when idle), so
a press works as long as the process lives; after a restart a press is told the buttons are no
longer open.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki import egress
from kimaki.agents import Question
from kimaki.discord.errors import RESTError
from kimaki.discord.markdown import split_message
from kimaki.discord.models import ActionRow, Button, ButtonStyle, Message, MessageFlags
from kimaki.discord.rest import File
from kimaki.store import ThreadRecord
from kimaki.threads._asks import NOT_VALID_HERE, AskContext, AskREST, Asks, CustomIds
from kimaki.threads._delivery import MessagePoster, ThreadWriter
from kimaki.threads._prompt import Prompt
from kimaki.tools._spec import ButtonChoice, HistoryEntry, ToolError, Where

__all__ = [
    "BUTTONS_GONE",
    "TOOL_BUTTON_KIND",
    "ThreadTools",
    "ToolButtons",
    "ToolREST",
    "pressed_text",
]

log = logging.getLogger("kimaki.threads")

TOOL_BUTTON_KIND: Final = "tool-button"
BUTTONS_GONE: Final = "These buttons are no longer open."
DISMISSED: Final = "dismissed: a new message came"
# Buttons have no timeout: their keys last as long as a person may come back to them.
_BUTTON_KEY_TTL: Final = 7 * 24 * 3600.0
_PROMPT_LIMIT: Final = 1800
# Open sets kept per thread at most (an agent that posts more: the oldest close unseen).
_OPEN_PER_THREAD: Final = 25
_STYLES: Final[dict[str, ButtonStyle]] = {
    "primary": ButtonStyle.PRIMARY,
    "secondary": ButtonStyle.SECONDARY,
    "success": ButtonStyle.SUCCESS,
    "danger": ButtonStyle.DANGER,
}


class ToolREST(MessagePoster, AskREST, Protocol):
    """The Discord calls of a thread's tools besides delivery's and the asks'
    (`kimaki.discord.rest.RESTClient` is one)."""

    async def list_messages(
        self, channel_id: int, *, limit: int = ..., before: int | None = ...
    ) -> list[Message]: ...


def pressed_text(name: str, label: str) -> str:
    """The prompt a press enters the thread as."""
    return f"{name} pressed: {label}"


@final
@attrs.define
class _ButtonSet:
    thread_id: int
    message_id: int
    prompt: str
    labels: tuple[str, ...]


@final
class ToolButtons:
    """The open button sets tools posted, in every thread, and what a press does.

    `submit` enters a press into its thread's prompts (`Threads.submit`); `nursery` takes the
    edits that show dismissed buttons (a new message must not wait for them).
    """

    def __init__(
        self,
        *,
        rest: AskREST,
        custom_ids: CustomIds,
        submit: Callable[[int, Prompt], int],
        nursery: trio.Nursery,
    ) -> None:
        self._rest = rest
        self._custom_ids = custom_ids
        self._submit = submit
        self._nursery = nursery
        # Thread id → its open sets by set id (a new message looks up only its thread's).
        self._open: dict[int, dict[str, _ButtonSet]] = {}

    async def post(self, writer: ThreadWriter, prompt: str, buttons: Sequence[ButtonChoice]) -> int:
        """Post `prompt` with `buttons` under it, in the thread's order; the message's id."""
        if not 1 <= len(buttons) <= 5:
            raise ToolError("between 1 and 5 buttons fit under a message")
        set_id = secrets.token_urlsafe(9)
        labels = tuple(button.label for button in buttons)
        # One key for the set; the button's position is the public suffix, checked against
        # the labels the key holds.
        custom = await self._custom_ids.custom_id(
            TOOL_BUTTON_KIND,
            writer.channel_id,
            {"set": set_id, "labels": list(labels)},
            ttl=_BUTTON_KEY_TTL,
        )
        row = ActionRow(
            components=tuple(
                Button(
                    style=_STYLES.get(button.style, ButtonStyle.SECONDARY),
                    label=button.label,
                    custom_id=f"{custom}/{position}",
                )
                for position, button in enumerate(buttons)
            )
        )
        # Room left in the last chunk for the choice (or "dismissed") it is edited to show.
        chunks = [c for c in split_message(prompt, _PROMPT_LIMIT) if c.strip()] or ["\u200b"]
        async with writer.in_order():
            for chunk in chunks[:-1]:
                await _send(writer, chunk)
            message = await _send(writer, chunks[-1], components=[row])
            sets = self._open.setdefault(writer.channel_id, {})
            sets[set_id] = _ButtonSet(writer.channel_id, message.id, chunks[-1], labels)
        while len(sets) > _OPEN_PER_THREAD:
            del sets[next(iter(sets))]
        return message.id

    async def press(self, ctx: AskContext, thread_id: int, payload: Any, choice: str) -> None:
        """A press on a tool's button in `thread_id` (its key was found there)."""
        data = payload if isinstance(payload, dict) else {}
        labels = data.get("labels")
        if not isinstance(labels, list) or not choice.isdigit() or int(choice) >= len(labels):
            await ctx.reply(NOT_VALID_HERE)
            return
        label = str(labels[int(choice)])
        set_id = str(data.get("set", ""))
        sets = self._open.get(thread_id, {})
        opened = sets.get(set_id)
        if opened is None:
            await ctx.reply(BUTTONS_GONE)
            return
        name = ctx.user.display_name
        prompt = Prompt(
            text=pressed_text(name, label),
            author_id=ctx.user.id,
            author_name=name,
            thread_id=thread_id,
        )
        # Taken and submitted before any await: the first press wins, and the prompt keeps
        # its place among the thread's messages.
        self._close(thread_id, set_id)
        try:
            self._submit(thread_id, prompt)
        except trio.ClosedResourceError:
            self._open.setdefault(thread_id, {})[set_id] = opened
            await ctx.reply("The bot is stopping; press again once it is back.")
            return
        await ctx.update(f"{opened.prompt}\n**→ {label}** ({name})", components=[])

    def dismiss(self, thread_id: int) -> None:
        """A new message in the thread: its open buttons close (shown as dismissed)."""
        for item in self._open.pop(thread_id, {}).values():
            self._nursery.start_soon(self._show_dismissed, item)

    def _close(self, thread_id: int, set_id: str) -> None:
        sets = self._open.get(thread_id)
        if sets is not None:
            sets.pop(set_id, None)
            if not sets:
                del self._open[thread_id]

    async def _show_dismissed(self, item: _ButtonSet) -> None:
        try:
            await self._rest.edit_message(
                item.thread_id,
                item.message_id,
                content=f"{item.prompt}\n-# {DISMISSED}",
                components=[],
            )
        except RESTError as exc:
            log.warning("thread %d: could not show dismissed buttons: %s", item.thread_id, exc)


@final
@attrs.frozen
class ThreadTools:
    """One thread as its tools see it (`kimaki.tools.ToolContext`), made by `Threads` for a
    call from the thread's engine session."""

    record: ThreadRecord
    writer: ThreadWriter
    asks: Asks
    button_sets: ToolButtons
    rest: ToolREST
    data_dir: Path
    """The daemon's data dir: never readable through a tool."""

    @property
    def thread_id(self) -> int:
        return self.record.thread_id

    @property
    def channel_id(self) -> int:
        """The thread's project channel (0 for a thread recorded without one)."""
        return self.record.channel_id or 0

    @property
    def directory(self) -> Path:
        return self.record.directory

    async def post(self, content: str, *, where: Where = "thread") -> int:
        chunks = [chunk for chunk in split_message(content) if chunk.strip()]
        if not chunks:
            raise ToolError("the message is empty")
        if where == "channel":
            return await self._post_to_channel(chunks)
        async with self.writer.in_order():
            ids = [(await _send(self.writer, chunk)).id for chunk in chunks]
        return ids[0]

    async def _post_to_channel(self, chunks: Sequence[str]) -> int:
        channel_id = self.channel_id
        if not channel_id:
            raise ToolError("this thread has no project channel to post to")
        ids: list[int] = []
        for chunk in chunks:
            try:
                message = await self.rest.create_message(
                    channel_id, chunk, flags=MessageFlags.SUPPRESS_EMBEDS
                )
            except RESTError as exc:
                raise ToolError(f"Discord did not take the message: {exc}") from exc
            ids.append(message.id)
        return ids[0]

    async def upload(self, path: Path, data: bytes, content: str | None) -> int:
        # Every tool's file leaves here: the egress policy has the last word (send_file's
        # bytes passed it already; any other tool's are screened now).
        origin = egress.Origin(
            "upload", channel_id=self.channel_id or None, thread_id=self.thread_id
        )
        try:
            outgoing = await egress.recheck(path.name, data, origin)
        except egress.EgressRefused as exc:
            await self.post(egress.refusal_line(exc.reason))
            raise ToolError(exc.reason) from None
        file = File(outgoing.name, outgoing.data, content_type=outgoing.content_type)
        chunks = [chunk for chunk in split_message(content or "") if chunk.strip()]
        async with self.writer.in_order():
            # The text above the file: all of it but the last chunk on its own, that one with it.
            for chunk in chunks[:-1]:
                await _send(self.writer, chunk)
            message = await _send(self.writer, chunks[-1] if chunks else None, files=[file])
        return message.id

    async def buttons(self, prompt: str, buttons: Sequence[ButtonChoice]) -> int:
        return await self.button_sets.post(self.writer, prompt, buttons)

    async def ask(self, questions: Sequence[Question]) -> Sequence[Sequence[str]] | None:
        return await self.asks.ask_for_tool(questions)

    async def history(
        self, *, where: Where, limit: int, before: int | None
    ) -> Sequence[HistoryEntry]:
        channel_id = self.thread_id if where == "thread" else self.channel_id
        if not channel_id:
            raise ToolError("this thread has no project channel")
        try:
            messages = await self.rest.list_messages(
                channel_id, limit=max(1, min(limit, 100)), before=before
            )
        except RESTError as exc:
            raise ToolError(f"Discord did not return the messages: {exc}") from exc
        return [_history_entry(message) for message in messages]


async def _send(
    writer: ThreadWriter,
    content: str | None,
    *,
    components: Sequence[ActionRow] = (),
    files: Sequence[File] = (),
) -> Message:
    try:
        return await writer.send(content, components=components, files=files)
    except RESTError as exc:
        raise ToolError(f"Discord did not take the message: {exc}") from exc


def _history_entry(message: Message) -> HistoryEntry:
    content = message.content
    if message.attachments:
        names = ", ".join(attachment.filename for attachment in message.attachments)
        content = f"{content}\n[attachments: {names}]" if content else f"[attachments: {names}]"
    return HistoryEntry(
        message_id=message.id,
        author=message.author.display_name,
        time=_utc(message.timestamp),
        content=content,
    )


def _utc(timestamp: str) -> str:
    """Discord's ISO 8601 time, in UTC to the second (as given if it cannot be read)."""
    try:
        moment = datetime.fromisoformat(timestamp)
    except ValueError:
        return timestamp
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="seconds")
