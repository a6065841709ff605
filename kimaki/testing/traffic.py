"""People using the bot while its daemon is killed or restarted, and what they saw afterwards.

Shared by the restart benchmark (`bench/restart.py`) and the exactly-once tests: people write
in threads (each waits for the answer, pauses, writes again), open new threads from the project
channel, and run `/new-session`; afterwards `TrafficReport` counts, from the emulator's state
and the prompts that reached the agent, what was answered twice, not at all, or run twice.

The agent answers every prompt with one paragraph (`answer`, the fake OpenCode's default `ok`),
so an answer is one bot paragraph equal to it.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Iterable
from typing import Any, Final, final

import attrs
import trio

from kimaki.testing.bot import paragraphs
from kimaki.testing.discord import DiscordEmulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.discord._errors import WaitTimeout
from kimaki.testing.opencode import FakeOpenCode

__all__ = ["Traffic", "TrafficReport", "fake_opencode_prompts"]

Json = dict[str, Any]

_MESSAGE_ID: Final = re.compile(r"message id (\d+)")
_COMMAND: Final = re.compile(r"^command \d+$", re.MULTILINE)


def fake_opencode_prompts(fake: FakeOpenCode) -> list[str]:
    """The text of every prompt the fake agent took (the user messages of its sessions; a
    prompt refused as "session is busy" is not one)."""
    texts = []
    for session in fake.sessions.values():
        for message in session.messages:
            if message["info"]["role"] == "user":
                parts = message["parts"]
                texts.append("\n".join(str(p.get("text", "")) for p in parts if "text" in p))
    return texts


@final
@attrs.frozen
class TrafficReport:
    """What people would notice: each count should be 0 but `messages` and `commands`."""

    messages: int
    """Messages written in threads, plus messages that opened a thread."""
    lost: int
    """Messages never answered."""
    duplicated: int
    """Extra answers: a message answered twice counts 1."""
    duplicate_prompts: int
    """Prompts that reached the agent more than once (by message id or command text)."""
    commands: int
    commands_twice: int
    """`/new-session`s that opened more than one thread."""
    commands_not_run: int

    def summary(self) -> str:
        return (
            f"{self.messages} messages: {self.lost} lost, {self.duplicated} answered twice; "
            f"{self.duplicate_prompts} duplicate prompts at the agent; {self.commands} "
            f"commands: {self.commands_twice} run twice, {self.commands_not_run} not run"
        )


@final
class Traffic:
    """Run its coroutines in a nursery; `stop` ends them; `report()` once answers landed."""

    def __init__(self, emulator: DiscordEmulator, *, answer: str = "ok", pause: float = 0.05):
        self.emulator = emulator
        self.answer = answer
        self.pause = pause
        self.stop = trio.Event()
        self.sent = 0
        self._threads: list[tuple[str, str]] = []  # (thread id, person id): conversations
        self._last: dict[str, Json] = {}  # each conversation's last message, by thread id
        self._openers: list[str] = []  # channel messages that should open a thread
        self._commands: list[str] = []  # /new-session prompts
        self._channel_id = ""

    async def converse(self, actor: Actor, thread_id: str) -> None:
        """One person in one thread: write, wait for the answer (or the emulator's
        `wait_timeout`: then it counts as lost), pause, write again."""
        self._threads.append((thread_id, actor.id))
        while not self.stop.is_set():
            message = actor.send_message(thread_id, f"message {self.sent}")
            self._last[thread_id] = message
            self.sent += 1
            with contextlib.suppress(WaitTimeout):
                await self.emulator.wait_for_message(thread_id, self._answered, after=message)
            await trio.sleep(self.pause)

    async def open_threads(self, actor: Actor, channel_id: str, every: float) -> None:
        """A new thread from a message in the project channel every `every` seconds."""
        self._channel_id = channel_id
        while not self.stop.is_set():
            message = actor.send_message(channel_id, f"thread {self.sent}")
            self.sent += 1
            self._openers.append(str(message["id"]))
            await trio.sleep(every)

    async def run_commands(self, actor: Actor, channel_id: str, every: float) -> None:
        """`/new-session prompt:command <n>` every `every` seconds."""
        self._channel_id = channel_id
        while not self.stop.is_set():
            text = f"command {self.sent}"
            self.sent += 1
            actor.run_command(channel_id, "new-session", {"prompt": text})
            self._commands.append(text)
            await trio.sleep(every)

    async def settle(self, within: float = 30.0) -> None:
        """After `stop`: until every conversation's last message and every thread a message
        or command opened has its answer (or `within` seconds passed), so the report counts
        finished turns."""
        with trio.move_on_after(within):
            for thread_id, message in self._last.items():
                with contextlib.suppress(WaitTimeout):
                    await self.emulator.wait_for_message(thread_id, self._answered, after=message)
            for thread_id in self._openers + self._command_threads():
                if thread_id in self.emulator.state.channels:
                    with contextlib.suppress(WaitTimeout):
                        await self.emulator.wait_for_message(thread_id, self._answered)

    def _command_threads(self) -> list[str]:
        names = set(self._commands)
        return [
            str(channel["id"])
            for channel in self.emulator.state.channels.values()
            if channel.get("parent_id") == self._channel_id and channel.get("name") in names
        ]

    def _answered(self, message: Json) -> bool:
        return self.answer in paragraphs(message)

    def _answers_per_message(self, thread_id: str, person_id: str) -> list[int]:
        """Per message of the person in the thread: the answers before their next message."""
        bot_id = self.emulator.bot_user["id"]
        messages = sorted(
            self.emulator.state.messages.get(thread_id, {}).values(), key=lambda m: int(m["id"])
        )
        counts: list[int] = []
        for message in messages:
            author = message["author"]["id"]
            if author == person_id:
                counts.append(0)
            elif author == bot_id and counts:
                counts[-1] += paragraphs(message).count(self.answer)
        return counts

    def report(self, prompts: Iterable[str]) -> TrafficReport:
        """Count from the emulator's state and the prompts that reached the agent."""
        counts: list[int] = []
        for thread_id, person_id in self._threads:
            counts += self._answers_per_message(thread_id, person_id)
        bot_id = self.emulator.bot_user["id"]
        for opener in self._openers:  # the thread has the message's id
            thread = self.emulator.state.messages.get(opener, {}).values()
            counts.append(
                sum(paragraphs(m).count(self.answer) for m in thread if m["author"]["id"] == bot_id)
            )
        keys: Counter[str] = Counter()
        for text in prompts:
            keys.update(_MESSAGE_ID.findall(text) or _COMMAND.findall(text)[:1])
        threads = Counter(
            str(channel.get("name"))
            for channel in self.emulator.state.channels.values()
            if channel.get("parent_id") == self._channel_id
        )
        return TrafficReport(
            messages=len(counts),
            lost=sum(1 for n in counts if n == 0),
            duplicated=sum(n - 1 for n in counts if n > 1),
            duplicate_prompts=sum(n - 1 for n in keys.values() if n > 1),
            commands=len(self._commands),
            commands_twice=sum(1 for text in self._commands if threads[text] > 1),
            commands_not_run=sum(1 for text in self._commands if threads[text] == 0),
        )
