"""The bot's side of an in-place restart and of a stop: turns handed over, queues kept, the
running turn followed without posting anything twice; turns interrupted with a notice on stop."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import trio

from kimaki.store import Store
from kimaki.testing.bot import bot_paragraphs, running_bot, said
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.engine import FakeEngine, RunningTurn, echo, hold_long_jobs
from kimaki.testing.script import Hold, Say, Step, TurnScript


async def test_a_running_turn_and_the_queue_survive_a_restart(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    release = trio.Event()

    async def long_turn(turn: RunningTurn) -> None:
        if "long" not in turn.prompt:
            await echo(turn)
            return
        await turn.play(Say("part one"), Step())
        await release.wait()
        await turn.play(Say("part two"))

    fake_engine.responder = long_turn
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            workspace = first.workspace
            message = first.alice.send_message(first.channel_id, "long job")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("part one"))
            first.alice.send_message(thread_id, "afterwards. queue")
            await emulator.wait_for_message(thread_id, lambda m: "Queued" in m["content"])
            await first.bot.prepare_restart()
            await first.connection.shard.close(resumable=True)
        assert fake_engine.aborts == 0  # the agent was not told to stop

        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace):
            # The new bot follows the turn while the agent is still at it.
            assert await fake_engine.wait_for_resume() == [fake_engine.prompts[0].turn_id]
            release.set()
            await emulator.wait_for_message(thread_id, said("echo: afterwards"))
        lines = bot_paragraphs(emulator, thread_id)
        assert lines.count("part one") == 1
        assert lines.index("part one") < lines.index("part two") < lines.index("echo: afterwards")
        assert [p.first_line for p in fake_engine.prompts] == ["long job", "afterwards"]


async def test_stopping_interrupts_running_turns_with_a_notice(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.add_turns(TurnScript(Say("started"), Step(), Hold()))
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path) as harness,
    ):
        message = harness.alice.send_message(harness.channel_id, "work")
        thread_id = await harness.thread_of(message)
        await emulator.wait_for_message(thread_id, said("started"))
        await harness.bot.stop_turns("⏹ the bot is shutting down")
        assert fake_engine.aborts == 1
        assert bot_paragraphs(emulator, thread_id)[-1] == "⏹ the bot is shutting down"
        assert await harness.store.handover.running_turns() == []


async def test_a_queued_message_taken_over_is_not_prompted_again_by_its_replay(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    release = hold_long_jobs(fake_engine)
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            message = first.alice.send_message(first.channel_id, "long job")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("working"))
            first.alice.send_message(thread_id, "just before the signal. queue")
            await emulator.wait_for_message(thread_id, lambda m: "Queued" in m["content"])
            await first.bot.prepare_restart()
            stored = await first.store.gateway.load_gateway_session()
            assert stored is not None
            await first.connection.shard.close(resumable=True)
            # The stored sequence lags what was handled (it is saved in batches): Discord
            # replays the queued message to the next process, which also takes the queue.
            await first.store.gateway.save_gateway_session(attrs.evolve(stored, sequence=1))

        async with running_bot(emulator, fake_engine, tmp_path, workspace=first.workspace) as again:
            await fake_engine.wait_for_resume()
            release.set()
            await emulator.wait_for_message(thread_id, said("echo: just before the signal"))
            after = again.alice.send_message(thread_id, "after")
            await emulator.wait_for_message(thread_id, said("echo: after"), after=after)
    assert [p.first_line for p in fake_engine.prompts] == [
        "long job",
        "just before the signal",
        "after",
    ]
    assert bot_paragraphs(emulator, thread_id).count("echo: just before the signal") == 1


async def test_a_prompt_recorded_but_not_sent_when_the_process_died_is_sent_by_the_next(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """A SIGKILL after a prompt's turn is recorded and before the agent has it: the next
    process finds the agent never got the turn and sends it, once (a replay of the message is
    refused, as it is recorded as handled)."""
    at_the_kill = tmp_path / "at-the-kill.sqlite"
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path / "data") as first:
            message = first.alice.send_message(first.channel_id, "hello")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("echo: hello"))
            fake_engine.held_until = trio.Event()  # the send never completes
            first.alice.send_message(thread_id, "second")
            await fake_engine.wait_for_sends(2)
            # What the disk holds if the process is killed now.
            await trio.to_thread.run_sync(copy_database, first.store.path, at_the_kill)
            database = first.store.path
        fake_engine.held_until = None
        await trio.to_thread.run_sync(put_back, at_the_kill, database)

        async with running_bot(
            emulator, fake_engine, tmp_path / "data", workspace=first.workspace
        ) as again:
            [turn_id] = await fake_engine.wait_for_resume()
            await emulator.wait_for_message(thread_id, said("echo: second"))
            after = again.alice.send_message(thread_id, "after")
            await emulator.wait_for_message(thread_id, said("echo: after"), after=after)
    async with await Store.open(database) as store:
        assert await store.handover.running_turns() == []  # each turn forgotten once answered
    assert [p.first_line for p in fake_engine.prompts] == ["hello", "second", "after"]
    assert fake_engine.prompts[1].turn_id == turn_id  # the recorded turn, sent as recorded
    assert bot_paragraphs(emulator, thread_id).count("echo: second") == 1


def copy_database(source: Path, target: Path) -> None:
    with sqlite3.connect(source) as live, sqlite3.connect(target) as copy:
        live.backup(copy)


def put_back(copy: Path, database: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    copy.rename(database)
