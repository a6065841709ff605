"""Serial turns per thread: abort on a new message, arrival order (messages joining a prompt
the agent does not have yet), queueing, idle eviction, restarts."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from kimaki.testing.bot import BotHarness, bot_paragraphs, running_bot, said
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.discord._state import File
from kimaki.testing.engine import FakeEngine, RunningTurn, echo
from kimaki.testing.script import Hold, Say, Step, Tool
from kimaki.threads import INTERRUPTED


async def test_a_new_message_interrupts_the_running_turn(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    late_output = trio.Event()

    async def slow_then_echo(turn: RunningTurn) -> None:
        if "slow" in turn.prompt:
            await turn.play(Say("working on it"), Step())
            try:
                await turn.play(Hold())
            finally:
                # What an aborted agent still sends on its way out must not reach the thread
                # (saying it does not wait, so the cancelled turn can).
                await turn.play(Say("late words of the aborted turn"))
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
    async def tool_then_hang(turn: RunningTurn) -> None:
        if "first" in turn.prompt:
            await turn.play(Tool("bash", "make test"), Hold())
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

    async def gated(turn: RunningTurn) -> None:
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
            record = await third.store.places.get_thread(int(thread_id))
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


# ---- arrival order: messages join a prompt the agent does not have yet


def queued_reply(message: Mapping[str, Any]) -> bool:
    return str(message.get("content", "")).startswith("📋 Queued at position")


def origin(name: str, user: Actor, message: Mapping[str, Any], thread_id: str) -> str:
    return (
        f"<discord>From {name} (Discord user id {user.id}, message id {message['id']}, "
        f"thread id {thread_id})</discord>"
    )


async def test_two_messages_on_an_idle_thread_reach_the_agent_as_one_prompt_in_order(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    message = harness.alice.send_message(harness.channel_id, "hello")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("echo: hello"))
    fake_engine.held_until = trio.Event()  # the agent is slow to take the next prompt
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    stop = harness.alice.send_message(thread_id, "stop", files=[File("a.png", png, "image/png")])
    instead = harness.owner.send_message(
        thread_id,
        "do X instead",
        reply_to=stop,
        files=[File("notes.md", b"remember the milk\n", "text/markdown")],
    )
    # Routed in gateway order: once this one is answered, the two before it were submitted.
    harness.alice.send_message(thread_id, "then lint. queue")
    await harness.emulator.wait_for_message(thread_id, queued_reply)
    fake_engine.held_until.set()
    await harness.emulator.wait_for_message(thread_id, said("echo: then lint"))

    hello, joined, lint = fake_engine.prompts
    assert hello.first_line == "hello"
    assert joined.text == "\n\n".join(
        [
            "<discord>2 messages arrived together, in the order sent:</discord>",
            "stop",
            origin("alice", harness.alice, stop, thread_id),
            "do X instead",
            "Attached file notes.md:\n```\nremember the milk\n\n```",
            "(In reply to alice:)\n> stop",
            origin("owner", harness.owner, instead, thread_id),
        ]
    )
    assert [(f.filename, f.data) for f in joined.files] == [("a.png", png)]
    assert lint.first_line == "then lint"
    # Nothing was started and aborted for the first message alone.
    assert INTERRUPTED not in bot_paragraphs(harness.emulator, thread_id)


async def test_two_messages_on_a_busy_thread_interrupt_it_once_and_arrive_in_order(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    async def slow_then_echo(turn: RunningTurn) -> None:
        if "slow" in turn.prompt:
            await turn.play(Say("working on it"), Step(), Hold())
        await echo(turn)

    fake_engine.responder = slow_then_echo
    message = harness.alice.send_message(harness.channel_id, "slow task")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("working on it"))
    fake_engine.held_until = trio.Event()
    stop = harness.alice.send_message(thread_id, "stop")
    instead = harness.alice.send_message(thread_id, "do X instead")
    harness.alice.send_message(thread_id, "then lint. queue")
    await harness.emulator.wait_for_message(thread_id, queued_reply)
    fake_engine.held_until.set()
    await harness.emulator.wait_for_message(thread_id, said("echo: then lint"))

    texts = [p.text for p in fake_engine.prompts]
    assert len(texts) == 3
    assert texts[0].startswith("slow task")
    assert texts[1].index("stop") < texts[1].index("do X instead")
    assert f"message id {stop['id']}" in texts[1]
    assert f"message id {instead['id']}" in texts[1]
    assert texts[2].startswith("then lint")
    assert bot_paragraphs(harness.emulator, thread_id).count(INTERRUPTED) == 1


async def test_messages_replayed_after_a_resume_reach_the_agent_in_order_as_one_prompt(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            workspace = first.workspace
            message = first.alice.send_message(first.channel_id, "before")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("echo: before"))
            await first.connection.shard.close(resumable=True)  # as an in-place restart does
        # Written while the bot is away: Discord replays them in a burst on RESUME.
        sent = [first.alice.send_message(thread_id, f"part {n}") for n in range(1, 6)]
        fake_engine.held_until = trio.Event()  # the agent server is still starting
        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace) as second:
            second.alice.send_message(thread_id, "then lint. queue")
            await emulator.wait_for_message(thread_id, queued_reply)
            fake_engine.held_until.set()
            await emulator.wait_for_message(thread_id, said("echo: then lint"))
            assert len(emulator.gateway.resumes) == 1

    before, replayed, lint = fake_engine.prompts
    assert before.first_line == "before"
    assert "5 messages arrived together" in replayed.first_line
    at = [replayed.text.index(f"part {n}\n\n") for n in range(1, 6)]
    assert at == sorted(at)
    ids = [replayed.text.index(f"message id {m['id']}") for m in sent]
    assert ids == sorted(ids)
    assert lint.first_line == "then lint"
    assert INTERRUPTED not in bot_paragraphs(emulator, thread_id)


async def test_a_joined_prompt_survives_an_in_place_restart_as_one_prompt(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    async with open_discord_emulator() as emulator:
        async with running_bot(emulator, fake_engine, tmp_path) as first:
            workspace = first.workspace
            message = first.alice.send_message(first.channel_id, "before")
            thread_id = await first.thread_of(message)
            await emulator.wait_for_message(thread_id, said("echo: before"))
            fake_engine.held_until = trio.Event()
            one = first.alice.send_message(thread_id, "one")
            two = first.owner.send_message(thread_id, "two")
            first.alice.send_message(thread_id, "three. queue")
            await emulator.wait_for_message(thread_id, queued_reply)
            await first.bot.prepare_restart()
            await first.connection.shard.close(resumable=True)
        async with running_bot(emulator, fake_engine, tmp_path, workspace=workspace):
            fake_engine.held_until.set()
            await emulator.wait_for_message(thread_id, said("echo: three"))

    before, joined, three = fake_engine.prompts
    assert before.first_line == "before"
    assert joined.text.index("one") < joined.text.index("two")
    assert origin("alice", workspace.users["alice"], one, thread_id) in joined.text
    assert origin("owner", workspace.owner, two, thread_id) in joined.text
    assert three.first_line == "three"


async def test_every_message_of_a_joined_prompt_is_recorded_as_handled(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    message = harness.alice.send_message(harness.channel_id, "hello")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("echo: hello"))
    fake_engine.held_until = trio.Event()
    first = harness.alice.send_message(thread_id, "first")
    second = harness.alice.send_message(thread_id, "second")
    harness.alice.send_message(thread_id, "third. queue")
    await harness.emulator.wait_for_message(thread_id, queued_reply)
    fake_engine.held_until.set()
    await fake_engine.wait_for_prompts(2)
    # Both reached the agent in one prompt: a replay of either after a crash must not prompt
    # again.
    handled = await harness.store.handled.handled_events()
    assert {int(first["id"]), int(second["id"])} <= handled.keys()
