"""`query_audit`, the audit agent's only tool: its filters, its bounds, that it only reads, and
that the tool routes serve it to the audit agent's grants alone (and nothing else to them)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import trio
from mcp import types

from kimaki._audit import AuditEvent
from kimaki._control import ControlServer, control_url
from kimaki._redact import register_secret
from kimaki.agents import Grants
from kimaki.audit._agent import AuditPlaces
from kimaki.audit._store import AuditStore
from kimaki.audit._tool import (
    AUDIT_TOOLS,
    DETAIL_CHARS,
    MAX_ROWS,
    QUERY_AUDIT,
    RESULT_CHARS,
    AuditToolContext,
)
from kimaki.testing.tools import FakeToolPlaces, RecordingToolContext, relay_session
from kimaki.tools import BUILTIN_TOOLS, ToolBox, ToolResult, install_tool_routes

CHANNEL = 1_000_000_000_000_000_001
OTHER_CHANNEL = 1_000_000_000_000_000_002
THREAD = 1_000_000_000_000_000_003
ALICE = 2_000_000_000_000_000_001
BOB = 2_000_000_000_000_000_002
NOW = time.time()


def event(
    kind: str,
    ago: float,
    *,
    channel_id: int | None = CHANNEL,
    user_id: int | None = ALICE,
    thread_id: int | None = None,
    **detail: object,
) -> AuditEvent:
    return AuditEvent(
        kind,
        NOW - ago,
        channel_id=channel_id,
        thread_id=thread_id,
        user_id=user_id,
        detail=detail,
    )


TRAIL = [
    event("message.created", 7200, content="please deploy the staging build"),
    event("command.invoked", 3600, user_id=BOB, command="/abort"),
    event("turn.started", 600, thread_id=THREAD, user_id=None),
    event("turn.ended", 300, thread_id=THREAD, user_id=None, stop_reason="end_turn"),
    event("tool.called", 200, thread_id=THREAD, user_id=None, tool="bash", arguments="ls"),
    event("message.created", 100, channel_id=OTHER_CHANNEL, content="secret plans elsewhere"),
]


@pytest.fixture
async def audit_file(tmp_path: Path) -> Path:
    path = tmp_path / "data" / "audit.db"
    path.parent.mkdir()
    async with await AuditStore.open(path) as store:
        await store.write(TRAIL)
    return path


@pytest.fixture
async def reader(audit_file: Path) -> AsyncIterator[AuditStore]:
    async with await AuditStore.open_read_only(audit_file) as store:
        yield store


def context(reader: AuditStore, tmp_path: Path, *, everywhere: bool = False) -> AuditToolContext:
    return AuditToolContext(
        reader=reader,
        channel_id=CHANNEL,
        asker_id=ALICE,
        directory=tmp_path / "question",
        data_dir=tmp_path / "data",
        everywhere=everywhere,
    )


async def call(ctx: AuditToolContext, **arguments: object) -> ToolResult:
    return await ToolBox(AUDIT_TOOLS).call(ctx, "query_audit", arguments)


async def test_the_asking_channels_events_oldest_first_with_its_threads(
    reader: AuditStore, tmp_path: Path
) -> None:
    result = await call(context(reader, tmp_path))
    assert not result.is_error
    lines = result.text.splitlines()
    assert lines[0] == "5 audit events, oldest first:"
    kinds = [line.split()[1] for line in lines[1:]]
    assert kinds == [
        "message.created",
        "command.invoked",
        "turn.started",
        "turn.ended",
        "tool.called",
    ]
    assert f"thread={THREAD}" in lines[3]
    assert "secret plans elsewhere" not in result.text  # another channel's


async def test_filters_kind_person_text_since(reader: AuditStore, tmp_path: Path) -> None:
    ctx = context(reader, tmp_path)
    turns = await call(ctx, kind="turn.")
    assert [line.split()[1] for line in turns.text.splitlines()[1:]] == [
        "turn.started",
        "turn.ended",
    ]
    bobs = await call(ctx, person=str(BOB))
    assert "/abort" in bobs.text
    assert bobs.text.startswith("1 audit event,")
    deploy = await call(ctx, text="deploy")
    assert "staging build" in deploy.text
    assert deploy.text.startswith("1 audit event,")
    recent = await call(ctx, since="15m")
    assert "message.created" not in recent.text
    assert "tool.called" in recent.text
    older = await call(ctx, until="1h30m")
    assert older.text.startswith("1 audit event,")
    assert "staging" in older.text
    nothing = await call(ctx, kind="egress.")
    assert nothing.text == "No audit events match."


async def test_another_channel_only_for_the_owner(reader: AuditStore, tmp_path: Path) -> None:
    member = context(reader, tmp_path)
    refused = await call(member, channel=str(OTHER_CHANNEL))
    assert refused.is_error
    assert "only channel" in refused.text
    assert (await call(member, channel="all")).is_error
    # Naming the asking channel itself is fine.
    assert not (await call(member, channel=str(CHANNEL))).is_error

    owner = context(reader, tmp_path, everywhere=True)
    elsewhere = await call(owner, channel=str(OTHER_CHANNEL))
    assert "secret plans elsewhere" in elsewhere.text
    everything = await call(owner, channel="all")
    assert everything.text.startswith("6 audit events,")


async def test_arguments_the_model_must_fix(reader: AuditStore, tmp_path: Path) -> None:
    ctx = context(reader, tmp_path)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"since": "last tuesday"}, "is a span back from now"),
        ({"person": "alice"}, "`person` must be a Discord id"),
        ({"limit": 0}, "`limit` must be"),
        ({"kind": 5}, "`kind` must be"),
        ({"text": "x" * 500}, "longer than"),
    ]
    for arguments, expected in cases:
        result = await call(ctx, **arguments)
        assert result.is_error, (arguments, result)
        assert expected in result.text, (arguments, result)


async def test_rows_and_characters_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "audit.db"
    register_secret("sk-audit-tool-secret-0123456789", "AUDIT_TEST_KEY")
    many = [event("tool.called", 1000 - i, output="y" * 5000) for i in range(MAX_ROWS + 30)]
    many.append(event("tool.called", 1, output="key sk-audit-tool-secret-0123456789"))
    async with await AuditStore.open(path) as store:
        await store.write(many)
    async with await AuditStore.open_read_only(path) as reader:
        ctx = context(reader, tmp_path)
        result = await call(ctx, limit=1000)  # more than the bound is capped, not refused
        assert len(result.text) <= RESULT_CHARS + 200
        lines = result.text.splitlines()
        rows = [line for line in lines if " tool.called " in line]
        assert 0 < len(rows) <= MAX_ROWS
        assert all(len(line) <= DETAIL_CHARS + 120 for line in rows)
        assert "left out" in lines[-1]
        # The newest rows are the ones kept, and a secret in them is not shown.
        assert "sk-audit-tool-secret" not in result.text
        assert "[REDACTED:AUDIT_TEST_KEY]" in result.text

        # An ISO time, not a span: the trail's times are fixed when this module loads.
        thirty_seconds_before = dt.datetime.fromtimestamp(NOW - 30, dt.UTC).isoformat()
        few = await call(ctx, limit=3, since=thirty_seconds_before)
        assert few.text.startswith("1 audit event,")


async def test_the_tool_only_reads(audit_file: Path, reader: AuditStore, tmp_path: Path) -> None:
    before = await trio.Path(audit_file).read_bytes()
    ctx = context(reader, tmp_path, everywhere=True)
    for text in ["'; DELETE FROM audit_events; --", "%", "_", "\\"]:
        result = await call(ctx, text=text, channel="all")
        assert not result.is_error
    assert reader.read_only
    assert await reader.count() == len(TRAIL)
    assert await trio.Path(audit_file).read_bytes() == before


async def test_a_threads_context_cannot_use_it(tmp_path: Path) -> None:
    """Even put in a thread's box by mistake, the tool refuses a thread's context."""
    thread = RecordingToolContext(directory=tmp_path, data_dir=tmp_path / "data")
    result = await ToolBox((*BUILTIN_TOOLS, QUERY_AUDIT)).call(thread, "query_audit", {})
    assert result.is_error
    assert "only available to the audit agent" in result.text


async def test_the_audit_context_refuses_discord(reader: AuditStore, tmp_path: Path) -> None:
    ctx = context(reader, tmp_path)
    box = ToolBox(BUILTIN_TOOLS)
    cases: list[tuple[str, dict[str, Any]]] = [
        ("send_message", {"content": "hi"}),
        ("channel_history", {}),
        ("action_buttons", {"prompt": "x", "buttons": [{"label": "a"}]}),
    ]
    for name, arguments in cases:
        result = await box.call(ctx, name, arguments)
        assert result.is_error, (name, result)
        assert "only read the audit trail" in result.text, (name, result)


def _text(result: types.CallToolResult) -> str:
    return "".join(c.text for c in result.content if isinstance(c, types.TextContent))


async def test_each_grant_gets_its_own_box_over_the_tool_routes(
    nursery: trio.Nursery, reader: AuditStore, tmp_path: Path
) -> None:
    """The lock port's routes: a thread's grant is never offered `query_audit` and cannot call
    it; the audit agent's grant is offered `query_audit` only and can call nothing else."""
    thread = RecordingToolContext(directory=tmp_path / "project", data_dir=tmp_path / "data")
    normal = FakeToolPlaces({"thread-grant": thread})
    grants = Grants()
    audit_places = AuditPlaces(grants)
    ctx = context(reader, tmp_path)
    grant = grants.mint("opencode", ctx.directory)
    audit_places.open(ctx)
    control = ControlServer(port=0, data_dir=tmp_path, health=dict)
    install_tool_routes(
        control,
        ToolBox(BUILTIN_TOOLS),
        normal,
        private=[(ToolBox(AUDIT_TOOLS), audit_places)],
    )
    url = control_url(await nursery.start(control.serve))

    async with relay_session(url, "thread-grant") as session:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        assert "query_audit" not in listed
        assert "send_message" in listed
        result = await session.call_tool("query_audit", {})
        assert result.isError
        assert "no tool named 'query_audit'" in _text(result)

    async with relay_session(url, grant.token) as session:
        listed = {tool.name for tool in (await session.list_tools()).tools}
        assert listed == {"query_audit"}
        answer = await session.call_tool("query_audit", {"kind": "command."})
        assert not answer.isError
        assert "/abort" in _text(answer)
        for name in ("send_message", "channel_history", "bash", "read"):
            refused = await session.call_tool(name, {"content": "hi"})
            assert refused.isError, name
            assert "the tools are: query_audit" in _text(refused), name
    assert thread.posts == []

    # The question is over: its grant is served nothing any more.
    audit_places.close(ctx)
    async with relay_session(url, grant.token) as session:
        result = await session.call_tool("query_audit", {})
        assert result.isError
