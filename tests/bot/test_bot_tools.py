"""Agent tools on the thread side: what a tool's call does in Discord, through the emulator and
the fake engine (the "agent" calls the tool from inside its turn, as a real one waits for a
tool's answer), in the thread's order."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from kimaki._control import ControlServer, control_url
from kimaki.agents import Grants, Question, QuestionOption, ToolGrant
from kimaki.bot import Engines
from kimaki.bot._tool_places import GrantedPlaces
from kimaki.testing.bot import BotHarness, bot_paragraphs, paragraphs, said
from kimaki.testing.daemon import free_port
from kimaki.testing.discord._actors import iter_components
from kimaki.testing.engine import FakeEngine, RunningTurn, echo
from kimaki.testing.script import Say
from kimaki.threads import BUTTONS_GONE, INTERRUPTED, OTHER_VALUE
from kimaki.tools import (
    BUILTIN_TOOLS,
    ButtonChoice,
    ToolBox,
    ToolContext,
    ToolResult,
    install_tool_routes,
)

Json = dict[str, Any]
ToolUse = Callable[[ToolContext], Awaitable[Any]]


@pytest.fixture
async def tools_harness(harness: BotHarness) -> BotHarness:
    """The harness (`compose_bot` routes the tool buttons' presses)."""
    return harness


def _tools(harness: BotHarness, turn: RunningTurn) -> ToolContext:
    tools = harness.bot.threads.tool_context(turn.session.session_id)
    assert tools is not None
    return tools


def _agent(
    harness: BotHarness, use: ToolUse, *, before: str = "", after: str = "Done."
) -> tuple[Callable[[RunningTurn], Awaitable[None]], list[Any]]:
    """A responder that says `before`, calls a tool with `use`, then says `after` (the result
    is kept); later prompts are echoed."""
    results: list[Any] = []

    async def responder(turn: RunningTurn) -> None:
        if results or "tool" not in turn.prompt:
            await echo(turn)
            return
        if before:
            await turn.play(Say(before))
        results.append(await use(_tools(harness, turn)))
        await turn.play(Say(after))

    return responder, results


async def _start(harness: BotHarness, text: str = "use the tool") -> str:
    message = harness.alice.send_message(harness.channel_id, text)
    return await harness.thread_of(message)


def _bot_messages(harness: BotHarness, channel_id: str) -> list[Json]:
    bot_id = harness.emulator.bot_user["id"]
    return sorted(
        (
            m
            for m in harness.emulator.state.messages.get(channel_id, {}).values()
            if m["author"]["id"] == bot_id
        ),
        key=lambda m: int(m["id"]),
    )


def _buttons(message: Json) -> dict[str, Json]:
    return {c["label"]: c for c in iter_components(message["components"]) if c.get("type") == 2}


def _menu(message: Json) -> Json:
    [menu] = [c for c in iter_components(message["components"]) if c.get("type") == 3]
    return menu


# ---- messages and files


async def test_a_tool_message_lands_after_the_agents_text_and_before_its_answer(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    posted = trio.Event()
    release = trio.Event()
    ids: list[int] = []

    async def responder(turn: RunningTurn) -> None:
        await turn.play(Say("Looking at the failing tests."))
        ids.append(await _tools(harness, turn).post("📣 heads-up: the build is red"))
        posted.set()
        await release.wait()  # the turn is held open
        await turn.play(Say("Fixed: one import was missing."))

    fake_engine.responder = responder
    thread_id = await _start(harness)
    await posted.wait()
    # The agent's text said before the call is out first; the tool's message is its own.
    assert bot_paragraphs(harness.emulator, thread_id) == [
        "Looking at the failing tests.",
        "📣 heads-up: the build is red",
    ]
    [tool_message] = [m for m in _bot_messages(harness, thread_id) if "heads-up" in m["content"]]
    assert int(tool_message["id"]) == ids[0]
    assert tool_message["content"] == "📣 heads-up: the build is red"
    release.set()
    await harness.emulator.wait_for_message(thread_id, said("Fixed: one import was missing."))
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines[:3] == [
        "Looking at the failing tests.",
        "📣 heads-up: the build is red",
        "Fixed: one import was missing.",
    ]


async def test_a_long_tool_message_is_split_and_an_idle_thread_gets_it_at_once(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id = await _start(harness, "hello")
    await harness.emulator.wait_for_message(thread_id, said("echo: hello"))
    [session_id] = [r.session_id for r in fake_engine.prompts]
    tools = harness.bot.threads.tool_context(session_id)
    assert tools is not None
    assert harness.bot.threads.tool_context("ses_unknown") is None
    assert tools.thread_id == int(thread_id)
    assert tools.channel_id == harness.project.channel_id
    assert tools.directory == harness.project_dir
    long_text = "\n\n".join(f"paragraph {n} " + "x" * 300 for n in range(10))
    first_id = await tools.post(long_text)
    messages = [m for m in _bot_messages(harness, thread_id) if int(m["id"]) >= first_id]
    assert int(messages[0]["id"]) == first_id
    assert len(messages) > 1
    assert all(len(m["content"]) <= 2000 for m in messages)
    assert [block for m in messages for block in paragraphs(m)] == long_text.split("\n\n")


async def test_a_tool_message_can_go_to_the_project_channel(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness

    async def to_channel(tools: ToolContext) -> int:
        return await tools.post("🚀 v1.2 is released", where="channel")

    fake_engine.responder, results = _agent(harness, to_channel)
    thread_id = await _start(harness)
    await harness.emulator.wait_for_message(thread_id, said("Done."))
    announced = await harness.emulator.wait_for_message(
        harness.channel_id, lambda m: m["content"] == "🚀 v1.2 is released"
    )
    assert int(announced["id"]) == results[0]
    assert "🚀 v1.2 is released" not in bot_paragraphs(harness.emulator, thread_id)


async def test_a_tool_uploads_a_file_in_order(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness

    async def upload(tools: ToolContext) -> int:
        return await tools.upload(Path("reports/coverage.txt"), b"92% covered\n", "The report:")

    fake_engine.responder, results = _agent(harness, upload, before="Coverage is done.")
    thread_id = await _start(harness)
    await harness.emulator.wait_for_message(thread_id, said("Done."))
    messages = _bot_messages(harness, thread_id)
    [uploaded] = [m for m in messages if m["attachments"]]
    assert int(uploaded["id"]) == results[0]
    assert uploaded["content"] == "The report:"
    [attachment] = uploaded["attachments"]
    assert attachment["filename"] == "coverage.txt"
    assert harness.emulator.state.files[attachment["id"]].data == b"92% covered\n"
    order = [m["content"] for m in messages]
    assert order.index("Coverage is done.") < order.index("The report:")
    assert order.index("The report:") < next(i for i, c in enumerate(order) if "Done." in c)


# ---- buttons


async def _post_buttons(harness: BotHarness, fake_engine: FakeEngine) -> tuple[str, Json]:
    async def buttons(tools: ToolContext) -> int:
        return await tools.buttons(
            "Deploy to production?",
            [ButtonChoice("Deploy", "success"), ButtonChoice("Wait")],
        )

    fake_engine.responder, _ = _agent(harness, buttons, after="Waiting for your choice.")
    thread_id = await _start(harness)
    await harness.emulator.wait_for_message(thread_id, said("Waiting for your choice."))
    asked = await harness.emulator.wait_for_message(
        thread_id, lambda m: m["content"] == "Deploy to production?"
    )
    return thread_id, asked


async def test_a_press_shows_who_chose_and_becomes_a_prompt_in_order(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id, asked = await _post_buttons(harness, fake_engine)
    buttons = _buttons(asked)
    assert list(buttons) == ["Deploy", "Wait"]
    assert [b["style"] for b in buttons.values()] == [3, 2]  # success, secondary
    # Keys into the store, not the labels.
    assert all("Deploy" not in b["custom_id"] for b in buttons.values())
    click = harness.alice.click_button(asked, buttons["Deploy"]["custom_id"])
    await harness.emulator.wait_for_interaction_response(click)
    # Once the press is the agent's prompt, a later message is a turn of its own (sent before,
    # it would join the press's prompt, in order: tests/threads cover that).
    await fake_engine.wait_for_prompts(2)
    harness.alice.send_message(thread_id, "then run the smoke tests")
    await harness.emulator.wait_for_message(thread_id, said("echo: then run the smoke tests"))
    edited = harness.emulator.state.messages[thread_id][asked["id"]]
    assert edited["content"] == "Deploy to production?\n**→ Deploy** (alice)"
    assert edited["components"] == []
    # The press reached the agent as a prompt of its own text, before the later message.
    texts = "\n".join(p.text for p in fake_engine.prompts[1:])
    assert fake_engine.prompts[1].first_line == "alice pressed: Deploy"
    assert texts.index("alice pressed: Deploy") < texts.index("then run the smoke tests")
    # Answered: a second press (a stale client) is told so, and prompts nothing.
    again = harness.emulator.state.create_interaction(
        3,
        harness.alice.id,
        thread_id,
        {"custom_id": buttons["Wait"]["custom_id"], "component_type": 2},
    )
    answered = await harness.emulator.wait_for_interaction_response(again)
    assert answered.response_data is not None
    assert answered.response_data["content"] == BUTTONS_GONE
    assert answered.response_data["flags"] & 64  # ephemeral
    assert not any("pressed: Wait" in p.text for p in fake_engine.prompts)


async def test_a_strangers_press_is_refused_and_the_buttons_stay(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id, asked = await _post_buttons(harness, fake_engine)
    prompts = len(fake_engine.prompts)
    click = harness.stranger().click_button(asked, _buttons(asked)["Deploy"]["custom_id"])
    answered = await harness.emulator.wait_for_interaction_response(click)
    assert answered.response_data is not None
    assert "Kimaki role" in answered.response_data["content"]
    assert answered.response_data["flags"] & 64
    assert harness.emulator.state.messages[thread_id][asked["id"]]["components"] != []
    # Still open for someone allowed.
    harness.alice.click_button(asked, _buttons(asked)["Wait"]["custom_id"])
    await fake_engine.wait_for_prompts(prompts + 1)
    assert [p.first_line for p in fake_engine.prompts[prompts:]] == ["alice pressed: Wait"]


async def test_a_new_message_dismisses_open_buttons(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id, asked = await _post_buttons(harness, fake_engine)
    deploy = _buttons(asked)["Deploy"]["custom_id"]
    harness.alice.send_message(thread_id, "actually, not today")
    await harness.emulator.wait_for_message(thread_id, said("echo: actually, not today"))
    await harness.emulator.wait_until(
        lambda: harness.emulator.state.messages[thread_id][asked["id"]]["components"] == [] or None
    )
    dismissed = harness.emulator.state.messages[thread_id][asked["id"]]
    assert dismissed["content"].startswith("Deploy to production?\n")
    assert "dismissed" in dismissed["content"]
    late = harness.emulator.state.create_interaction(
        3, harness.alice.id, thread_id, {"custom_id": deploy, "component_type": 2}
    )
    answered = await harness.emulator.wait_for_interaction_response(late)
    assert answered.response_data is not None
    assert answered.response_data["content"] == BUTTONS_GONE
    assert not any("pressed" in p.text for p in fake_engine.prompts)


# ---- questions

DATABASE = Question(
    "Which database should the tests use?",
    "Database",
    (QuestionOption("Postgres", "the usual"), QuestionOption("SQLite")),
)


async def _ask(
    harness: BotHarness, fake_engine: FakeEngine, questions: Sequence[Question]
) -> tuple[str, Json, list[Any]]:
    async def ask(tools: ToolContext) -> Any:
        return await tools.ask(questions)

    fake_engine.responder, results = _agent(harness, ask, before="I need to know one thing.")
    thread_id = await _start(harness)
    asked = await harness.emulator.wait_for_message(thread_id, lambda m: m["components"] != [])
    return thread_id, asked, results


async def test_a_tools_question_is_answered_from_its_menu(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id, asked, results = await _ask(harness, fake_engine, [DATABASE])
    # After what the agent said first.
    assert bot_paragraphs(harness.emulator, thread_id)[0] == "I need to know one thing."
    assert paragraphs(asked)[0] == "❓ **Database**\nWhich database should the tests use?"
    menu = _menu(asked)
    assert [o["label"] for o in menu["options"]] == ["Postgres", "SQLite", "Other…"]
    harness.alice.select(asked, menu["custom_id"], ["1"])
    await harness.emulator.wait_for_message(thread_id, said("Done."))
    assert results == [[["SQLite"]]]
    assert fake_engine.question_answers == []  # the tool's answer, not the engine's
    edited = harness.emulator.state.messages[thread_id][asked["id"]]
    assert "**→ SQLite** (alice)" in edited["content"]
    assert edited["components"] == []


async def test_a_question_without_options_takes_a_free_answer(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    free = Question("What should the release be called?", "Name", ())
    thread_id, asked, results = await _ask(harness, fake_engine, [free])
    menu = _menu(asked)
    assert [o["value"] for o in menu["options"]] == [OTHER_VALUE]
    opened = harness.alice.select(asked, menu["custom_id"], [OTHER_VALUE])
    shown = await harness.emulator.wait_for_interaction_response(opened)
    assert shown.response_type == 9  # the form
    harness.alice.submit_modal(shown, {"answer": "Blue Heron"})
    await harness.emulator.wait_for_message(thread_id, said("Done."))
    assert results == [[["Blue Heron"]]]


async def test_a_queued_message_dismisses_a_tools_question(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id, asked, results = await _ask(harness, fake_engine, [DATABASE])
    harness.alice.send_message(thread_id, "skip that. queue")
    await harness.emulator.wait_for_message(thread_id, said("echo: skip that"))
    assert results == [None]  # "dismissed", and the agent went on
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines.index("Done.") < lines.index("echo: skip that")
    await harness.emulator.wait_until(
        lambda: harness.emulator.state.messages[thread_id][asked["id"]]["components"] == [] or None
    )


async def test_a_new_message_ends_a_tools_question_and_interrupts(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id, asked, _ = await _ask(harness, fake_engine, [DATABASE])
    menu = _menu(asked)["custom_id"]
    harness.alice.send_message(thread_id, "forget it")
    await harness.emulator.wait_for_message(thread_id, said("echo: forget it"))
    await harness.emulator.wait_until(
        lambda: harness.emulator.state.messages[thread_id][asked["id"]]["components"] == [] or None
    )
    # A client that still shows the menu.
    late = harness.emulator.state.create_interaction(
        3, harness.alice.id, thread_id, {"custom_id": menu, "component_type": 3, "values": ["0"]}
    )
    answered = await harness.emulator.wait_for_interaction_response(late)
    assert answered.response_data is not None
    assert answered.response_data["content"] == "This question is no longer open."
    lines = bot_paragraphs(harness.emulator, thread_id)
    assert lines.index(INTERRUPTED) < lines.index("echo: forget it")
    assert "Done." not in lines  # what the interrupted agent said after is dropped
    assert fake_engine.question_answers == []


# ---- history


async def test_history_pages_through_the_thread_and_reads_the_channel(
    tools_harness: BotHarness, fake_engine: FakeEngine
) -> None:
    harness = tools_harness
    thread_id = await _start(harness, "first")
    await harness.emulator.wait_for_message(thread_id, said("echo: first"))
    for text in ("second", "third"):
        harness.alice.send_message(thread_id, text)
        await harness.emulator.wait_for_message(thread_id, said(f"echo: {text}"))
    [session_id] = {r.session_id for r in fake_engine.prompts}
    tools = harness.bot.threads.tool_context(session_id)
    assert tools is not None
    everything = await tools.history(where="thread", limit=50, before=None)
    contents = [entry.content for entry in everything]
    # Newest first: the bot's echoes and alice's messages, as they were written.
    assert [c.split("\n\n")[0] for c in contents[:4]] == [
        "echo: third",
        "third",
        "echo: second",
        "second",
    ]
    assert {entry.author for entry in everything} >= {"alice"}
    assert all(entry.time.endswith("+00:00") for entry in everything)
    first_page = await tools.history(where="thread", limit=2, before=None)
    second_page = await tools.history(where="thread", limit=2, before=first_page[-1].message_id)
    assert [e.message_id for e in (*first_page, *second_page)] == [
        e.message_id for e in everything[:4]
    ]
    channel = await tools.history(where="channel", limit=5, before=None)
    assert [entry.content for entry in channel] == ["first"]
    assert channel[0].author == "alice"


# ---- the built-in tools, through the box the daemon serves


async def test_the_builtin_tools_act_on_the_calling_sessions_thread(
    tools_harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    harness = tools_harness
    # A project outside the data dir (the harness's own lives in it, where tools cannot read).
    project_dir = tmp_path / "app"
    project_dir.mkdir()
    (project_dir / "notes.md").write_text("# Notes\n")
    project = await harness.map_channel("app", project_dir)
    box = ToolBox(BUILTIN_TOOLS)
    results: list[ToolResult] = []

    async def responder(turn: RunningTurn) -> None:
        tools = _tools(harness, turn)
        await turn.play(Say("Sending the notes."))
        results.append(await box.call(tools, "send_file", {"path": "notes.md"}))
        results.append(await box.call(tools, "send_message", {"content": "notes are up"}))
        await turn.play(Say("Done."))

    fake_engine.responder = responder
    message = harness.alice.send_message(str(project.channel_id), "share the notes")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("Done."))
    assert [result.is_error for result in results] == [False, False], results
    messages = _bot_messages(harness, thread_id)
    [with_file] = [m for m in messages if m["attachments"]]
    assert with_file["attachments"][0]["filename"] == "notes.md"
    order = [m["id"] for m in messages]
    [note] = [m for m in messages if m["content"] == "notes are up"]
    assert order.index(with_file["id"]) < order.index(note["id"])
    assert bot_paragraphs(harness.emulator, thread_id)[0] == "Sending the notes."


async def test_a_grant_acts_only_in_its_own_sessions_thread_over_the_lock_port(
    tools_harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    """The daemon's side as the relay reaches it: `/tools/call` with a session's grant posts in
    that session's thread, whatever the arguments say; a revoked grant is refused."""
    harness = tools_harness
    grants = Grants()
    control = ControlServer(port=free_port(), data_dir=tmp_path, health=dict)
    engines = Engines({fake_engine.name: fake_engine}, default=fake_engine.name)
    places = GrantedPlaces(grants, engines, harness.bot.threads)
    held, both_running = trio.Event(), trio.Event()
    sessions: dict[str, str] = {}

    async def responder(turn: RunningTurn) -> None:
        name = "first" if "first" in turn.prompt else "second"
        sessions[name] = turn.session.session_id
        if len(sessions) == 2:
            both_running.set()
        await held.wait()
        await turn.play(Say(f"done: {name}"))

    fake_engine.responder = responder
    async with trio.open_nursery() as nursery:
        port = await nursery.start(control.serve)
        install_tool_routes(control, ToolBox(BUILTIN_TOOLS), places)
        first = await _start(harness, "first")
        second = await _start(harness, "second")
        await both_running.wait()
        tokens = {}
        for text, session_id in sessions.items():
            grant = grants.mint(fake_engine.name, harness.project_dir)
            grant.session_id = session_id
            tokens[text] = grant

        async def call(grant: ToolGrant, arguments: Json) -> httpx.Response:
            async with httpx.AsyncClient(base_url=control_url(port)) as client:
                return await client.post(
                    "/tools/call",
                    json={"name": "send_message", "arguments": arguments},
                    headers={"Authorization": f"Bearer {grant.token}"},
                )

        answer = await call(tokens["first"], {"content": "from the first", "thread": second})
        assert answer.status_code == 200, answer.text
        assert answer.json()["isError"] is False
        await harness.emulator.wait_for_message(first, said("from the first"))
        grants.revoke(tokens["second"])
        refused = await call(tokens["second"], {"content": "from the second"})
        assert refused.status_code == 401
        held.set()
        await harness.emulator.wait_for_message(second, said("done: second"))
        nursery.cancel_scope.cancel()
    assert "from the first" not in bot_paragraphs(harness.emulator, second)
    assert "from the second" not in bot_paragraphs(harness.emulator, second)
