"""Asking before acting: permission buttons and question menus in the thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from kimaki.agents import Question, QuestionOption
from kimaki.testing.bot import BotHarness, bot_paragraphs, running_bot, said
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.discord._actors import iter_components
from kimaki.testing.engine import FakeEngine, RunningTurn, echo
from kimaki.testing.script import Say
from kimaki.threads import OTHER_VALUE

Json = dict[str, Any]


async def _permission_then_report(turn: RunningTurn) -> None:
    if "push" not in turn.prompt:
        await echo(turn)
        return
    reply = await turn.ask_permission("bash", ["git push origin main"], always=["git push *"])
    await turn.play(Say(f"permission: {reply}"))


def _custom_ids(message: Json) -> dict[str, str]:
    """Button label or select placeholder → custom id."""
    return {
        str(c.get("label") or c.get("placeholder")): c["custom_id"]
        for c in iter_components(message["components"])
        if "custom_id" in c
    }


async def _ask(harness: BotHarness, text: str = "push it") -> tuple[str, Json]:
    message = harness.alice.send_message(harness.channel_id, text)
    thread_id = await harness.thread_of(message)
    asked = await harness.emulator.wait_for_message(
        thread_id, lambda m: m["content"].startswith("🔐")
    )
    return thread_id, asked


async def test_permission_accepted_by_a_button(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    thread_id, asked = await _ask(harness)
    assert "**bash** wants permission: `git push origin main`" in asked["content"]
    assert "Accept always allows: `git push *`" in asked["content"]
    buttons = _custom_ids(asked)
    assert set(buttons) == {"Accept", "Accept always", "Deny"}
    # The custom id is a key into the store, not the request or thread id.
    assert all(thread_id not in custom and "perm-" not in custom for custom in buttons.values())
    click = harness.alice.click_button(asked, buttons["Accept"])
    await harness.emulator.wait_for_message(thread_id, said("permission: once"))
    await harness.emulator.wait_for_interaction_response(click)
    edited = harness.emulator.state.messages[thread_id][asked["id"]]
    assert "**✅ Accepted by alice**" in edited["content"]
    assert edited["components"] == []
    assert [reply for _, reply in fake_engine.permission_replies] == ["once"]


async def test_accept_always_and_deny_reach_the_engine(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    for label, expected in (("Accept always", "always"), ("Deny", "reject")):
        thread_id, asked = await _ask(harness, f"push {label}")
        harness.alice.click_button(asked, _custom_ids(asked)[label])
        await harness.emulator.wait_for_message(thread_id, said(f"permission: {expected}"))
    assert [reply for _, reply in fake_engine.permission_replies] == ["always", "reject"]


async def test_strangers_cannot_press_the_buttons(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    thread_id, asked = await _ask(harness)
    click = harness.stranger().click_button(asked, _custom_ids(asked)["Accept"])
    answered = await harness.emulator.wait_for_interaction_response(click)
    assert answered.response_data is not None
    assert "Kimaki role" in answered.response_data["content"]
    assert answered.response_data["flags"] & 64  # ephemeral
    assert fake_engine.permission_replies == []
    harness.alice.click_button(asked, _custom_ids(asked)["Deny"])
    await harness.emulator.wait_for_message(thread_id, said("permission: reject"))


async def test_a_key_from_another_thread_does_nothing(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    _, asked = await _ask(harness)
    other = harness.alice.send_message(harness.channel_id, "another thread")
    other_thread = await harness.thread_of(other)
    await harness.emulator.wait_for_message(other_thread, said("echo: another thread"))
    # A crafted interaction carrying the first thread's custom id, sent from the other thread.
    forged = harness.emulator.state.create_interaction(
        3,
        harness.alice.id,
        other_thread,
        {"custom_id": _custom_ids(asked)["Accept"], "component_type": 2},
    )
    answered = await harness.emulator.wait_for_interaction_response(forged)
    assert answered.response_data is not None
    assert "expired" in answered.response_data["content"]
    assert fake_engine.permission_replies == []


async def test_an_altered_choice_is_not_valid_and_the_request_stays_pending(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    thread_id, asked = await _ask(harness)
    key = _custom_ids(asked)["Accept"].rpartition("/")[0]
    # The thread's own key with a choice its buttons never offered.
    altered = harness.emulator.state.create_interaction(
        3, harness.alice.id, thread_id, {"custom_id": f"{key}/sudo", "component_type": 2}
    )
    answered = await harness.emulator.wait_for_interaction_response(altered)
    assert answered.response_data is not None
    assert answered.response_data["content"] == "This button is not valid here."
    assert fake_engine.permission_replies == []
    # The request is still pending: its real button still works.
    harness.alice.click_button(asked, _custom_ids(asked)["Accept"])
    await harness.emulator.wait_for_message(thread_id, said("permission: once"))


async def test_unanswered_permission_is_denied_after_the_timeout(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.responder = _permission_then_report
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path, permission_timeout=0.2) as harness,
    ):
        thread_id, asked = await _ask(harness)
        await emulator.wait_for_message(thread_id, said("permission: reject"))
        edited = emulator.state.messages[thread_id][asked["id"]]
        assert "⏱ Denied: no answer in" in edited["content"]
        assert edited["components"] == []
        assert any("nobody answered" in line for line in bot_paragraphs(emulator, thread_id))


async def test_a_new_message_denies_the_pending_request_and_interrupts(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _permission_then_report
    thread_id, asked = await _ask(harness)
    harness.alice.send_message(thread_id, "never mind")
    await harness.emulator.wait_for_message(thread_id, said("echo: never mind"))
    assert [reply for _, reply in fake_engine.permission_replies] == ["reject"]
    edited = harness.emulator.state.messages[thread_id][asked["id"]]
    assert "Denied: a new message interrupted the turn" in edited["content"]
    assert "permission: reject" not in bot_paragraphs(harness.emulator, thread_id)


async def test_a_pending_permission_keeps_the_runtime_and_pauses_typing(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    fake_engine.responder = _permission_then_report
    async with (
        open_discord_emulator() as emulator,
        running_bot(
            emulator, fake_engine, tmp_path, thread_idle_timeout=0.05, typing_interval=0.02
        ) as harness,
    ):
        thread_id, asked = await _ask(harness)
        asked_at = trio.current_time()
        # Ten idle timeouts and many typing intervals pass while the person thinks.
        await trio.sleep(0.5)
        assert harness.bot.threads.statistics().active_runtimes == 1
        typing_while_waiting = [
            at for channel, _, at in emulator.state.typing if channel == thread_id and at > asked_at
        ]
        assert typing_while_waiting == []
        harness.alice.click_button(asked, _custom_ids(asked)["Accept"])
        await emulator.wait_for_message(thread_id, said("permission: once"))


QUESTIONS = (
    Question(
        "Which database?",
        "Database",
        (QuestionOption("Postgres", "the usual"), QuestionOption("SQLite")),
    ),
    Question(
        "Which checks?",
        "Checks",
        (QuestionOption("lint"), QuestionOption("types"), QuestionOption("tests")),
        multiple=True,
        custom=False,
    ),
)


async def _ask_questions(turn: RunningTurn) -> None:
    if "ask" not in turn.prompt:
        await echo(turn)
        return
    answers = await turn.ask(QUESTIONS[: 1 if "one" in turn.prompt else 2])
    await turn.play(Say(f"answers: {answers}"))


async def test_questions_are_answered_from_menus(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _ask_questions
    message = harness.alice.send_message(harness.channel_id, "ask me")
    thread_id = await harness.thread_of(message)
    first = await harness.emulator.wait_for_message(thread_id, lambda m: "Database" in m["content"])
    second = await harness.emulator.wait_for_message(thread_id, lambda m: "Checks" in m["content"])
    [db_menu] = [c for c in iter_components(first["components"]) if c["type"] == 3]
    [checks_menu] = [c for c in iter_components(second["components"]) if c["type"] == 3]
    assert [o["label"] for o in db_menu["options"]] == ["Postgres", "SQLite", "Other…"]
    assert [o["label"] for o in checks_menu["options"]] == ["lint", "types", "tests"]
    assert checks_menu["max_values"] == 3
    harness.alice.select(first, db_menu["custom_id"], ["1"])
    await harness.emulator.wait_until(
        lambda: (
            "→ SQLite" in harness.emulator.state.messages[thread_id][first["id"]]["content"] or None
        )
    )
    assert fake_engine.question_answers == []  # not until every question has an answer
    harness.alice.select(second, checks_menu["custom_id"], ["0", "2"])
    await harness.emulator.wait_for_message(
        thread_id, said("answers: [['SQLite'], ['lint', 'tests']]")
    )


async def test_other_opens_a_form_for_a_free_answer(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _ask_questions
    message = harness.alice.send_message(harness.channel_id, "ask one")
    thread_id = await harness.thread_of(message)
    asked = await harness.emulator.wait_for_message(thread_id, lambda m: "Database" in m["content"])
    [menu] = [c for c in iter_components(asked["components"]) if c["type"] == 3]
    opened = harness.alice.select(asked, menu["custom_id"], [OTHER_VALUE])
    shown = await harness.emulator.wait_for_interaction_response(opened)
    assert shown.response_type == 9
    harness.alice.submit_modal(shown, {"answer": "DuckDB, embedded"})
    await harness.emulator.wait_for_message(thread_id, said("answers: [['DuckDB, embedded']]"))
    edited = harness.emulator.state.messages[thread_id][asked["id"]]
    assert "→ DuckDB, embedded" in edited["content"]


async def test_a_long_option_list_is_capped_at_discords_25(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    many = Question("Which file?", "File", tuple(QuestionOption(f"file{n}.py") for n in range(30)))

    async def ask_many(turn: RunningTurn) -> None:
        answers = await turn.ask([many])
        await turn.play(Say(f"answers: {answers}"))

    fake_engine.responder = ask_many
    message = harness.alice.send_message(harness.channel_id, "pick a file")
    thread_id = await harness.thread_of(message)
    asked = await harness.emulator.wait_for_message(thread_id, lambda m: "File" in m["content"])
    [menu] = [c for c in iter_components(asked["components"]) if c["type"] == 3]
    labels = [o["label"] for o in menu["options"]]
    assert len(labels) == 25
    assert labels[:24] == [f"file{n}.py" for n in range(24)]
    assert labels[24] == "Other…"  # the rest can still be typed
    harness.alice.select(asked, menu["custom_id"], ["23"])
    await harness.emulator.wait_for_message(thread_id, said("answers: [['file23.py']]"))


async def test_a_new_message_rejects_an_open_question(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.responder = _ask_questions
    message = harness.alice.send_message(harness.channel_id, "ask one")
    thread_id = await harness.thread_of(message)
    asked = await harness.emulator.wait_for_message(thread_id, lambda m: "Database" in m["content"])
    harness.alice.send_message(thread_id, "forget it")
    await harness.emulator.wait_for_message(thread_id, said("echo: forget it"))
    [(_, answers)] = fake_engine.question_answers
    assert answers is None  # rejected, not left hanging
    assert harness.emulator.state.messages[thread_id][asked["id"]]["components"] == []
