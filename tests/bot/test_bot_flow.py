"""A message in a project channel → a thread → a session → the answer, through the emulator.

Silence is asserted with an ordering barrier: the router handles messages in gateway order, so
once a later message was answered, an earlier one that got nothing was ignored for good.
"""

from __future__ import annotations

from pathlib import Path

from kimaki.bot import CONTENT_INTENT_HELP
from kimaki.store import ChannelRecord
from kimaki.testing.bot import BotHarness, paragraphs, said
from kimaki.testing.discord._state import File
from kimaki.testing.engine import FakeEngine


async def _answered(harness: BotHarness, text: str) -> str:
    """Send `text` as alice in the project channel; the thread id once the bot answered."""
    message = harness.alice.send_message(harness.channel_id, text)
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, lambda m: m["content"].startswith("echo:"))
    return thread_id


async def test_channel_message_opens_a_thread_and_answers(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    message = harness.alice.send_message(harness.channel_id, "Fix the login bug\nin app.py")
    thread_id = await harness.thread_of(message)
    assert harness.emulator.state.channels[thread_id]["name"] == "Fix the login bug"
    reply = await harness.emulator.wait_for_message(
        thread_id, lambda m: m["content"].startswith("echo:")
    )
    assert paragraphs(reply)[0] == "echo: Fix the login bug"
    [prompt] = fake_engine.prompts
    assert prompt.directory == harness.project_dir
    assert f"message id {message['id']}" in prompt.text
    assert f"thread id {thread_id}" in prompt.text
    assert f"From alice (Discord user id {harness.alice.id}" in prompt.text


async def test_thread_name_is_the_first_line_cut_to_100(harness: BotHarness) -> None:
    long_line = "word " * 60
    message = harness.alice.send_message(harness.channel_id, f"\n\n{long_line}\nsecond line")
    thread_id = await harness.thread_of(message)
    name = harness.emulator.state.channels[thread_id]["name"]
    assert len(name) <= 100
    assert name.startswith("word word")
    assert "second" not in name


async def test_thread_messages_continue_the_same_session(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    thread_id = await _answered(harness, "first")
    first_reply_count = len(harness.emulator.state.messages[thread_id])
    harness.alice.send_message(thread_id, "second")
    await harness.emulator.wait_for_message(thread_id, said("echo: second"))
    first, second = fake_engine.prompts
    assert first.session_id == second.session_id
    assert len(harness.emulator.state.messages[thread_id]) > first_reply_count


async def test_reply_to_a_message_is_quoted_in_the_prompt(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    thread_id = await _answered(harness, "start")
    bot_reply = await harness.emulator.wait_for_message(thread_id)
    harness.alice.send_message(thread_id, "why this?", reply_to=bot_reply)
    await harness.emulator.wait_for_message(thread_id, said("echo: why this?"))
    prompt = fake_engine.prompts[-1]
    assert "In reply to Kimaki" in prompt.text
    assert "> echo: start" in prompt.text


async def test_strangers_and_blocked_members_are_ignored(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    emulator = harness.emulator
    stranger = harness.stranger()
    blocked_role = emulator.create_role(harness.guild_id, "No-Kimaki")
    emulator.state.set_member_role(harness.guild_id, harness.owner.id, blocked_role["id"], True)
    role_less_bot = emulator.add_user("otherbot", guild_id=harness.guild_id, bot=True)
    ignored = [
        stranger.send_message(harness.channel_id, "from a stranger"),
        harness.owner.send_message(harness.channel_id, "from the blocked owner"),
        role_less_bot.send_message(harness.channel_id, "from a bot"),
    ]
    await _answered(harness, "from alice")
    assert [p.first_line for p in fake_engine.prompts] == ["from alice"]
    for message in ignored:
        assert "thread" not in emulator.state.messages[harness.channel_id][message["id"]]


async def test_owner_admin_and_bots_with_the_role_may_drive(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    emulator = harness.emulator
    admin_role = emulator.create_role(harness.guild_id, "Admins", permissions=1 << 3)
    admin = emulator.add_user("adam", guild_id=harness.guild_id, roles=[admin_role["id"]])
    helper_bot = emulator.add_user(
        "helperbot",
        guild_id=harness.guild_id,
        roles=[harness.workspace.kimaki_role["id"]],
        bot=True,
    )
    for actor, text in ((harness.owner, "owner"), (admin, "admin"), (helper_bot, "bot")):
        message = actor.send_message(harness.channel_id, text)
        thread_id = await harness.thread_of(message)
        await emulator.wait_for_message(thread_id, said(f"echo: {text}"))
    assert sorted(p.first_line for p in fake_engine.prompts) == ["admin", "bot", "owner"]


async def test_channels_of_another_bot_or_unmapped_are_ignored(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    emulator = harness.emulator
    other = await harness.map_channel("other-machine", tmp_path)
    await harness.store.places.put_channel(
        ChannelRecord(
            channel_id=other.channel_id,
            directory=tmp_path,
            guild_id=other.guild_id,
            app_id=other.app_id + 1,
        )
    )
    plain = emulator.create_text_channel(harness.guild_id, "random")
    theirs = harness.alice.send_message(str(other.channel_id), "for the other machine")
    chat = harness.alice.send_message(plain["id"], "just chatting")
    # Messages are routed in gateway order: once this one is answered, those were seen.
    await _answered(harness, "for us")
    assert [p.first_line for p in fake_engine.prompts] == ["for us"]
    for channel_id, sent in ((str(other.channel_id), theirs), (plain["id"], chat)):
        # Only the person's own message, no reply, no reaction, and no thread opened from it.
        assert list(emulator.state.messages[channel_id].values()) == [sent]
        assert sent["reactions"] == []
        assert not any(
            channel.get("parent_id") == channel_id for channel in emulator.state.channels.values()
        )


async def test_empty_content_gets_the_content_intent_explanation(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness.emulator.gateway.message_content = False
    message = harness.alice.send_message(harness.channel_id, "fix the build")
    reply = await harness.emulator.wait_for_message(harness.channel_id)
    assert reply["content"] == CONTENT_INTENT_HELP
    assert reply["message_reference"]["message_id"] == message["id"]
    harness.emulator.gateway.message_content = True
    await _answered(harness, "now with text")
    assert [p.first_line for p in fake_engine.prompts] == ["now with text"]
    replies = [
        m
        for m in harness.emulator.state.messages[harness.channel_id].values()
        if m["author"]["id"] == harness.emulator.bot_user["id"]
    ]
    assert len(replies) == 1


async def test_a_thread_opened_by_hand_under_a_project_gets_a_session(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    thread = harness.alice.start_thread(harness.channel_id, "by hand")
    harness.alice.send_message(thread["id"], "hello there")
    await harness.emulator.wait_for_message(thread["id"], said("echo: hello there"))
    record = await harness.store.places.get_thread(int(thread["id"]))
    assert record is not None
    assert record.session_id == fake_engine.prompts[0].session_id


async def test_attachments_become_parts_of_the_prompt(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    big = ("line of a large log\n" * 4000).encode()
    message = harness.alice.send_message(
        harness.channel_id,
        "look at these",
        files=[
            File("screen.png", png, "image/png"),
            File("notes.md", b"# Notes\nremember the milk\n", "text/markdown"),
            File("server.log", big, "text/plain"),
            File("tool.exe", b"MZ\x90\x00", "application/x-msdownload"),
        ],
    )
    thread_id = await harness.thread_of(message)
    refused = await harness.emulator.wait_for_message(
        thread_id, lambda m: "tool.exe" in m["content"]
    )
    assert "not an image or a text file" in refused["content"]
    await harness.emulator.wait_for_message(thread_id, lambda m: m["content"].startswith("echo:"))
    [prompt] = fake_engine.prompts
    assert [(f.filename, f.mime, f.data) for f in prompt.files] == [
        ("screen.png", "image/png", png)
    ]
    assert "Attached file notes.md:\n```\n# Notes\nremember the milk" in prompt.text
    saved = list((harness.project_dir.parent / "attachments").iterdir())
    assert len(saved) == 1
    assert saved[0].read_bytes() == big
    assert str(saved[0]) in prompt.text
    assert "tool.exe" not in prompt.text
