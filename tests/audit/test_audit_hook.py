"""The audit hook's `turn.ended` against each engine's usage shape."""

from __future__ import annotations

from pathlib import Path

from kimaki._audit import AuditEvent, audit_sink
from kimaki.agents import Usage
from kimaki.audit import AuditTurnHook
from kimaki.turn_hooks import TurnInfo, TurnReport


class _Events:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def put_nowait(self, event: AuditEvent) -> None:
        self.events.append(event)


INFO = TurnInfo(
    thread_id=2,
    channel_id=1,
    directory=Path("/project"),
    engine="acp:fake",
    session_id="s",
    author_id=7,
    source="message",
    first_turn=False,
    text="hi",
    started_at=0.0,
)


async def test_turn_ended_adds_steps_and_keeps_an_acp_running_cost_as_reported() -> None:
    report = TurnReport(
        stop_reason="end_turn",
        model=None,
        seconds=1.0,
        usage=(
            Usage(input_tokens=100, output_tokens=10, cost=0.5),
            Usage(input_tokens=20, cache_write_tokens=3, cost=0.25),
            Usage(context_used=500, context_limit=1000, session_cost=4.0),
        ),
    )
    events = _Events()
    with audit_sink(events):
        await AuditTurnHook().ended(INFO, report)
    (ended,) = events.events
    assert ended.kind == "turn.ended"
    assert ended.detail["input_tokens"] == 120
    assert ended.detail["cache_write_tokens"] == 3
    assert ended.detail["cost"] == 0.75
    assert ended.detail["session_cost"] == 4.0
