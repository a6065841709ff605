"""`/usage` against the stored rows, and `/budget`: the warning, the refusal, an owner's
override, and who may change a budget."""

from __future__ import annotations

import time

from usage_support import rows, slash, turn

from kimaki.store import UsageRow
from kimaki.testing.bot import BotHarness, bot_paragraphs
from kimaki.testing.engine import FakeEngine
from kimaki.testing.script import ContextUsage, Say, Step, TurnScript
from kimaki.usage import format_cost, format_tokens, totals


def _row(channel_id: int, *, ended_at: float, cost: float, model: str, person: int) -> UsageRow:
    return UsageRow(
        started_at=ended_at - 5,
        ended_at=ended_at,
        thread_id=1,
        channel_id=channel_id,
        session_id="ses-old",
        engine="opencode",
        model=model,
        person_id=person,
        source="schedule",
        input_tokens=1000,
        output_tokens=250,
        cost=cost,
        seconds=5,
    )


async def test_usage_summary_equals_the_sums_of_the_rows(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(
        TurnScript(Say("a"), Step(input=1234, output=56, cost=0.0101)),
        TurnScript(Say("b"), Step(input=4321, output=65, cache_read=900, cost=0.0202)),
    )
    thread_id, _ = await turn(harness, "one")
    await turn(harness, "two", thread_id=thread_id, actor=harness.owner)
    # Another channel's turn, and one long ago: neither in this channel's month.
    other = await harness.map_channel("other", harness.project_dir)
    await harness.store.usage.add_usage(
        _row(other.channel_id, ended_at=time.time(), cost=5.0, model="x/big", person=7)
    )
    await harness.store.usage.add_usage(
        _row(harness.project.channel_id, ended_at=1e9, cost=9.0, model="x/old", person=7)
    )
    mine = [r for r in await rows(harness, harness.project.channel_id) if r.ended_at > 1e9]
    summed = totals(mine)
    assert summed.turns == 2
    text = await slash(harness, "usage", "summary")
    expected = f"2 turns · {format_tokens(summed.tokens)} tokens · {format_cost(summed.cost)}"
    assert f"Today: {expected}" in text
    assert f"This month: {expected}" in text
    assert "x/big" not in text
    assert "x/old" not in text
    assert f"<@{harness.alice.id}>" in text
    assert f"<@{harness.owner.id}>" in text
    # Everywhere: an owner's question, with the other channel's turn in it.
    refused = await slash(harness, "usage", "summary", {"everywhere": True})
    assert "Only the server's owner" in refused
    everywhere = await slash(harness, "usage", "summary", {"everywhere": True}, actor=harness.owner)
    assert "x/big" in everywhere
    assert f"This month: 3 turns · {format_cost(summed.cost + 5.0)}" in everywhere.replace(
        f" · {format_tokens(summed.tokens + 1250)} tokens", ""
    )


async def test_usage_history_is_a_table_of_days(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    fake_engine.add_turns(TurnScript(Say("a"), Step(input=100, output=10, cost=0.5)))
    await turn(harness, "one")
    text = await slash(harness, "usage", "history", {"period": "7d"})
    assert "the last 7 days" in text
    table = text.split("```")[1].strip().splitlines()
    assert table[0].split() == ["day", "turns", "tokens", "cost"]
    assert table[-1].split() == ["total", "1", "110", "$0.5000"]
    assert len(table) == 3  # today's line, then the total


async def test_budget_warns_refuses_and_lets_an_owner_through(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    refused = await slash(harness, "budget", "set", {"amount": 0.05, "period": "day"})
    assert "Only the server's owner" in refused
    answer = await slash(
        harness, "budget", "set", {"amount": 0.05, "period": "day"}, actor=harness.owner
    )
    assert "$0.0500 daily" in answer
    # Running session costs (ACP's shape): 0.042, then 0.052 in all.
    fake_engine.add_turns(
        TurnScript(Say("a"), ContextUsage(1000, 100_000, cost=0.042)),
        TurnScript(Say("b"), ContextUsage(2000, 100_000, cost=0.052)),
        TurnScript(Say("owner's")),
    )
    thread_id, lines = await turn(harness, "one")
    assert any(line.startswith("⚠️ This channel has used 84% of its budget") for line in lines)
    _, lines = await turn(harness, "two", thread_id=thread_id)
    assert any(line.startswith("🛑 This channel has reached its budget") for line in lines)
    assert not any("84%" in line for line in lines)  # the warning is said once
    # Over budget: alice's prompt is refused in the thread, nothing is sent.
    prompts = len(fake_engine.prompts)
    harness.alice.send_message(thread_id, "three")
    await harness.emulator.wait_for_message(
        thread_id, lambda m: "budget is used up" in m["content"]
    )
    assert len(fake_engine.prompts) == prompts
    shown = await slash(harness, "budget", "show", channel_id=thread_id)
    assert "$0.0520 spent today (104%)" in shown
    # The owner's prompt always runs.
    _, lines = await turn(harness, "go anyway", thread_id=thread_id, actor=harness.owner)
    assert len(fake_engine.prompts) == prompts + 1
    # Cleared: alice is back.
    assert "Removed" in await slash(harness, "budget", "clear", actor=harness.owner)
    fake_engine.add_turns(TurnScript(Say("back")))
    await turn(harness, "four", thread_id=thread_id)
    assert "back" in bot_paragraphs(harness.emulator, thread_id)


async def test_budget_refuses_bad_amounts(harness: BotHarness) -> None:
    text = await slash(
        harness, "budget", "set", {"amount": 0.001, "period": "week"}, actor=harness.owner
    )
    assert text.startswith("The amount is dollars per period, from $0.0100")
    assert await harness.store.usage.get_budget(harness.project.channel_id) is None


async def test_an_administrator_runs_past_a_spent_budget(
    harness: BotHarness, fake_engine: FakeEngine
) -> None:
    admins = harness.emulator.create_role(harness.guild_id, "Admins", permissions=1 << 3)
    bob = harness.emulator.add_user("bob", guild_id=harness.guild_id, roles=[admins["id"]])
    await harness.store.usage.add_usage(
        _row(harness.project.channel_id, ended_at=time.time(), cost=1.0, model="x", person=7)
    )
    await slash(harness, "budget", "set", {"amount": 0.5, "period": "month"}, actor=harness.owner)
    fake_engine.add_turns(TurnScript(Say("admin's turn")))
    thread_id, _ = await turn(harness, "go", actor=bob)
    assert "admin's turn" in bot_paragraphs(harness.emulator, thread_id)
    refused = harness.alice.send_message(harness.channel_id, "me too")
    alices = await harness.thread_of(refused)
    await harness.emulator.wait_for_message(alices, lambda m: "budget is used up" in m["content"])
