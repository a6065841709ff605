"""Usage, cost and context: what every turn used, shown where people look.

`UsageLedger` is the door: a turn hook that stores one row per finished turn (tokens, cost,
context, who and where), adds the context use and cost to the turn's footer, says when a
session's context passes 80 % and 95 %, and refuses turns in a channel whose budget is spent
(an owner's prompt still runs). It also answers `/usage` and `/usage history`; the command line
reads the same rows (`kimaki.store.read_usage_rows`) and sums them the same way (`totals`).
"""

from __future__ import annotations

from kimaki.usage._ledger import (
    BUDGET_PERIODS,
    BudgetState,
    Owners,
    UsageLedger,
    UsageStore,
    turn_row,
)
from kimaki.usage._periods import HISTORY_PERIODS, Span, budget_span, history_span, report_spans
from kimaki.usage._report import (
    Totals,
    format_cost,
    format_history,
    format_report,
    format_tokens,
    grouped,
    totals,
)
from kimaki.usage._shell import parse_since, usage_command_text

__all__ = [
    "BUDGET_PERIODS",
    "HISTORY_PERIODS",
    "BudgetState",
    "Owners",
    "Span",
    "Totals",
    "UsageLedger",
    "UsageStore",
    "budget_span",
    "format_cost",
    "format_history",
    "format_report",
    "format_tokens",
    "grouped",
    "history_span",
    "parse_since",
    "report_spans",
    "totals",
    "turn_row",
    "usage_command_text",
]
