"""Exactly once: events Discord replays after a crash (a RESUME from a stale sequence) change
nothing; what the crash lost is served by its replay.

A crash is what SIGKILL leaves behind: nothing handed over, and the stored gateway sequence
where it was last saved (here: READY), so the emulator's real RESUME replays every event of
the session to the next bot.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio

from kimaki.bot._handled import INTERACTION_TOKEN_LIFETIME, HandledEvents, snowflake_time
from kimaki.store import Store
from kimaki.testing.bot import BotHarness, bot_paragraphs, running_bot, said
from kimaki.testing.daemon import within
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.discord._actors import iter_components
from kimaki.testing.engine import FakeEngine, RunningTurn, echo, hold_long_jobs
from kimaki.testing.script import Say
from kimaki.threads import Prompt

Json = dict[str, Any]


async def crash(harness: BotHarness) -> None:
    """Stop `harness` as a SIGKILL would leave things: no queue or turn handed over, Discord's
    session still resumable, the stored sequence back at READY (1)."""
    stored = await harness.store.gateway.load_gateway_session()
    assert stored is not None
    await harness.connection.shard.close(resumable=True)  # 4900: the session stays resumable
    await harness.store.gateway.save_gateway_session(attrs.evolve(stored, sequence=1))


async def _queue_behind_a_long_job(harness: BotHarness) -> str:
    """A thread whose long job runs, with "afterwards" queued behind it; its id."""
    message = harness.alice.send_message(harness.channel_id, "long job")
    thread = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread, said("working"))
    harness.alice.send_message(thread, "afterwards. queue")
    await harness.emulator.wait_for_message(thread, lambda m: "Queued" in m["content"])
    return thread


async def _push_asks_permission(turn: RunningTurn) -> None:
    if "push" not in turn.prompt:
        await echo(turn)
        return
    reply = await turn.ask_permission("bash", ["git push origin main"])
    await turn.play(Say(f"permission: {reply}"))


def _button(message: Json, label: str) -> str:
    return next(
        str(c["custom_id"])
        for c in iter_components(message["components"])
        if c.get("label") == label
    )


def _errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def test_events_replayed_after_a_crash_change_nothing(
    fake_engine: FakeEngine, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fake_engine.responder = _push_asks_permission
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            alice = first.alice
            opened = alice.send_message(first.channel_id, "hello")
            thread = await first.thread_of(opened)
            await emulator.wait_for_message(thread, said("echo: hello"))
            second = alice.send_message(thread, "second")
            await emulator.wait_for_message(thread, said("echo: second"), after=second)
            command = alice.run_command(
                first.channel_id, "new-session", {"prompt": "from a command"}
            )
            await emulator.wait_for_interaction_response(command)
            await fake_engine.wait_for_prompts(3)
            alice.send_message(thread, "push it")
            asked = await emulator.wait_for_message(thread, lambda m: "🔐" in m["content"])
            click = alice.click_button(asked, _button(asked, "Accept"))
            await emulator.wait_for_message(thread, said("permission: once"))
            await emulator.wait_for_interaction_response(click)
            await crash(first)
        resumes = len(emulator.gateway.resumes)

        async with running_bot(emulator, fake_engine, tmp_path, workspace=first.workspace) as again:
            assert (await within(emulator.gateway.wait_for_resume(resumes + 1)))["seq"] == 1
            after = again.alice.send_message(thread, "after the crash")
            await emulator.wait_for_message(thread, said("echo: after the crash"), after=after)
            # A replayed channel message would open its thread in a task of its own; a new one
            # after the replay, answered, means those tasks had their turn.
            fresh = again.alice.send_message(again.channel_id, "a new thread")
            fresh_thread = await again.thread_of(fresh)
            await emulator.wait_for_message(fresh_thread, said("echo: a new thread"))

    assert [p.first_line for p in fake_engine.prompts] == [
        "hello",
        "second",
        "from a command",
        "push it",
        "after the crash",
        "a new thread",
    ]
    lines = bot_paragraphs(emulator, thread)
    assert lines.count("echo: hello") == lines.count("echo: second") == 1
    assert lines.count("permission: once") == 1
    channels = emulator.state.channels.values()
    threads = [c for c in channels if c.get("parent_id") == first.channel_id]
    assert len(threads) == 3  # "hello", the command's, "a new thread": none opened twice
    assert [reply for _, reply in fake_engine.permission_replies] == ["once"]
    for record in emulator.state.interactions.values():
        assert (record.duplicate_callbacks, record.late_callbacks) == (0, 0)
    assert _errors(caplog) == []
    assert "already been" not in caplog.text  # 40060 acknowledged, 160004 thread created


async def test_a_queued_message_lost_in_a_crash_is_served_by_its_replay(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    release = hold_long_jobs(fake_engine)
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            thread = await _queue_behind_a_long_job(first)
            await crash(first)  # the queue was only in memory

        async with running_bot(emulator, fake_engine, tmp_path, workspace=first.workspace):
            await fake_engine.wait_for_resume()  # the turn the agent still runs is followed
            release.set()
            await emulator.wait_for_message(thread, said("echo: afterwards"))

    assert [p.first_line for p in fake_engine.prompts] == ["long job", "afterwards"]
    assert bot_paragraphs(emulator, thread).count("echo: afterwards") == 1
    assert bot_paragraphs(emulator, first.channel_id) == []  # no "could not open a thread"


async def test_a_thread_already_opened_from_the_message_is_used(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    # The previous process opened the thread and died before it recorded it.
    stranger = harness.stranger()
    message = stranger.send_message(harness.channel_id, "look at this")  # not routed
    harness.alice.start_thread(harness.channel_id, "look at this", message=message)
    prompt = Prompt(text="look at this", author_id=1, author_name="alice", message_id=1)
    thread = await harness.bot.threads.start_thread(
        harness.project, name="look at this", prompt=prompt, from_message_id=int(message["id"])
    )
    assert str(thread.id) == message["id"]
    await harness.emulator.wait_for_message(message["id"], said("echo: look at this"))
    assert await harness.store.places.get_thread(thread.id) is not None


@asynccontextmanager
async def handled_events(store: Store, **options: Any) -> AsyncIterator[HandledEvents]:
    """`HandledEvents` over `store`, loaded, with its writer (and sweeper) running."""
    handled = HandledEvents(store.handled, **options)
    await handled.load()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(handled.run)
        yield handled
        nursery.cancel_scope.cancel()


async def test_interactions_run_once_and_never_past_their_token(tmp_path: Path) -> None:
    now = 1_800_000_000.0

    def snowflake_at(at: float) -> int:
        return int((at - snowflake_time(0)) * 1000) << 22

    fresh = snowflake_at(now - 1)
    assert snowflake_time(fresh) == pytest.approx(now - 1)
    async with (
        await Store.open(tmp_path / "db") as store,
        handled_events(store, clock=lambda: now) as handled,
    ):
        assert await handled.claim_interaction(fresh)
        assert not await handled.claim_interaction(fresh)  # replayed in the same process
        stale = snowflake_at(now - INTERACTION_TOKEN_LIFETIME - 1)
        assert not await handled.claim_interaction(stale)
    async with (
        await Store.open(tmp_path / "db") as store,
        handled_events(store, clock=lambda: now) as after_a_crash,
    ):
        assert not await after_a_crash.claim_interaction(fresh)  # replayed to the next process


async def test_handled_ids_are_swept_after_a_day_on_a_timer(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    wall = [1_800_000_000.0]
    async with (
        await Store.open(tmp_path / "db") as store,
        handled_events(store, sweep_interval=3600, clock=lambda: wall[0]) as handled,
    ):
        await handled.record("message", [11, 12])
        wall[0] += 25 * 3600
        await handled.record("message", [13])
        assert set(await store.handled.handled_events()) == {11, 12, 13}  # not swept per event
        await trio.testing.wait_all_tasks_blocked()
        mock_clock.jump(3600)
        for _ in range(100):  # until the sweep's write is done
            if set(await store.handled.handled_events()) == {13}:
                break
            await trio.testing.wait_all_tasks_blocked()
        assert set(await store.handled.handled_events()) == {13}
        assert handled.claim(11)  # forgotten in memory too
        assert not handled.claim(13)


async def test_recording_does_not_wait_behind_the_store_queue(tmp_path: Path) -> None:
    finished: list[int] = []
    async with await Store.open(tmp_path / "db") as store, handled_events(store) as handled:

        async def slow_write(n: int) -> None:
            await store.handover.save_queued_prompts(
                n, [{"text": f"prompt {i}"} for i in range(300)]
            )
            finished.append(n)

        async with trio.open_nursery() as nursery:
            for n in range(50):
                nursery.start_soon(slow_write, n)
            await trio.testing.wait_all_tasks_blocked()  # 50 calls waiting for the connection
            await handled.record("message", [7])
            # Written by the first call that started after it, not after all 50.
            assert len(finished) < 25
        assert set(await store.handled.handled_events()) == {7}


@pytest.fixture
def patient_clock() -> trio.testing.MockClock:
    # Jumps only when every task has waited 0.2 s of real time: the store works in a thread.
    return trio.testing.MockClock(autojump_threshold=0.2)


async def test_messages_not_yet_prompted_are_replayed_after_a_crash_whatever_was_saved(
    fake_engine: FakeEngine, tmp_path: Path, patient_clock: trio.testing.MockClock
) -> None:
    """The stored sequence never passes a message whose prompt has not reached the agent: a
    message queued behind a long turn, and one in a thread still being opened, are served by
    their replay after a crash that left the sequence where the periodic save put it."""
    release = hold_long_jobs(fake_engine)
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            thread = await _queue_behind_a_long_job(first)
            # Later traffic, handled in full: another thread, answered.
            other = first.owner.send_message(first.channel_id, "other work")
            other_thread = await first.thread_of(other)
            await emulator.wait_for_message(other_thread, said("echo: other work"))
            await trio.sleep(5)  # virtual: the gateway saves its checkpoint meanwhile
            periodic = await first.store.gateway.load_gateway_session()
            assert periodic is not None
            # SIGKILL: no handover, the stored sequence as the periodic save left it.
            await first.connection.shard.close(resumable=True)
            await first.store.gateway.save_gateway_session(periodic)

        async with running_bot(emulator, fake_engine, tmp_path, workspace=first.workspace):
            await fake_engine.wait_for_resume()
            release.set()
            await emulator.wait_for_message(thread, said("echo: afterwards"))

    assert [p.first_line for p in fake_engine.prompts] == ["long job", "other work", "afterwards"]
    assert bot_paragraphs(emulator, other_thread).count("echo: other work") == 1
