"""`/undo`, `/redo`, `/compact`, `/restart-agent-server` against the OpenCode engine (its
fake server), and `/diff` on a real git repository."""

from __future__ import annotations

from pathlib import Path

import pytest
from commands_support import (
    command,
    commands_bot,
    ephemeral,
    git_identity,
    make_repository,
    opencode_bot,
)

from kimaki.agents import ServerState
from kimaki.testing.bot import BotHarness, said
from kimaki.testing.engine import open_fake_engine
from kimaki.testing.opencode import FakeOpenCode
from kimaki.testing.script import Hold, Say, TurnScript

__all__ = ["git_identity"]

pytestmark = pytest.mark.usefixtures("git_identity")


async def turn(harness: BotHarness, thread_or_channel: str, text: str, reply: str) -> str:
    """Write `text`, wait for the agent's `reply`; the thread's id."""
    message = harness.alice.send_message(thread_or_channel, text)
    thread_id = thread_or_channel
    if thread_or_channel == harness.channel_id:
        thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said(reply))
    return thread_id


def revert_point(fake: FakeOpenCode, session_id: str) -> str | None:
    return fake.sessions[session_id].revert


def user_messages(fake: FakeOpenCode, session_id: str) -> list[str]:
    return [
        m["info"]["id"] for m in fake.sessions[session_id].messages if m["info"]["role"] == "user"
    ]


async def test_undo_and_redo(tmp_path: Path) -> None:
    async with opencode_bot(tmp_path) as (_, fake, _, harness):
        fake.add_turns(TurnScript(Say("one")), TurnScript(Say("two")))
        thread_id = await turn(harness, harness.channel_id, "first step", "one")
        await turn(harness, thread_id, "second step", "two")
        record = await harness.store.places.get_thread(int(thread_id))
        assert record is not None
        first, second = user_messages(fake, record.session_id)

        reply = await command(harness, "undo", channel_id=thread_id)
        assert not ephemeral(reply)  # the thread sees what was taken back
        assert "Undid the last turn (“second step”" in reply["content"]
        assert revert_point(fake, record.session_id) == second
        reply = await command(harness, "undo", channel_id=thread_id)
        assert "“first step”" in reply["content"]
        assert revert_point(fake, record.session_id) == first
        reply = await command(harness, "undo", channel_id=thread_id)
        assert reply["content"] == "Nothing to undo in this session."

        reply = await command(harness, "redo", channel_id=thread_id)
        assert "Brought back" in reply["content"]
        assert revert_point(fake, record.session_id) == second
        await command(harness, "redo", channel_id=thread_id)
        assert revert_point(fake, record.session_id) is None
        reply = await command(harness, "redo", channel_id=thread_id)
        assert "Nothing to redo" in reply["content"]

        reply = await command(harness, "undo")
        assert ephemeral(reply)
        assert "session thread" in reply["content"]


async def test_compact_uses_the_sessions_model(tmp_path: Path) -> None:
    async with opencode_bot(tmp_path) as (_, fake, _, harness):
        thread_id = await turn(harness, harness.channel_id, "hello", "ok")
        record = await harness.store.places.get_thread(int(thread_id))
        assert record is not None
        reply = await command(harness, "compact", channel_id=thread_id)
        assert not ephemeral(reply)
        assert "Compacted" in reply["content"]
        assert fake.sessions[record.session_id].summaries == [
            {"providerID": "fake", "modelID": "fake-model"}
        ]


async def test_restart_agent_server_ends_the_running_turn(tmp_path: Path) -> None:
    async with opencode_bot(tmp_path) as (project, fake, engine, harness):
        fake.add_turns(TurnScript(Say("working"), Hold()))
        message = harness.alice.send_message(harness.channel_id, "long job")
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, lambda m: "working" in m["content"])
        server = engine.server(project)
        before = server.statistics()
        reply = await command(harness, "restart-agent-server", channel_id=thread_id)
        assert ephemeral(reply)
        assert "Restarted the agent server" in reply["content"]
        after = server.statistics()
        assert server.state is ServerState.READY
        assert after.starts == before.starts + 1
        assert after.pid != before.pid
        await harness.emulator.wait_for_message(thread_id, lambda m: "restarted" in m["content"])


async def test_diff_is_an_attachment(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project, {"app.py": "print('hello')\n"})
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "diff")
        assert "No uncommitted changes" in reply["content"]

        (project / "app.py").write_text("print('hello, world')\n")
        (project / "new.txt").write_text("brand new\n")
        reply = await command(harness, "diff")
        assert not ephemeral(reply)
        assert "2 file(s)" in reply["content"]
        [attachment] = reply["attachments"]
        assert attachment["filename"] == "project.diff"
        data = harness.emulator.state.files[attachment["id"]].data.decode()
        assert "-print('hello')" in data
        assert "+print('hello, world')" in data
        assert "+brand new" in data
        # Nothing was staged or changed by looking.
        assert (project / "app.py").read_text() == "print('hello, world')\n"


async def test_diff_outside_git(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "diff")
        assert ephemeral(reply)
        assert "not a git repository" in reply["content"]
