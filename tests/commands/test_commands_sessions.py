"""`/new-session`, `/resume`, `/abort`, `/session-id`, `/queue`, `/clear-queue`."""

from __future__ import annotations

from pathlib import Path

from commands_support import (
    choices,
    command,
    commands_bot,
    ephemeral,
    opencode_bot,
)

from kimaki.bot.commands._common import IN_THREAD_ONLY
from kimaki.store import Preference
from kimaki.testing.bot import BotHarness, said
from kimaki.testing.engine import FakeEngine, RunningTurn, echo, open_fake_engine
from kimaki.testing.script import Hold


async def hang(turn: RunningTurn) -> None:
    await turn.play(Hold())


async def thread_with_turn(harness: BotHarness, engine: FakeEngine, text: str) -> str:
    """A thread started by a message whose turn has reached the engine."""
    message = harness.alice.send_message(harness.channel_id, text)
    thread_id = await harness.thread_of(message)
    await engine.wait_for_prompts(len(engine.prompts) + 1)
    return thread_id


async def test_new_session_opens_a_thread_and_prompts(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "new-session", {"prompt": "Write the docs\nall of them"})
        assert ephemeral(reply)
        thread = await harness.emulator.wait_for_thread(harness.channel_id)
        assert thread["name"] == "Write the docs"
        assert f"<#{thread['id']}>" in reply["content"]
        [prompt] = await engine.wait_for_prompts(1)
        assert prompt.first_line == "Write the docs"
        assert prompt.agent is None
        shown = await harness.emulator.wait_for_message(thread["id"])
        assert "Write the docs" in shown["content"]
        answer = await harness.emulator.wait_for_message(
            thread["id"], lambda m: "echo:" in m["content"]
        )
        assert "Write the docs" in answer["content"]


async def test_new_session_with_an_agent(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        offered = await choices(harness, "new-session", "agent", "pl")
        assert [c["value"] for c in offered] == ["plan"]
        reply = await command(harness, "new-session", {"prompt": "think first", "agent": "nope"})
        assert ephemeral(reply)
        assert "no agent `nope`" in reply["content"]
        assert engine.prompts == []

        await command(harness, "new-session", {"prompt": "think first", "agent": "plan"})
        [prompt] = await engine.wait_for_prompts(1)
        assert prompt.agent == "plan"
        stored = await harness.store.preferences.get_preference("session", prompt.session_id)
        assert stored == Preference("session", prompt.session_id, agent="plan")
        # Only this session: the channel keeps the engine's default.
        assert await harness.store.preferences.get_preference("channel", harness.channel_id) is None


async def test_abort(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "abort")
        assert reply["content"] == IN_THREAD_ONLY.format(command="abort")
        engine.responder = hang
        thread_id = await thread_with_turn(harness, engine, "loop forever")
        reply = await command(harness, "abort", channel_id=thread_id)
        assert ephemeral(reply)
        assert reply["content"] == "Stopped the running turn."
        await harness.emulator.wait_for_message(thread_id, lambda m: "nterrupted" in m["content"])
        assert engine.aborts == 1
        reply = await command(harness, "abort", channel_id=thread_id)
        assert reply["content"] == "Nothing is running in this thread."


async def test_queue_and_clear_queue(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        engine.responder = hang
        thread_id = await thread_with_turn(harness, engine, "first job")
        reply = await command(harness, "queue", {"message": "second job"}, channel_id=thread_id)
        assert not ephemeral(reply)  # the thread sees what was queued
        assert "#1 in line" in reply["content"]
        assert "second job" in reply["content"]
        reply = await command(harness, "queue", {"message": "third job"}, channel_id=thread_id)
        assert "#2 in line" in reply["content"]

        reply = await command(harness, "clear-queue", {"position": 5}, channel_id=thread_id)
        assert "no #5" in reply["content"]
        reply = await command(harness, "clear-queue", {"position": 1}, channel_id=thread_id)
        assert ephemeral(reply)
        assert "second job" in reply["content"]

        # The running turn ends; the one left in the queue runs, the dropped one never does.
        engine.responder = echo
        await command(harness, "abort", channel_id=thread_id)
        [_, queued] = await engine.wait_for_prompts(2)
        assert queued.first_line == "third job"
        await harness.emulator.wait_for_message(thread_id, lambda m: "third job" in m["content"])
        assert all("second job" not in p.text for p in engine.prompts)

        reply = await command(harness, "clear-queue", channel_id=thread_id)
        assert reply["content"] == "Nothing is queued in this thread."


async def test_session_id(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        thread_id = await thread_with_turn(harness, engine, "hello")
        session_id = engine.prompts[0].session_id
        reply = await command(harness, "session-id", channel_id=thread_id)
        assert ephemeral(reply)
        assert f"`{session_id}`" in reply["content"]
        assert "terminal" not in reply["content"]  # the fake engine has no terminal client


async def test_session_id_shows_the_opencode_terminal_command(tmp_path: Path) -> None:
    async with opencode_bot(tmp_path) as (project, _, _, harness):
        message = harness.alice.send_message(harness.channel_id, "hello")
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, lambda m: "ok" in m["content"])
        record = await harness.store.places.get_thread(int(thread_id))
        assert record is not None
        assert record.session_id.startswith("ses")
        reply = await command(harness, "session-id", channel_id=thread_id)
        assert f"--session {record.session_id}" in reply["content"]
        assert f"cd {project}" in reply["content"]
        assert "password" not in reply["content"].lower()


async def test_resume_binds_a_thread_and_replays_history(tmp_path: Path) -> None:
    async with opencode_bot(tmp_path) as (_, fake, _, harness):
        old = fake.add_session("Refactor the parser")
        old.add_message("user", "Please refactor the parser")
        old.add_message("assistant", "Done: the parser is now a state machine.")
        fake.add_session("Something else")
        elsewhere = fake.add_session("Other folder", directory=str(tmp_path))

        offered = await choices(harness, "resume", "session", "")
        assert old.id in [c["value"] for c in offered]
        assert elsewhere.id not in [c["value"] for c in offered]
        offered = await choices(harness, "resume", "session", "parser")
        assert [c["value"] for c in offered] == [old.id]
        assert offered[0]["name"].startswith("Refactor the parser · ")

        reply = await command(harness, "resume", {"session": elsewhere.id})
        assert ephemeral(reply)
        assert "no session" in reply["content"]

        reply = await command(harness, "resume", {"session": old.id})
        thread = await harness.emulator.wait_for_thread(harness.channel_id)
        assert thread["name"] == "Refactor the parser"
        assert f"<#{thread['id']}>" in reply["content"]
        record = await harness.store.places.get_thread(int(thread["id"]))
        assert record is not None
        assert record.session_id == old.id
        history = await harness.emulator.wait_for_message(
            thread["id"], lambda m: "state machine" in m["content"]
        )
        assert "history" in history["content"]
        assert "Please refactor the parser" in history["content"]

        # Writing in the thread continues that session.
        harness.alice.send_message(thread["id"], "and add tests")
        await harness.emulator.wait_for_message(thread["id"], said("ok"))
        prompts = [r for r in fake.requests if r.path.endswith("/prompt_async")]
        assert prompts[-1].path == f"/session/{old.id}/prompt_async"

        # Resuming it again points at that thread instead of opening a second one on it.
        threads_before = len(harness.emulator.state.channels)
        reply = await command(harness, "resume", {"session": old.id})
        assert ephemeral(reply)
        assert f"already runs in <#{thread['id']}>" in reply["content"]
        assert len(harness.emulator.state.channels) == threads_before


async def test_undo_without_the_capability_is_refused(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        thread_id = await thread_with_turn(harness, engine, "hello")
        for name in ("undo", "redo", "compact"):
            reply = await command(harness, name, channel_id=thread_id)
            assert ephemeral(reply)
            assert reply["content"] == f"`/{name}` is not supported by this engine (fake)."
        reply = await command(harness, "restart-agent-server")
        assert "not supported by this engine (fake)" in reply["content"]
