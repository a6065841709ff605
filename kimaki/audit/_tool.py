"""`query_audit`: the one tool of the private audit agent (`/audit ask`).

The tool reads the audit store through its query method only: it has no way to write, and it
sees nothing else of the daemon. What it may read is fixed by the daemon when the question is
asked, never by the model: an `AuditToolContext` carries the asking channel, the asker and
whether the asker may look at every channel (the bot's owner). Anyone else gets the asking
channel's rows (its threads' included) and nothing more, whatever channel the model names.

Results are bounded twice: a row limit (at most `MAX_ROWS`) and a character budget (each row's
detail cut at `DETAIL_CHARS`, the whole answer at `RESULT_CHARS`), so one question cannot pull
the whole trail into a model's context. Every result is passed through the redactor once more,
although rows are stored redacted, since what leaves here goes to a model.

The tool is only in the audit agent's tool box (`AUDIT_TOOLS`), never in the box every thread's
agent gets; and it refuses any context that is not an audit agent's, so even a composition
mistake would not open the trail to a thread's agent.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol, final

import attrs

from kimaki._redact import redact
from kimaki.agents import Question
from kimaki.audit._store import AuditRow
from kimaki.audit._when import SinceError, parse_since
from kimaki.tools import (
    ButtonChoice,
    HistoryEntry,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSpec,
    Where,
)

__all__ = [
    "AUDIT_TOOLS",
    "DETAIL_CHARS",
    "MAX_ROWS",
    "QUERY_AUDIT",
    "RESULT_CHARS",
    "AuditReader",
    "AuditToolContext",
    "format_rows",
]

DEFAULT_ROWS: Final = 20
MAX_ROWS: Final = 50
DETAIL_CHARS: Final = 400
RESULT_CHARS: Final = 12_000
_TEXT_LIMIT: Final = 200


class AuditReader(Protocol):
    """The audit store's read side; the only thing the tool is given of it."""

    async def query(
        self,
        *,
        channel_id: int | None = None,
        kinds: Sequence[str] = (),
        user_id: int | None = None,
        text: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = 50,
    ) -> Sequence[AuditRow]:
        """Rows newest first; `kinds` match by prefix."""
        ...


_REFUSED: Final = "the audit agent can only read the audit trail (query_audit)"


@final
@attrs.frozen
class AuditToolContext:
    """What an audit agent's tool call acts on: the asker's view of the trail.

    It is a `ToolContext` (the tool routes and `ToolBox` need one) whose Discord side refuses
    everything: the audit agent posts nothing, uploads nothing, reads no channel. `channel_id`
    is the asking channel; `everywhere` lets the owner's questions read every channel.
    """

    reader: AuditReader = attrs.field(repr=False)
    channel_id: int
    asker_id: int
    directory: Path
    data_dir: Path
    everywhere: bool = False

    @property
    def thread_id(self) -> int:
        """No thread: the question came from a command (0 in the tool box's log lines)."""
        return 0

    async def post(self, content: str, *, where: Where = "thread") -> int:
        raise ToolError(_REFUSED)

    async def upload(self, path: Path, data: bytes, content: str | None) -> int:
        raise ToolError(_REFUSED)

    async def buttons(self, prompt: str, buttons: Sequence[ButtonChoice]) -> int:
        raise ToolError(_REFUSED)

    async def ask(self, questions: Sequence[Question]) -> Sequence[Sequence[str]] | None:
        raise ToolError(_REFUSED)

    async def history(
        self, *, where: Where, limit: int, before: int | None
    ) -> Sequence[HistoryEntry]:
        raise ToolError(_REFUSED)


def _time(arguments: Mapping[str, Any], name: str, *, now: float) -> float | None:
    """`since` / `until` as `/audit` reads them (`kimaki.audit._when`); what is wrong goes
    back to the model."""
    text = _text(arguments, name)
    if text is None:
        return None
    try:
        return parse_since(text, now=now)
    except SinceError as exc:
        raise ToolError(f"`{name}`: {exc}") from None


def _snowflake(arguments: Mapping[str, Any], name: str) -> int | None:
    value = arguments.get(name)
    if value is None or value == "":
        return None
    if isinstance(value, str):
        value = value.strip().removeprefix("<@").removeprefix("!").removeprefix("#")
        value = value.removesuffix(">")
        if value.isdigit():
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    raise ToolError(f"`{name}` must be a Discord id (digits, as a string), not {value!r}")


def _text(arguments: Mapping[str, Any], name: str) -> str | None:
    value = arguments.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ToolError(f"`{name}` must be a string, not {value!r}")
    value = value.strip()
    if len(value) > _TEXT_LIMIT:
        raise ToolError(f"`{name}` is longer than {_TEXT_LIMIT} characters")
    return value or None


def _kinds(arguments: Mapping[str, Any]) -> tuple[str, ...]:
    value = arguments.get("kind")
    if value is None or value == "":
        return ()
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ToolError(
            f"`kind` must be a kind or a prefix (`turn.`, `tool.called`), not {value!r}"
        )
    kinds = tuple(i.strip() for i in items if i.strip())
    if len(kinds) > 10 or any(len(k) > 60 for k in kinds):
        raise ToolError("`kind`: at most 10 kinds of at most 60 characters")
    return kinds


def _limit(arguments: Mapping[str, Any]) -> int:
    value = arguments.get("limit")
    if value is None:
        return DEFAULT_ROWS
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ToolError(f"`limit` must be a whole number from 1 to {MAX_ROWS}, not {value!r}")
    return min(value, MAX_ROWS)  # asking for more than the bound is not an error


def _channel(ctx: AuditToolContext, arguments: Mapping[str, Any]) -> int | None:
    """The channel to read: the asking one, unless the owner asks for another or for all."""
    value = arguments.get("channel")
    if isinstance(value, str) and value.strip().lower() in ("all", "*", "any"):
        if not ctx.everywhere:
            raise ToolError(
                "only this channel's trail can be read for this person; leave `channel` out"
            )
        return None
    wanted = _snowflake(arguments, "channel")
    if wanted is None or wanted == ctx.channel_id:
        return ctx.channel_id
    if not ctx.everywhere:
        raise ToolError(
            f"only channel {ctx.channel_id}'s trail can be read for this person; "
            "leave `channel` out"
        )
    return wanted


def _iso(at: float) -> str:
    return dt.datetime.fromtimestamp(at, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def format_row(row: AuditRow) -> str:
    """One row on one line: time, kind, where, who, then its detail as compact JSON."""
    parts = [_iso(row.at), row.kind]
    if row.channel_id is not None:
        parts.append(f"channel={row.channel_id}")
    if row.thread_id is not None:
        parts.append(f"thread={row.thread_id}")
    if row.user_id is not None:
        parts.append(f"user={row.user_id}")
    if row.detail:
        detail = json.dumps(dict(row.detail), ensure_ascii=False, default=str, sort_keys=True)
        parts.append(_cut(detail, DETAIL_CHARS))
    return " ".join(parts)


def format_rows(rows: Sequence[AuditRow], *, limit: int) -> str:
    """The rows oldest first (a model reads a story better forwards), within `RESULT_CHARS`;
    says when rows were left out, and how to see them."""
    if not rows:
        return "No audit events match."
    lines: list[str] = []
    size = 0
    shown = 0
    for row in rows:  # newest first: keep the newest when the budget runs out
        line = format_row(row)
        if size + len(line) + 1 > RESULT_CHARS:
            break
        lines.append(line)
        size += len(line) + 1
        shown += 1
    lines.reverse()
    head = f"{shown} audit event{'' if shown == 1 else 's'}, oldest first:"
    tail: list[str] = []
    if shown < len(rows):
        tail.append(f"({len(rows) - shown} older rows left out: too long; narrow the filters.)")
    elif len(rows) >= limit:
        oldest = _iso(rows[-1].at)
        tail.append(f"(There may be older events: ask with `until` before {oldest}.)")
    return redact("\n".join([head, *lines, *tail]))


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    if not isinstance(ctx, AuditToolContext):
        # Only the audit agent's grant resolves to an audit context.
        raise ToolError("query_audit is only available to the audit agent")
    now = time.time()
    limit = _limit(arguments)
    rows = await ctx.reader.query(
        channel_id=_channel(ctx, arguments),
        kinds=_kinds(arguments),
        user_id=_snowflake(arguments, "person"),
        text=_text(arguments, "text"),
        since=_time(arguments, "since", now=now),
        until=_time(arguments, "until", now=now),
        limit=limit,
    )
    return ToolResult(format_rows(rows[:limit], limit=limit))


QUERY_AUDIT: Final = ToolSpec(
    name="query_audit",
    description=(
        "Search kimaki's audit trail (what happened in this Discord channel: messages, "
        "commands, agent turns, tool calls, permissions, deliveries), newest events first, "
        f"at most {MAX_ROWS} per call. Each line: UTC time, kind, channel, thread, user, "
        "detail. Filter to answer the question; call again with other filters (or `until` "
        "for older events) when you need more."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "kind": {
                "type": "string",
                "description": (
                    "Event kinds or prefixes, comma-separated: `message.`, `command.invoked`, "
                    "`turn.`, `tool.called`, `permission.`, `delivery.`, `egress.`, ..."
                ),
            },
            "person": {"type": "string", "description": "A Discord user id: their events."},
            "text": {"type": "string", "description": "Words the event's detail contains."},
            "since": {
                "type": "string",
                "description": "Only events after this: 30m, 2h, 7d, 1w, or an ISO date/time.",
            },
            "until": {
                "type": "string",
                "description": "Only events before this: a span back from now or an ISO time.",
            },
            "channel": {
                "type": "string",
                "description": (
                    "Leave out: the channel the question was asked in. Another channel id or "
                    "`all` works only for the bot's owner."
                ),
            },
            "limit": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ROWS,
                "default": DEFAULT_ROWS,
                "description": "How many events (the newest that match).",
            },
        },
    },
    run=_run,
)

AUDIT_TOOLS: Final[tuple[ToolSpec, ...]] = (QUERY_AUDIT,)
"""The audit agent's whole tool box."""
