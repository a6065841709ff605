"""A routed message's place (its project channel's record and its thread's) is read once, by
the router, and travels with the prompt: the thread's turn does not read it again."""

from __future__ import annotations

import contextvars
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from kimaki.store import Places, Preferences
from kimaki.testing.bot import BotHarness, said
from kimaki.testing.engine import FakeEngine
from kimaki.threads import Prompt, ThreadTurns

_in_turn: contextvars.ContextVar[bool] = contextvars.ContextVar("in_turn", default=False)


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """`(who, what)` for every record and preference read from now on: who is "turn" inside a
    thread's turn (its runtime's task), else "router"."""
    reads: list[tuple[str, str]] = []

    def counted(name: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
        async def read(self: object, *args: Any, **kwargs: Any) -> Any:
            reads.append(("turn" if _in_turn.get() else "router", name))
            return await original(self, *args, **kwargs)

        return read

    for cls, name in [
        (Places, "get_thread"),
        (Places, "get_channel"),
        (Preferences, "effective_preference"),
    ]:
        monkeypatch.setattr(cls, name, counted(name, getattr(cls, name)))
    run_turn = ThreadTurns.run_turn

    async def marked(self: ThreadTurns, prompt: Prompt, reached: Callable[[], None]) -> None:
        _in_turn.set(True)  # this task's context only: the runtime's
        await run_turn(self, prompt, reached)

    monkeypatch.setattr(ThreadTurns, "run_turn", marked)
    return reads


async def test_a_message_in_a_thread_is_placed_once_and_its_turn_reads_no_records(
    harness: BotHarness, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = harness.alice.send_message(harness.channel_id, "first")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("echo: first"))
    reads = _count_reads(monkeypatch)
    harness.alice.send_message(thread_id, "second")
    await harness.emulator.wait_for_message(thread_id, said("echo: second"))
    # The turn asks only which model and agent (they may change between turns).
    assert [what for who, what in reads if who == "turn"] == ["effective_preference"]
    # Resolved once, by the router: the thread's record, then its project channel's.
    assert [what for who, what in reads if who == "router"] == ["get_thread", "get_channel"]


async def test_a_new_threads_first_turn_reads_no_records(
    harness: BotHarness, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads = _count_reads(monkeypatch)
    message = harness.alice.send_message(harness.channel_id, "first")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("echo: first"))
    # The session was opened from the record the thread was created with.
    assert [what for who, what in reads if who == "turn"] == ["effective_preference"]
    [prompt] = fake_engine.prompts
    assert prompt.directory == harness.project_dir


async def test_a_prompt_without_a_place_has_its_turn_read_the_records(
    harness: BotHarness, fake_engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command's prompt (here /queue) carries no place: its turn reads what it needs."""
    message = harness.alice.send_message(harness.channel_id, "first")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("echo: first"))
    record = await harness.store.places.get_thread(int(thread_id))
    assert record is not None
    reads = _count_reads(monkeypatch)
    harness.bot.threads.submit(
        int(thread_id),
        Prompt(text="from a command", author_id=1, author_name="ana", thread_id=int(thread_id)),
    )
    await harness.emulator.wait_for_message(thread_id, said("echo: from a command"))
    # Its session is open already: only the channel, for its verbosity, and the preference.
    assert [what for who, what in reads if who == "turn"] == [
        "get_channel",
        "effective_preference",
    ]
