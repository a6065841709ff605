"""Each finished turn's row, the footer's context use and cost, and the 80/95 % notices, through
the emulator and the fake engine (its steps: OpenCode's shape; its `ContextUsage`: ACP's)."""

from __future__ import annotations

import pytest
from usage_support import footer_of, rows, turn

from kimaki.testing.bot import BotHarness
from kimaki.testing.engine import FakeEngine
from kimaki.testing.script import ContextUsage, Say, Step, TurnScript


async def test_a_turn_stores_its_steps_tokens_and_cost(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(
        TurnScript(
            Say("reading"),
            Step(input=1200, output=80, reasoning=40, cache_read=300, cache_write=20, cost=0.01),
            Say("done"),
            Step(input=1500, output=120, cost=0.0023),
        )
    )
    thread_id, lines = await turn(harness, "fix it")
    [row] = await rows(harness)
    assert (row.thread_id, row.channel_id) == (int(thread_id), harness.project.channel_id)
    assert (row.engine, row.model, row.source) == (fake_engine.name, "fake/model-1", "message")
    assert row.person_id == int(harness.alice.id)
    assert (row.input_tokens, row.output_tokens, row.reasoning_tokens) == (2700, 200, 40)
    assert (row.cache_read_tokens, row.cache_write_tokens) == (300, 20)
    assert row.cost == pytest.approx(0.0123)
    assert row.stop_reason == "end_turn"
    assert row.session_id
    # No window known: no percentage; the cost is known.
    assert footer_of(lines)[-1] == "$0.0123"
    assert not any("%" in part for part in footer_of(lines))


async def test_footer_shows_context_use_and_the_running_cost_difference(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    # ACP's shape: the window's use and the session's running cost.
    fake_engine.add_turns(
        TurnScript(Say("one"), ContextUsage(71_000, 100_000, cost=0.0123)),
        TurnScript(Say("two"), ContextUsage(74_000, 100_000, cost=0.0200)),
    )
    thread_id, lines = await turn(harness, "first")
    assert footer_of(lines)[-2:] == ["71%", "$0.0123"]
    _, lines = await turn(harness, "second", thread_id=thread_id)
    assert footer_of(lines)[-2:] == ["74%", "$0.0077"]
    first, second = await rows(harness)
    assert (second.context_used, second.context_limit) == (74_000, 100_000)
    assert (first.session_cost, second.session_cost) == (0.0123, 0.02)
    assert second.cost == pytest.approx(0.0077)


async def test_context_notices_are_said_once_each(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    used = [50, 82, 90, 96, 97, 85]
    fake_engine.add_turns(
        *(TurnScript(Say(f"turn {n}"), ContextUsage(n * 1000, 100_000)) for n in used)
    )
    thread_id: str | None = None
    notices: list[list[str]] = []
    for n in used:
        thread_id, lines = await turn(harness, f"go {n}", thread_id=thread_id)
        notices.append([line for line in lines if "context window" in line])
    assert [len(said) for said in notices] == [0, 1, 0, 1, 0, 0]
    assert "82%" in notices[1][0]
    assert "/compact" in notices[1][0]
    assert "96%" in notices[3][0]
    assert "/compact" in notices[3][0]
