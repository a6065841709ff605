"""The audit trail's part in every turn: started, each tool call and result, ended.

`AuditTurnHook` is a turn hook (`kimaki.turn_hooks.TurnHook`). The composition root puts it last in
`Threads(hooks=...)`, so its `admit` is reached only when no other hook refused the turn: that
is when the turn starts. It only records: it never refuses, adds nothing to the prompt and
nothing to the footer.
"""

from __future__ import annotations

from typing import final

from kimaki._audit import audit
from kimaki.agents import EngineEvent, ToolFinished, ToolStarted
from kimaki.turn_hooks import NO_NOTES, TurnInfo, TurnNotes, TurnReport

__all__ = ["AuditTurnHook"]


@final
class AuditTurnHook:
    """Records `turn.started`, `tool.called`, `tool.finished` and `turn.ended`."""

    async def admit(self, info: TurnInfo) -> str | None:
        audit(
            "turn.started",
            channel_id=info.channel_id,
            thread_id=info.thread_id,
            user_id=info.author_id or None,
            engine=info.engine,
            session_id=info.session_id,
            source=info.source,
            first_turn=info.first_turn,
            prompt=info.text,
        )
        return None

    async def preamble(self, info: TurnInfo) -> str:
        return ""

    def observe(self, info: TurnInfo, event: EngineEvent) -> None:
        if isinstance(event, ToolStarted):
            audit(
                "tool.called",
                channel_id=info.channel_id,
                thread_id=info.thread_id,
                tool=event.tool,
                call_id=event.call_id,
                arguments=event.input_summary,
                title=event.title,
            )
        elif isinstance(event, ToolFinished):
            audit(
                "tool.finished",
                channel_id=info.channel_id,
                thread_id=info.thread_id,
                tool=event.tool,
                call_id=event.call_id,
                status=str(event.status),
                error=event.error,
                result=event.output,
            )

    async def ended(self, info: TurnInfo, report: TurnReport) -> TurnNotes:
        usage, tokens = report.usage, report.tokens
        audit(
            "turn.ended",
            channel_id=info.channel_id,
            thread_id=info.thread_id,
            user_id=info.author_id or None,
            engine=info.engine,
            session_id=info.session_id,
            stop_reason=report.stop_reason,
            model=report.model,
            seconds=round(report.seconds, 3),
            error=report.error,
            steps=len(usage),
            input_tokens=tokens.input,
            output_tokens=tokens.output,
            reasoning_tokens=tokens.reasoning,
            cache_read_tokens=tokens.cache_read,
            cache_write_tokens=tokens.cache_write,
            # The steps' own cost (OpenCode); an ACP agent reports the session's running total
            # instead, recorded as it came (the turn's share is in the usage rows).
            cost=round(report.step_cost, 6),
            session_cost=report.session_cost,
        )
        return NO_NOTES
