"""What the agent receives: the memory blocks before every prompt, in order and only when not
empty; the channel's recent conversation before a thread's first prompt only, bounded, without
the prompt said twice, and not at all after `/context off`; flash memory gone at a restart.
All as the fake engine receives the prompt."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from memory_support import commands_ready, says

from kimaki.channel_memory import (
    CONTEXT_END,
    CONTEXT_HEADING,
    FLASH_HEADING,
    MEMORY_HEADING,
    MemoryKind,
)
from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.engine import FakeEngine


@pytest.fixture
async def emulator_only() -> AsyncIterator[DiscordEmulator]:
    async with open_discord_emulator() as emulator:
        yield emulator


@pytest.fixture
async def harness(
    emulator_only: DiscordEmulator, fake_engine: FakeEngine, tmp_path: Path
) -> AsyncIterator[BotHarness]:
    """The bot with the daemon's default thread context (20 messages, 4,000 characters)."""
    async with running_bot(
        emulator_only, fake_engine, tmp_path / "data", thread_context_messages=20
    ) as running:
        yield running


def _body(prompt: str) -> str:
    """The prompt without the line saying who wrote it (the pipeline's, after the text)."""
    return prompt.split("\n\n<discord>", 1)[0]


async def _answered(harness: BotHarness, thread_id: str, turns: int) -> None:
    """The thread's `turns`-th turn has ended (its footer is out)."""
    bot_id = harness.emulator.bot_user["id"]

    def ended() -> bool | None:
        messages = harness.emulator.state.messages.get(thread_id, {}).values()
        footers = [m for m in messages if m["author"]["id"] == bot_id and "\n-# " in m["content"]]
        return True if len(footers) >= turns else None

    await harness.emulator.wait_until(ended)


async def _turn(harness: BotHarness, fake_engine: FakeEngine, text: str) -> tuple[str, str]:
    """Start a thread with `text` in the project channel; (thread id, the prompt's text)."""
    before = len(fake_engine.prompts)
    message = harness.alice.send_message(harness.channel_id, text)
    thread_id = await harness.thread_of(message)
    await _answered(harness, thread_id, 1)
    return thread_id, _body(fake_engine.prompts[before].text)


async def _in_thread(
    harness: BotHarness, fake_engine: FakeEngine, thread_id: str, text: str, turn: int
) -> str:
    before = len(fake_engine.prompts)
    harness.alice.send_message(thread_id, text)
    await _answered(harness, thread_id, turn)
    return _body(fake_engine.prompts[before].text)


async def _memory(harness: BotHarness, kind: MemoryKind, *texts: str) -> None:
    for text in texts:
        await harness.bot.channel_memory.add(
            harness.project.channel_id, kind, text, author_id=1, author_name="alice"
        )


async def test_no_memory_and_no_conversation_leave_the_prompt_alone(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    _, prompt = await _turn(harness, fake_engine, "fix the tests")
    assert prompt == "fix the tests"


async def test_memory_then_flash_memory_then_the_prompt_in_every_turn(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    await commands_ready(harness)
    await says(harness, "memory", "add", text="Use pnpm, never npm.")
    await says(harness, "memory", "add", text="Answer in French.")
    await says(harness, "flashmemory", "add", text="Only the login page today.")
    thread_id, first = await _turn(harness, fake_engine, "fix the tests")
    assert first == (
        f"{MEMORY_HEADING}\n1. Use pnpm, never npm.\n2. Answer in French.\n\n"
        f"{FLASH_HEADING}\n1. Only the login page today.\n\n"
        "fix the tests"
    )
    # Every turn, and a change shows at the next one.
    await says(harness, "flashmemory", "remove", index=1)
    second = await _in_thread(harness, fake_engine, thread_id, "and the docs", 2)
    assert second == (
        f"{MEMORY_HEADING}\n1. Use pnpm, never npm.\n2. Answer in French.\n\nand the docs"
    )


async def test_flash_memory_alone_is_sent_alone(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    await _memory(harness, "flash", "Be careful with migrations.")
    _, prompt = await _turn(harness, fake_engine, "go")
    assert prompt == f"{FLASH_HEADING}\n1. Be careful with migrations.\n\ngo"


def _context_lines(prompt: str) -> list[str]:
    """The lines of the recent-conversation block (between its heading and its end)."""
    lines = prompt.splitlines()
    start, end = lines.index(CONTEXT_HEADING), lines.index(CONTEXT_END)
    return lines[start + 1 : end]


LINE = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d UTC\] (?P<author>[^:]+): (?P<text>.*)")


def _said(lines: list[str]) -> list[tuple[str, str]]:
    found = []
    for line in lines:
        match = LINE.fullmatch(line)
        assert match is not None, line
        found.append((match["author"], match["text"]))
    return found


async def test_a_new_thread_gets_the_channels_recent_conversation_on_its_first_turn_only(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    await _turn(harness, fake_engine, "the deploy broke this morning")
    # Someone the bot does not answer is part of the conversation all the same.
    harness.stranger("bob").send_message(harness.channel_id, "I reverted the config change")
    await _memory(harness, "memory", "Be brief.")
    thread_id, first = await _turn(harness, fake_engine, "continue what we did this morning")
    # Memory first, then the conversation (oldest first, authors and times), then the prompt.
    assert first.startswith(f"{MEMORY_HEADING}\n1. Be brief.\n\n{CONTEXT_HEADING}\n")
    assert first.endswith(f"{CONTEXT_END}\n\ncontinue what we did this morning")
    assert _said(_context_lines(first)) == [
        ("alice", "the deploy broke this morning"),
        ("bob", "I reverted the config change"),
    ]
    # The thread's own starter (the prompt) is not said twice.
    assert first.count("continue what we did this morning") == 1
    # Later turns of the thread carry memory only.
    later = await _in_thread(harness, fake_engine, thread_id, "and now?", 2)
    assert later == f"{MEMORY_HEADING}\n1. Be brief.\n\nand now?"


async def test_the_conversation_is_bounded_by_messages_and_characters(
    emulator_only: DiscordEmulator, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with running_bot(
        emulator_only,
        fake_engine,
        tmp_path / "data",
        thread_context_messages=3,
        thread_context_chars=170,
    ) as harness:
        for n in range(5):
            await _turn(harness, fake_engine, f"message {n} " + "x" * 20)
        _, prompt = await _turn(harness, fake_engine, "what now")
        lines = _context_lines(prompt)
        # Each line is 60 characters: the newest three messages at most (0 and 1 are left
        # out), the two newest whole, and the third cut to the 50 characters left.
        assert [len(line) for line in lines] == [50, 60, 60]
        assert _said(lines) == [
            ("alice", "message 2 " + "x" * 9 + "…"),
            ("alice", "message 3 " + "x" * 20),
            ("alice", "message 4 " + "x" * 20),
        ]


async def test_context_off_leaves_the_conversation_out(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    await commands_ready(harness)
    await _turn(harness, fake_engine, "earlier work")
    await says(harness, "context", "off")
    _, prompt = await _turn(harness, fake_engine, "a fresh start")
    assert prompt == "a fresh start"
    await says(harness, "context", "on")
    _, prompt = await _turn(harness, fake_engine, "with context again")
    assert CONTEXT_HEADING in prompt
    assert "earlier work" in prompt


async def test_flash_memory_is_gone_after_a_restart_and_memory_is_not(
    emulator_only: DiscordEmulator, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    workspace = emulator_only.create_workspace()
    data = tmp_path / "data"
    options: dict[str, Any] = {"workspace": workspace}
    async with running_bot(emulator_only, fake_engine, data, **options) as harness:
        await _memory(harness, "memory", "Use pnpm.")
        await _memory(harness, "flash", "Only the login page today.")
        await harness.emulator.wait_until(lambda: harness.guilds.guild_ids() or None)
    async with running_bot(emulator_only, fake_engine, data, **options) as harness:
        door = harness.bot.channel_memory
        assert [e.text for e in await door.entries(harness.project.channel_id, "memory")] == [
            "Use pnpm."
        ]
        assert await door.entries(harness.project.channel_id, "flash") == ()
        _, prompt = await _turn(harness, fake_engine, "go on")
        assert prompt == f"{MEMORY_HEADING}\n1. Use pnpm.\n\ngo on"
