"""The audit trail of a running bot: what people do in Discord and what the bot's turns do,
recorded through the emulator and the fake engine."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from audit_support import ensure_commands, kind, wait_for_rows

from kimaki.schedules import NewTask
from kimaki.store import ServerPolicy
from kimaki.testing.bot import BotHarness, running_bot, said
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.discord._actors import iter_components
from kimaki.testing.discord._world import File
from kimaki.testing.engine import FakeEngine, RunningTurn, echo
from kimaki.testing.script import Say, Step, Tool, TurnScript


@pytest.fixture
async def audited(fake_engine: FakeEngine, tmp_path: Path) -> AsyncIterator[BotHarness]:
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path / "data", audit=True) as running,
    ):
        yield running


async def test_messages_created_edited_and_deleted(audited: BotHarness) -> None:
    alice = audited.alice
    message = alice.send_message(
        audited.channel_id,
        "look at this",
        files=[File("notes.txt", b"hello\n", "text/plain")],
    )
    thread_id = await audited.thread_of(message)
    (created,) = await wait_for_rows(audited.audit, kind("message.created"))
    assert created.channel_id == int(audited.channel_id)
    assert created.thread_id is None
    assert created.user_id == int(alice.id)
    assert created.detail["content"] == "look at this"
    assert created.detail["attachments"] == [{"name": "notes.txt", "type": "text/plain", "size": 6}]
    (thread,) = await wait_for_rows(audited.audit, kind("thread.created"))
    assert (thread.channel_id, thread.thread_id) == (int(audited.channel_id), int(thread_id))

    in_thread = alice.send_message(thread_id, "and this")
    await wait_for_rows(
        audited.audit, lambda row: row.kind == "message.created" and row.thread_id is not None
    )
    alice.edit_message(in_thread, "and this, edited")
    (edited,) = await wait_for_rows(audited.audit, kind("message.edited"))
    assert (edited.channel_id, edited.thread_id) == (int(audited.channel_id), int(thread_id))
    assert edited.detail["content"] == "and this, edited"
    alice.delete_message(in_thread)
    (deleted,) = await wait_for_rows(audited.audit, kind("message.deleted"))
    assert deleted.detail["message_id"] == int(in_thread["id"])
    assert deleted.thread_id == int(thread_id)
    # The bot's own replies are deliveries, not recorded here.
    created_rows = await audited.audit.store.query(kinds=["message.created"])  # type: ignore[union-attr]
    assert {row.user_id for row in created_rows} == {int(alice.id)}


async def test_messages_outside_project_channels_are_not_recorded(audited: BotHarness) -> None:
    other = audited.emulator.create_text_channel(audited.guild_id, "random")
    audited.alice.send_message(str(other["id"]), "not a project")
    audited.alice.send_message(audited.channel_id, "a project")
    rows = await wait_for_rows(audited.audit, kind("message.created"))
    assert [row.detail["content"] for row in rows] == ["a project"]


async def test_a_turn_its_tools_and_its_usage(audited: BotHarness, fake_engine: FakeEngine) -> None:
    fake_engine.add_turns(
        TurnScript(
            Tool("bash", title="ls -la", input={"command": "ls -la"}, output="file-a\nfile-b"),
            Say("done"),
            Step(input=120, output=30, cost=0.25),
        )
    )
    message = audited.alice.send_message(audited.channel_id, "list the files")
    thread_id = int(await audited.thread_of(message))
    (ended,) = await wait_for_rows(audited.audit, kind("turn.ended"))
    assert (ended.channel_id, ended.thread_id, ended.user_id) == (
        int(audited.channel_id),
        thread_id,
        int(audited.alice.id),
    )
    assert ended.detail["stop_reason"] == "end_turn"
    assert ended.detail["input_tokens"] == 120
    assert ended.detail["output_tokens"] == 30
    assert ended.detail["cost"] == 0.25
    assert isinstance(ended.detail["seconds"], float)
    (started,) = await audited.audit.store.query(kinds=["turn.started"])  # type: ignore[union-attr]
    assert str(started.detail["prompt"]).startswith("list the files")
    assert started.detail["first_turn"] is True
    (queued,) = await audited.audit.store.query(kinds=["turn.queued"])  # type: ignore[union-attr]
    assert (queued.thread_id, queued.user_id) == (thread_id, int(audited.alice.id))
    assert queued.detail["message_ids"] == [int(message["id"])]
    assert queued.at <= started.at
    (called,) = await audited.audit.store.query(kinds=["tool.called"])  # type: ignore[union-attr]
    assert called.detail["tool"] == "bash"
    assert "ls -la" in str(called.detail["arguments"])
    (finished,) = await audited.audit.store.query(kinds=["tool.finished"])  # type: ignore[union-attr]
    assert finished.detail["status"] == "completed"
    assert finished.detail["result"] == "file-a\nfile-b"
    assert finished.thread_id == thread_id


async def _permission_then_report(turn: RunningTurn) -> None:
    if "push" not in turn.prompt:
        await echo(turn)
        return
    reply = await turn.ask_permission("bash", ["git push origin main"], always=["git push *"])
    await turn.play(Say(f"permission: {reply}"))


async def test_permission_asked_and_answered_by_whom(
    audited: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    message = audited.alice.send_message(audited.channel_id, "push it")
    thread_id = await audited.thread_of(message)
    asked = await audited.emulator.wait_for_message(
        thread_id, lambda m: m["content"].startswith("🔐")
    )
    buttons = {
        str(c.get("label")): c["custom_id"]
        for c in iter_components(asked["components"])
        if "custom_id" in c
    }
    audited.alice.click_button(asked, buttons["Deny"])
    await audited.emulator.wait_for_message(thread_id, said("permission: reject"))
    (answered,) = await wait_for_rows(audited.audit, kind("permission.answered"))
    assert answered.user_id == int(audited.alice.id)
    assert answered.thread_id == int(thread_id)
    assert answered.detail["reply"] == "reject"
    (question,) = await audited.audit.store.query(kinds=["permission.asked"])  # type: ignore[union-attr]
    assert question.detail["patterns"] == ["git push origin main"]
    # Shown in the channel's trail though the events name only the thread.
    in_channel = await audited.audit.store.query(  # type: ignore[union-attr]
        channel_id=int(audited.channel_id), kinds=["permission"]
    )
    assert [row.kind for row in in_channel] == ["permission.answered", "permission.asked"]
    (used,) = await audited.audit.store.query(kinds=["component.used"])  # type: ignore[union-attr]
    assert used.detail == {"component": "permission", "choice": "reject"}
    assert used.user_id == int(audited.alice.id)


async def test_commands_invoked_answered_and_refused(audited: BotHarness) -> None:
    await ensure_commands(audited)
    audited.alice.run_command(audited.channel_id, "abort")
    (answered,) = await wait_for_rows(audited.audit, kind("command.answered"))
    assert answered.detail["command"] == "/abort"
    assert answered.detail["outcome"] == "answered"
    assert answered.user_id == int(audited.alice.id)
    (invoked,) = await audited.audit.store.query(kinds=["command.invoked"])  # type: ignore[union-attr]
    assert invoked.detail == {"command": "/abort", "options": {}}
    assert invoked.channel_id == int(audited.channel_id)

    stranger = audited.stranger()
    stranger.run_command(audited.channel_id, "abort")
    (refused,) = await wait_for_rows(audited.audit, kind("interaction.refused"))
    assert refused.user_id == int(stranger.id)
    assert refused.detail == {"command": "/abort", "reason": "no Kimaki role"}


async def test_a_full_queue_never_holds_a_turn_up(fake_engine: FakeEngine, tmp_path: Path) -> None:
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path / "data", audit=True, audit_capacity=2) as bot,
    ):
        assert bot.audit is not None
        bot.audit.queue.paused = True  # the writer is stuck: nothing leaves the queue
        message = bot.alice.send_message(bot.channel_id, "hello")
        thread_id = await bot.thread_of(message)
        await bot.emulator.wait_for_message(thread_id, said("echo: hello"))  # answered
        await bot.emulator.wait_until(lambda: (bot.audit and bot.audit.queue.dropped_total) or None)
        bot.audit.queue.resume()
        await wait_for_rows(bot.audit, kind("audit.dropped"))
        await bot.audit.queue.settle()
        rows = await bot.audit.store.query(kinds=["audit.dropped"])
        # Every dropped event is counted in the trail.
        assert sum(int(str(row.detail["count"])) for row in rows) == bot.audit.queue.dropped_total
        # What was queued before it filled is kept, oldest first.
        oldest = list(reversed(await bot.audit.store.query(limit=1000)))
        assert oldest[0].kind == "message.created"


async def test_threads_archived_and_reopened(audited: BotHarness) -> None:
    message = audited.alice.send_message(audited.channel_id, "hello")
    thread_id = await audited.thread_of(message)
    await audited.emulator.wait_for_message(thread_id, said("echo: hello"))
    audited.emulator.state.edit_channel(thread_id, {"name": "renamed"})  # not an archive
    audited.emulator.state.edit_channel(thread_id, {"archived": True})
    (archived,) = await wait_for_rows(audited.audit, kind("thread.archived"))
    assert (archived.channel_id, archived.thread_id) == (int(audited.channel_id), int(thread_id))
    audited.emulator.state.edit_channel(thread_id, {"archived": False})
    await wait_for_rows(audited.audit, kind("thread.unarchived"))
    assert audited.audit is not None
    assert len(await audited.audit.store.query(kinds=["thread.archived"])) == 1


async def test_schedule_changes(audited: BotHarness) -> None:
    schedules = audited.bot.schedules
    task = await schedules.add(
        NewTask(
            channel_id=int(audited.channel_id),
            prompt="run the nightly checks",
            when="0 3 * * *",
            created_by=int(audited.alice.id),
            created_by_name="alice",
        )
    )
    assert task.task_id is not None
    await schedules.pause(task.task_id)
    await schedules.resume(task.task_id)
    await schedules.delete(task.task_id)
    rows = await wait_for_rows(audited.audit, kind("schedule.deleted"))
    assert rows[0].detail["task_id"] == task.task_id
    assert audited.audit is not None
    changes = list(reversed(await audited.audit.store.query(kinds=["schedule"])))
    assert [row.kind for row in changes] == [
        "schedule.added",
        "schedule.paused",
        "schedule.resumed",
        "schedule.deleted",
    ]
    added = changes[0]
    assert added.user_id == int(audited.alice.id)
    assert added.channel_id == int(audited.channel_id)
    assert added.detail["schedule"] == "0 3 * * *"
    assert added.detail["prompt"] == "run the nightly checks"


async def test_mcp_policy_changes(audited: BotHarness) -> None:
    (audited.project_dir.parent / "mcp.json").write_text(
        json.dumps({"mcpServers": {"search": {"type": "http", "url": "http://127.0.0.1:9/"}}})
    )
    channel = int(audited.channel_id)
    owner = int(audited.owner.id)
    assert await audited.mcp.set_policy(
        channel, "search", ServerPolicy.only(["find"]), user_id=owner
    )
    assert await audited.mcp.set_policy(channel, "search", None, user_id=owner)
    rows = await wait_for_rows(audited.audit, lambda row: row.detail.get("mode") == "off")
    assert rows[0].kind == "mcp.policy_changed"
    assert audited.audit is not None
    (enabled, disabled) = reversed(await audited.audit.store.query(kinds=["mcp"]))
    assert enabled.detail == {"server": "search", "mode": "some", "tools": ["find"]}
    assert (enabled.channel_id, enabled.user_id) == (channel, owner)
    assert disabled.detail == {"server": "search", "mode": "off", "tools": []}
