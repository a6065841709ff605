"""What a turn looks like in the thread: tool lines, verbosity, footer, splitting, mentions."""

from __future__ import annotations

import attrs
import trio

from kimaki.agents import ModelRef
from kimaki.discord.rest import File
from kimaki.store import Preference
from kimaki.testing.bot import BotHarness, bot_paragraphs, said
from kimaki.testing.engine import FakeEngine, RunningTurn
from kimaki.testing.script import Diff, Fail, Hold, Say, Step, Stop, Tool, TurnScript
from kimaki.threads import INTERRUPTED


def _lines(word: str, count: int) -> str:
    return "".join(f"{word} {n}\n" for n in range(count))


async def _tools(turn: RunningTurn) -> None:
    await turn.play(
        Tool("read", "src/app.py"),
        Tool("bash", "git status"),
        Tool("edit", diff=Diff("src/app.py", _lines("old", 3), _lines("new", 12))),  # +12 -3
        Tool("write", diff=Diff("notes.md", None, _lines("line", 40))),  # 40 lines
        Tool("grep", "TODO", error="no such directory"),
        Say("done"),
    )


async def _run(harness: BotHarness, text: str) -> list[str]:
    message = harness.alice.send_message(harness.channel_id, text)
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("done"))
    return bot_paragraphs(harness.emulator, thread_id)


async def test_essential_verbosity_shows_changes_and_errors(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _tools
    lines = await _run(harness, "go")
    tool_lines = [line for line in lines if line.startswith("┣")]
    assert tool_lines == [
        "┣ bash _git status_",
        "┣ edit *src/app.py* (+12-3)",
        "┣ write *notes.md* (40 lines)",
        "┣ grep _TODO_ ✗ no such directory",
    ]


async def test_tools_verbosity_shows_every_tool_and_text_shows_none(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _tools
    await harness.store.places.put_channel(attrs.evolve(harness.project, verbosity="tools"))
    lines = await _run(harness, "all tools")
    assert "┣ read _src/app.py_" in lines
    await harness.store.places.put_channel(attrs.evolve(harness.project, verbosity="text"))
    lines = await _run(harness, "text only")
    # Text only, but a failed tool is always worth knowing about.
    assert [line for line in lines if line.startswith("┣")] == ["┣ grep _TODO_ ✗ no such directory"]
    assert "done" in lines


async def test_footer_names_directory_branch_model_and_agent(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    await trio.run_process(["git", "init", "-q", "-b", "trunk", str(harness.project_dir)])
    await harness.store.preferences.set_preference(
        Preference(scope="channel", scope_id=harness.channel_id, agent="plan")
    )
    await harness.store.preferences.set_preference(
        Preference(scope="global", scope_id="", model="fake/model-2")
    )
    message = harness.alice.send_message(harness.channel_id, "hello")
    thread_id = await harness.thread_of(message)
    reply = await harness.emulator.wait_for_message(thread_id, said("echo: hello"))
    footer = reply["content"].split("\n\n")[-1]
    # The model that answered (from the engine) wins over the preference it was asked for.
    assert footer == "-# project · trunk · 0s · fake/model-1 · plan"
    [prompt] = fake_engine.prompts
    assert prompt.model == ModelRef("fake", "model-2")
    assert prompt.agent == "plan"


async def test_no_footer_when_the_turn_ends_in_error(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(TurnScript(Say("trying"), Fail("the model provider said 401")))
    message = harness.alice.send_message(harness.channel_id, "go")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("⚠️ the model provider said 401"))
    assert not any(line.startswith("-#") for line in bot_paragraphs(harness.emulator, thread_id))


async def test_long_answers_are_split_with_fences_kept(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    code = "\n".join(f"print({i})" for i in range(400))
    answer = f"Here is the script:\n\n```python\n{code}\n```\n\nRun it."

    fake_engine.add_turns(TurnScript(Say(answer)))
    message = harness.alice.send_message(harness.channel_id, "write a script")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, lambda m: "Run it." in m["content"])
    bot_id = harness.emulator.bot_user["id"]
    sent = [
        m["content"]
        for m in sorted(
            harness.emulator.state.messages[thread_id].values(), key=lambda m: int(m["id"])
        )
        if m["author"]["id"] == bot_id
    ]
    assert len(sent) > 1
    assert all(len(content) <= 2000 for content in sent)
    for content in sent:
        assert content.count("```") % 2 == 0  # every chunk closes what it opens
    assert sent[1].startswith("```python\n")
    printed = [
        line for content in sent for line in content.splitlines() if line.startswith("print(")
    ]
    assert printed == code.splitlines()


async def test_agent_output_pings_users_only_and_never_unfurls(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    role = harness.emulator.create_role(harness.guild_id, "Ops")
    text = f"@everyone <@&{role['id']}> <@{harness.alice.id}> see https://example.com"

    fake_engine.add_turns(TurnScript(Say(text)))
    message = harness.alice.send_message(harness.channel_id, "ping people")
    thread_id = await harness.thread_of(message)
    reply = await harness.emulator.wait_for_message(thread_id, said(text))
    assert harness.emulator.state.notified[reply["id"]] == {
        "everyone": False,
        "users": [harness.alice.id],
        "roles": [],
    }
    assert reply["flags"] & 4  # SUPPRESS_EMBEDS


async def test_a_turn_shows_typing(harness: BotHarness, fake_engine: FakeEngine) -> None:
    message = harness.alice.send_message(harness.channel_id, "type")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("echo: type"))
    assert any(channel == thread_id for channel, _, _ in harness.emulator.state.typing)


async def test_undeliverable_message_is_skipped_and_the_turn_goes_on(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    emulator = harness.emulator

    async def two_steps(turn: RunningTurn) -> None:
        await turn.play(Say("first step"), Step())
        await emulator.wait_until(lambda: True if emulator.statistics().scripted_faults else None)
        await turn.play(Say("second step"))

    fake_engine.responder = two_steps
    harness.emulator.rest.script_error("POST /channels/{channel_id}/messages", status=403)
    message = harness.alice.send_message(harness.channel_id, "go")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("second step"))
    assert "first step" not in bot_paragraphs(emulator, thread_id)


async def test_secrets_never_reach_discord(harness: BotHarness, fake_engine: FakeEngine) -> None:
    token = harness.emulator.token
    leak = f"the .env says DISCORD_TOKEN={token} and Authorization: Bot {token}"

    fake_engine.add_turns(TurnScript(Say(leak)))
    message = harness.alice.send_message(harness.channel_id, "show me the env")
    thread_id = await harness.thread_of(message)
    reply = await harness.emulator.wait_for_message(
        thread_id, lambda m: m["content"].startswith("the .env says")
    )
    assert token not in reply["content"]
    assert "DISCORD_TOKEN=[REDACTED]" in reply["content"]


async def test_secrets_in_uploaded_text_files_are_redacted(harness: BotHarness) -> None:
    token = harness.emulator.token
    diff = f"+DISCORD_TOKEN={token}\n".encode()
    sent = await harness.rest.create_message(
        harness.project.channel_id, "the diff", files=[File("changes.diff", diff, "text/x-diff")]
    )
    [attachment] = sent.attachments
    stored = harness.emulator.state.files[str(attachment.id)].data
    assert stored == b"+DISCORD_TOKEN=[REDACTED]\n"


async def test_a_cancel_from_the_agent_is_said_and_an_interrupt_only_once(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    notice = "⚠️ the agent cancelled the turn on its side"

    async def agent_cancels_or_hangs(turn: RunningTurn) -> None:
        if "hang" in turn.prompt:
            await turn.play(Say("working"), Step(), Hold())
        # ACP `stopReason: cancelled` that nobody asked for
        await turn.play(Say("half an answer"), Stop("aborted"))

    fake_engine.responder = agent_cancels_or_hangs
    message = harness.alice.send_message(harness.channel_id, "go")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said(notice))
    assert fake_engine.aborts == 0
    # An interrupt the bot asked for is said as today, once, without the agent's notice.
    harness.alice.send_message(thread_id, "hang")
    await harness.emulator.wait_for_message(thread_id, said("working"))
    stop = harness.alice.send_message(thread_id, "again")
    await harness.emulator.wait_for_message(thread_id, said(notice), after=stop)
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines.count(INTERRUPTED) == 1
    assert lines.count(notice) == 2  # the first and the last turn, not the interrupted one
    assert lines.index("working") < lines.index(INTERRUPTED) < len(lines) - 2
