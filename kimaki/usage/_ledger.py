"""The usage capability's door: every finished turn's row, the footer's context and cost, the
context notices, channel budgets, and the reports `/usage` and `kimaki usage` show.

`UsageLedger` is a turn hook (`kimaki.turn_hooks.TurnHook`): it may refuse a turn in a channel
whose budget is spent, and its `TurnNotes` carry the footer's context and cost and the notices.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import tzinfo
from typing import Final, Protocol, final

import attrs

from kimaki.agents import EngineEvent
from kimaki.store import Budget, BudgetPeriod, UsageRow
from kimaki.turn_hooks import TurnInfo, TurnNotes, TurnReport
from kimaki.usage._periods import HISTORY_PERIODS, Span, budget_span, history_span, report_spans
from kimaki.usage._report import format_cost, format_history, format_report

__all__ = [
    "BUDGET_PERIODS",
    "CONTEXT_NOTICES",
    "BudgetState",
    "Owners",
    "UsageLedger",
    "UsageStore",
    "turn_row",
]

log = logging.getLogger("kimaki.usage")

BUDGET_PERIODS: Final[tuple[BudgetPeriod, ...]] = ("day", "week", "month")
_PERIOD_WORDS: Final = {"day": "daily", "week": "weekly", "month": "monthly"}
BUDGET_WARNING: Final = 0.8
CONTEXT_NOTICES: Final = (
    (
        0.95,
        "🔴 This session has used {percent}% of its context window: the agent will soon "
        "forget the start of it. Run `/compact` now to summarise it, or start a new session.",
    ),
    (
        0.80,
        "🟡 This session has used {percent}% of its context window. `/compact` summarises "
        "it to free room.",
    ),
)

# What `TurnInfo.source` says → the row's source.
_SOURCES: Final = {
    "message": "message",
    "voice": "message",
    "command": "command",
    "scheduled": "schedule",
    "resume": "resume",
}


class UsageStore(Protocol):
    """The rows and budgets (`kimaki.store.UsageRows` is one)."""

    async def add_usage(self, row: UsageRow) -> None: ...

    async def usage_rows(
        self, *, since: float, until: float | None = None, channel_id: int | None = None
    ) -> list[UsageRow]: ...

    async def last_session_usage(self, session_id: str) -> UsageRow | None: ...

    async def session_peak_context(self, session_id: str) -> float | None: ...

    async def channel_cost(self, channel_id: int, *, since: float) -> float: ...

    async def get_budget(self, channel_id: int) -> Budget | None: ...

    async def set_budget(self, budget: Budget) -> None: ...

    async def clear_budget(self, channel_id: int) -> bool: ...


class Owners(Protocol):
    """Who may spend past a budget: the bot's owner, a server Administrator."""

    async def is_owner(self, channel_id: int | None, user_id: int) -> bool: ...


@final
@attrs.frozen
class BudgetState:
    """A budget and where its current period stands."""

    budget: Budget
    span: Span
    spent: float

    @property
    def fraction(self) -> float:
        return self.spent / self.budget.amount if self.budget.amount > 0 else 1.0

    def describe(self) -> str:
        budget = self.budget
        return (
            f"{format_cost(budget.amount)} {_PERIOD_WORDS[budget.period]}: "
            f"{format_cost(self.spent)} spent {self.span.name} ({self.fraction:.0%}), "
            f"the period ends <t:{int(self.span.end)}:R>"
        )


def turn_row(
    info: TurnInfo, outcome: TurnReport, *, previous_session_cost: float | None, ended_at: float
) -> UsageRow:
    """The row of a finished turn: its steps' tokens and costs added up; its context as the
    last step left it. An engine that reports a running session cost (ACP) has the turn's
    cost as the difference from the session's previous row."""
    usage = outcome.usage
    cost = outcome.step_cost
    session_cost = outcome.session_cost
    if session_cost is not None:
        cost += max(0.0, session_cost - (previous_session_cost or 0.0))
    # The context as the last step that knew the window left it (a step without it, such as
    # a model step after an ACP `usage_update`, says nothing about the window).
    windowed = next((step for step in reversed(usage) if step.context_limit), None)
    context = windowed or (usage[-1] if usage else None)
    credits = [step.credits for step in usage if step.credits is not None]
    model = outcome.model or next((s.model for s in reversed(usage) if s.model), None)
    tokens = outcome.tokens
    return UsageRow(
        started_at=info.started_at,
        ended_at=ended_at,
        thread_id=info.thread_id,
        channel_id=info.channel_id,
        session_id=info.session_id,
        engine=info.engine,
        model=model,
        person_id=info.author_id,
        source=_SOURCES.get(info.source, info.source),
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        reasoning_tokens=tokens.reasoning,
        cache_read_tokens=tokens.cache_read,
        cache_write_tokens=tokens.cache_write,
        cost=cost,
        session_cost=session_cost,
        credits=sum(credits) if credits else None,
        context_used=context.context_tokens if context is not None else None,
        context_limit=windowed.context_limit if windowed is not None else None,
        seconds=outcome.seconds,
        stop_reason=outcome.stop_reason,
    )


@final
class UsageLedger:
    """Records turns, keeps budgets, answers reports. `zone` is the reports' timezone (where
    days and budgets' periods begin)."""

    def __init__(
        self,
        *,
        store: UsageStore,
        owners: Owners,
        zone: tzinfo,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._owners = owners
        self.zone = zone
        self._clock = clock
        # What `ended` needs of a session's earlier rows (its running cost, the fullest its
        # context has been): read from the store once, then kept, so a turn's end costs one
        # write. Every row is added through this ledger, so the copy stays true.
        self._sessions: OrderedDict[str, _SessionSoFar] = OrderedDict()

    # ---- the turn hook

    async def admit(self, info: TurnInfo) -> str | None:
        """Refuse a turn in a channel whose budget is spent, unless an owner asked."""
        if info.channel_id is None:
            return None
        state = await self.budget_state(info.channel_id)
        if state is None or state.spent < state.budget.amount:
            return None
        # The command line (no Discord author) is the machine's owner.
        if info.author_id == 0 or await self._owners.is_owner(info.channel_id, info.author_id):
            log.info("channel %d: over budget, an owner's prompt runs", info.channel_id)
            return None
        return (
            f"🛑 This channel's budget is used up ({state.describe()}). New prompts wait "
            "until then, or until an owner or a server manager changes it with `/budget`."
        )

    async def preamble(self, info: TurnInfo) -> str:
        return ""

    def observe(self, info: TurnInfo, event: EngineEvent) -> None:
        return None

    async def ended(self, info: TurnInfo, report: TurnReport) -> TurnNotes:
        """Store the turn's row; its context use and cost for the footer, and the notices."""
        so_far = await self._session_so_far(info.session_id)
        row = turn_row(
            info,
            report,
            previous_session_cost=so_far.session_cost,
            ended_at=self._clock(),
        )
        await self._store.add_usage(row)
        fraction = _context_fraction(row)
        self._remember(info.session_id, row, so_far, fraction)
        footer: list[str] = []
        lines: list[str] = []
        if fraction is not None:
            footer.append(f"{fraction:.0%}")
            notice = _context_notice(fraction, so_far.peak or 0.0)
            if notice is not None:
                lines.append(notice)
        if row.cost > 0 or row.session_cost is not None:
            footer.append(format_cost(row.cost))
        if row.credits:
            footer.append(f"{row.credits:g} credits")
        if info.channel_id is not None and row.cost > 0:
            warning = await self._budget_warning(info.channel_id, row.cost)
            if warning is not None:
                lines.append(warning)
        return TurnNotes(footer=tuple(footer), lines=tuple(lines))

    async def _session_so_far(self, session_id: str) -> _SessionSoFar:
        known = self._sessions.get(session_id)
        if known is not None:
            self._sessions.move_to_end(session_id)
            return known
        previous = await self._store.last_session_usage(session_id)
        peak = await self._store.session_peak_context(session_id)
        return _SessionSoFar(previous.session_cost if previous is not None else None, peak)

    def _remember(
        self, session_id: str, row: UsageRow, so_far: _SessionSoFar, fraction: float | None
    ) -> None:
        peak = so_far.peak if fraction is None else max(so_far.peak or 0.0, fraction)
        self._sessions[session_id] = _SessionSoFar(row.session_cost, peak)
        self._sessions.move_to_end(session_id)
        if len(self._sessions) > _SESSIONS_KEPT:
            self._sessions.popitem(last=False)

    # ---- budgets

    async def budget_state(self, channel_id: int) -> BudgetState | None:
        budget = await self._store.get_budget(channel_id)
        if budget is None:
            return None
        span = budget_span(budget.period, self._clock(), self.zone)
        spent = await self._store.channel_cost(channel_id, since=span.start)
        return BudgetState(budget, span, spent)

    async def set_budget(
        self, channel_id: int, amount: float, period: BudgetPeriod, *, by: int
    ) -> BudgetState:
        budget = Budget(channel_id, amount, period, set_at=self._clock(), set_by=by)
        await self._store.set_budget(budget)
        state = await self.budget_state(channel_id)
        assert state is not None
        return state

    async def clear_budget(self, channel_id: int) -> bool:
        return await self._store.clear_budget(channel_id)

    async def _budget_warning(self, channel_id: int, cost: float) -> str | None:
        """The line when this turn took the channel past its budget; else the 80 % line, once
        per period (the budget's record remembers which period was warned)."""
        state = await self.budget_state(channel_id)
        if state is None or state.fraction < BUDGET_WARNING:
            return None
        amount = state.budget.amount
        if state.spent >= amount > state.spent - cost:
            return (
                f"🛑 This channel has reached its budget ({state.describe()}). New prompts "
                "are refused until then (an owner's still run)."
            )
        if state.budget.warned_period == state.span.start or state.spent >= amount:
            return None
        await self._store.set_budget(attrs.evolve(state.budget, warned_period=state.span.start))
        return f"⚠️ This channel has used {state.fraction:.0%} of its budget ({state.describe()})."

    # ---- reports

    async def report(self, channel_id: int | None, person: Callable[[int], str]) -> str:
        """`/usage`: today, this week, this month, for one channel or everywhere."""
        spans = report_spans(self._clock(), self.zone)
        rows = await self._store.usage_rows(since=spans[-1].start, channel_id=channel_id)
        by_span = [
            (span, [r for r in rows if span.start <= r.ended_at < span.end]) for span in spans
        ]
        where = "in this channel" if channel_id is not None else "everywhere"
        return format_report(where, by_span, person)

    async def history(self, period: str, channel_id: int | None) -> str:
        """`/usage history`: one line per day of the period."""
        if period not in HISTORY_PERIODS:
            raise ValueError(f"unknown period {period!r}: one of {', '.join(HISTORY_PERIODS)}")
        span = history_span(period, self._clock(), self.zone)
        rows = await self._store.usage_rows(since=span.start, until=span.end, channel_id=channel_id)
        where = "in this channel" if channel_id is not None else "everywhere"
        return format_history(where, span, rows, self.zone)


_SESSIONS_KEPT: Final = 4096


@final
@attrs.frozen
class _SessionSoFar:
    session_cost: float | None
    """The running cost the session's last row carried (ACP reports a running total)."""
    peak: float | None
    """The fullest the session's context window has been, 0..1."""


def _context_fraction(row: UsageRow) -> float | None:
    if row.context_used is None or not row.context_limit:
        return None
    return row.context_used / row.context_limit


def _context_notice(fraction: float, peak: float) -> str | None:
    """The notice for the highest threshold this turn crossed for the first time."""
    for threshold, text in CONTEXT_NOTICES:
        if fraction >= threshold:
            if peak >= threshold:
                return None  # said when the session first got there
            return text.format(percent=round(fraction * 100))
    return None
