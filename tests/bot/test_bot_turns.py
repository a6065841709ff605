"""Serial turns per thread: abort on a new message, queueing, idle eviction, restarts."""

from __future__ import annotations

from pathlib import Path

import trio

from kimaki.bot import INTERRUPTED
from kimaki.testing.bot import BotHarness, bot_paragraphs, running_bot, said
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.engine import FakeEngine, FakeTurn, echo


async def test_a_new_message_interrupts_the_running_turn(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    late_output = trio.Event()

    async def slow_then_echo(turn: FakeTurn) -> None:
        if "slow" in turn.prompt:
            turn.text("working on it")
            turn.step()
            try:
                await turn.hang()
            finally:
                # What an aborted agent still sends on its way out must not reach the thread.
                turn.text("late words of the aborted turn")
                late_output.set()
        else:
            await echo(turn)

    fake_engine.responder = slow_then_echo
    message = harness.alice.send_message(harness.channel_id, "slow task")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("working on it"))
    harness.alice.send_message(thread_id, "do this instead")
    await harness.emulator.wait_for_message(thread_id, said("echo: do this instead"))
    assert late_output.is_set()
    assert fake_engine.aborts == 1
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines.index(INTERRUPTED) < lines.index("echo: do this instead")
    assert not any("late words" in line for line in lines)
    assert [p.first_line for p in fake_engine.prompts] == ["slow task", "do this instead"]


async def test_partial_output_is_flushed_with_the_interrupted_line(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    async def tool_then_hang(turn: FakeTurn) -> None:
        if "first" in turn.prompt:
            turn.tool("bash", "make test")
            await turn.hang()
        await echo(turn)

    fake_engine.responder = tool_then_hang
    message = harness.alice.send_message(harness.channel_id, "first")
    thread_id = await harness.thread_of(message)
    await fake_engine.wait_for_prompts(1)
    # The tool line waits in the buffer (no step end yet): the interruption flushes it.
    harness.alice.send_message(thread_id, "second")
    await harness.emulator.wait_for_message(thread_id, said("echo: second"))
    lines = bot_paragraphs(harness.emulator, thread_id)
    at = lines.index(INTERRUPTED)
    assert lines[at - 1] == "┣ bash _make test_"


async def test_queue_suffix_waits_for_the_running_turn(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    release = trio.Event()

    async def gated(turn: FakeTurn) -> None:
        if "long" in turn.prompt:
            await release.wait()
        await echo(turn)

    fake_engine.responder = gated
    message = harness.alice.send_message(harness.channel_id, "long job")
    thread_id = await harness.thread_of(message)
    await fake_engine.wait_for_prompts(1)
    harness.alice.send_message(thread_id, "then lint. queue")
    harness.alice.send_message(thread_id, "then test. QUEUE")
    await harness.emulator.wait_for_message(
        thread_id, lambda m: m["content"].startswith("📋 Queued at position 2")
    )
    assert fake_engine.aborts == 0
    release.set()
    await harness.emulator.wait_for_message(thread_id, said("echo: then test"))
    assert [p.first_line for p in fake_engine.prompts] == ["long job", "then lint", "then test"]
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines.index("📋 Queued at position 1 (after 1 turn).") < lines.index("echo: long job")
    assert lines.index("echo: then lint") < lines.index("echo: then test")


async def test_idle_runtime_is_evicted_and_rebuilt_with_the_same_session(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path, thread_idle_timeout=0.05) as harness,
    ):
        message = harness.alice.send_message(harness.channel_id, "one")
        thread_id = await harness.thread_of(message)
        await emulator.wait_for_message(thread_id, said("echo: one"))
        first_session = fake_engine.prompts[0].session_id
        # Eviction closes the thread's session object (the engine keeps the session).
        await fake_engine.session(first_session).closed_event.wait()
        statistics = harness.bot.threads.statistics()
        assert (statistics.active_runtimes, statistics.evictions) == (0, 1)
        harness.alice.send_message(thread_id, "two")
        await emulator.wait_for_message(thread_id, said("echo: two"))
        assert fake_engine.prompts[1].session_id == first_session
        assert fake_engine.sessions_opened[-1] == (harness.project_dir, first_session)


async def test_after_a_restart_the_thread_keeps_its_session(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            workspace = first.workspace
            message = first.alice.send_message(first.channel_id, "remember this")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("echo: remember this"))
        session_id = fake_engine.prompts[0].session_id

        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace) as second:
            second.alice.send_message(thread_id, "still there?")
            await emulator.wait_for_message(thread_id, said("echo: still there?"))
            assert fake_engine.prompts[1].session_id == session_id
            assert fake_engine.sessions_opened[-1] == (second.project_dir, session_id)

        fake_engine.forget(session_id)
        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace) as third:
            third.alice.send_message(thread_id, "and now?")
            await emulator.wait_for_message(thread_id, said("echo: and now?"))
            new_session = fake_engine.prompts[2].session_id
            assert new_session != session_id
            lines = bot_paragraphs(emulator, thread_id)
            notices = [line for line in lines if "no longer had this thread's session" in line]
            assert len(notices) == 1
            assert lines.index(notices[0]) < lines.index("echo: and now?")
            record = await third.store.get_thread(int(thread_id))
            assert record is not None
            assert record.session_id == new_session


async def test_messages_sent_while_the_bot_was_away_are_answered_after_resuming(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            workspace = first.workspace
            message = first.alice.send_message(first.channel_id, "before")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("echo: before"))
            await first.connection.shard.close(resumable=True)  # as an in-place restart does
        # The bot is away: Discord keeps these and replays them on RESUME, before RESUMED,
        # and sends no GUILD_CREATE; the bot must still know who may talk to it.
        first.alice.send_message(thread_id, "while away")
        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace):
            await emulator.wait_for_message(thread_id, said("echo: while away"))
            assert len(emulator.gateway.resumes) == 1
