"""`/audit ask`'s private agent: one engine per question in an empty temporary directory,
`query_audit` its only tool, permissions refused, a time limit, everything gone afterwards.

The fast tests drive the asker with the in-memory fake engine; the end-to-end ones run the real
`opencode serve` and `opencode acp` against the fake model server, which calls `query_audit`
over kimaki's real tool server (the relay a real agent starts) and then tries tools it does not
have. The binary comes from `KIMAKI_TEST_OPENCODE`, else `opencode` on PATH (skipped without).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki._audit import AuditEvent, audit_sink
from kimaki._control import ControlServer, control_url
from kimaki.agents import Engine, Grants, McpPlan, McpProvider, McpServer, ToolGrant
from kimaki.agents.acp import AcpConfig, open_acp_engine, resolve_agent
from kimaki.agents.opencode import OpenCodeConfig, open_opencode_engine
from kimaki.audit._agent import (
    AuditAgent,
    AuditMcp,
    ReaderOpener,
    read_only_trail,
    restricted_opencode_config,
)
from kimaki.audit._store import AuditStore
from kimaki.audit._tool import AUDIT_TOOLS
from kimaki.mcp import McpPolicies, load_catalog
from kimaki.store import Store
from kimaki.testing.daemon import free_port
from kimaki.testing.engine import FakeEngine, RunningTurn, open_fake_engine
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import real_opencode_binary
from kimaki.testing.script import Fail, Hold, Say
from kimaki.testing.tools import FakeToolPlaces
from kimaki.tools import BUILTIN_TOOLS, ToolBox, install_tool_routes

CHANNEL = 1_000_000_000_000_000_001
ALICE = 2_000_000_000_000_000_001
BOB = 2_000_000_000_000_000_002


async def _trail(path: Path) -> None:
    now = time.time()
    async with await AuditStore.open(path) as store:
        await store.write(
            [
                AuditEvent("command.invoked", now - 3600, channel_id=CHANNEL, user_id=BOB,
                           detail={"command": "/abort"}),
                AuditEvent("message.created", now - 60, channel_id=CHANNEL + 1, user_id=ALICE,
                           detail={"content": "another channel's business"}),
            ]
        )  # fmt: skip


async def trail(tmp_path: Path) -> ReaderOpener:
    """A trail on disk, as the asker opens it for each question: read-only."""
    path = tmp_path / "data" / "audit.db"
    await trio.Path(path.parent).mkdir(exist_ok=True)
    await _trail(path)
    return read_only_trail(path)


class _Recorded:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def put_nowait(self, event: AuditEvent) -> None:
        self.events.append(event)


class _NoServers:
    async def plan(self, grant: ToolGrant) -> McpPlan:
        return McpPlan()


def _fake_opener(
    engines: list[FakeEngine], responder: Callable[[RunningTurn], Awaitable[None]]
) -> Callable[[McpProvider, Grants], AbstractAsyncContextManager[Engine]]:
    """A fresh fake engine per question, whose agent does what `responder` does."""

    @asynccontextmanager
    async def open_engine(mcp: McpProvider, grants: Grants) -> AsyncIterator[Engine]:
        async with open_fake_engine() as engine:
            engine.responder = responder
            engines.append(engine)
            yield engine

    return open_engine


async def test_a_question_is_answered_in_a_private_directory_that_goes_away(
    tmp_path: Path,
) -> None:
    engines: list[FakeEngine] = []
    seen: dict[str, Any] = {}

    async def responder(turn: RunningTurn) -> None:
        directory = turn.session.directory
        seen["directory"] = directory
        seen["listing"] = list(directory.iterdir())
        # What the engine does for its agent: a grant for the directory, which the tool
        # routes resolve to this question's context.
        grant = agent.grants.mint("fake", directory)
        ctx = await agent.places.context_for(grant.token, "query_audit", {})
        assert ctx is not None
        result = await ToolBox(AUDIT_TOOLS).call(ctx, "query_audit", {"kind": "command"})
        seen["permission"] = await turn.ask_permission("bash", ["cat /etc/passwd"])
        await turn.play(Say("Looking."), Say(f"Answer: {result.text.splitlines()[1]}"))

    agent = AuditAgent(
        open_reader=await trail(tmp_path),
        mcp=_NoServers(),
        open_engine=_fake_opener(engines, responder),
        data_dir=tmp_path / "data",
    )
    recorded = _Recorded()
    with trio.fail_after(10), audit_sink(recorded):
        answer = await agent.ask("who aborted?", channel_id=CHANNEL, user_id=ALICE)
    [asked] = recorded.events
    assert asked.kind == "audit.asked"
    assert (asked.channel_id, asked.user_id) == (CHANNEL, ALICE)
    assert asked.detail["question"] == "who aborted?"
    assert answer.startswith("Answer: ")
    assert "command.invoked" in answer
    assert "/abort" in answer
    assert "another channel" not in answer
    assert seen["permission"] == "reject"  # whatever asks is refused
    assert seen["listing"] == []  # an empty directory...
    directory: Path = seen["directory"]
    assert not directory.is_relative_to(tmp_path / "data")  # ...outside the data dir...
    assert not await trio.Path(directory).exists()  # ...deleted after
    assert "who aborted?" in engines[0].prompts[0].text
    assert len(agent.grants) == 1  # the fake engine does not revoke; a real one does


async def test_time_limit_and_failures_are_answered_in_words(
    tmp_path: Path, autojump_clock: trio.abc.Clock
) -> None:
    async def hold(turn: RunningTurn) -> None:
        await turn.play(Hold())

    async def fail(turn: RunningTurn) -> None:
        await turn.play(Fail("the model is overloaded"))

    open_reader = await trail(tmp_path)
    for responder, expected in [
        (hold, "did not answer within 30 s; ask something narrower"),
        (fail, "could not answer: the model is overloaded"),
    ]:
        agent = AuditAgent(
            open_reader=open_reader,
            mcp=_NoServers(),
            open_engine=_fake_opener([], responder),
            data_dir=tmp_path / "data",
            time_limit=30,
        )
        answer = await agent.ask("anything?", channel_id=CHANNEL, user_id=1)
        assert expected in answer


async def test_no_audit_file_is_said_so(tmp_path: Path) -> None:
    async def say(turn: RunningTurn) -> None:
        await turn.play(Say("unreachable"))

    agent = AuditAgent(
        open_reader=read_only_trail(tmp_path / "absent.db"),
        mcp=_NoServers(),
        open_engine=_fake_opener([], say),
        data_dir=tmp_path / "data",
    )
    answer = await agent.ask("anything?", channel_id=CHANNEL, user_id=1)
    assert answer.startswith("The audit agent could not answer: no audit file at ")


async def test_the_agent_is_handed_kimakis_tool_server_only() -> None:
    class Policy:
        async def plan(self, grant: ToolGrant) -> McpPlan:
            return McpPlan(
                servers=(
                    McpServer("kimaki", command="python", args=("-m", "kimaki", "mcp-tools")),
                    McpServer("github", command="python", args=("-m", "kimaki", "mcp-proxy")),
                ),
                switched_off={"personal": {"type": "local", "command": ["x"]}},
            )

    plan = await AuditMcp(Policy()).plan(ToolGrant("t", "opencode", Path("/tmp/q")))
    assert [server.name for server in plan.servers] == ["kimaki"]
    assert set(plan.switched_off) == {"personal"}


def test_the_opencode_configuration_switches_every_other_tool_off() -> None:
    base = {"model": "a/b", "agent": {"build": {"tools": {"bash": True}, "prompt": "mine"}}}
    config = restricted_opencode_config(base)
    assert config["model"] == "a/b"
    assert config["tools"] == {"*": False, "kimaki_query_audit": True}
    assert config["permission"]["*"] == "deny"
    assert config["agent"]["build"]["tools"] == {"*": False, "kimaki_query_audit": True}
    assert config["agent"]["build"]["prompt"] == "mine"


# ----------------------------------------------------------------------------- end to end


@asynccontextmanager
async def daemon_side(
    tmp_path: Path, *replies: Reply
) -> AsyncIterator[tuple[ModelServer, int, ReaderOpener, McpPolicies, ControlServer]]:
    """The model server, the audit file (read-only), the MCP policy, and the lock port with
    the tool routes: the daemon's side of a question, without Discord."""
    model = ModelServer(replies)
    lock_port = free_port()
    open_reader = await trail(tmp_path)  # creates the data dir too
    async with (
        await Store.open(tmp_path / "data" / "kimaki.db") as state,
        trio.open_nursery() as nursery,
    ):
        port = await nursery.start(model.serve)
        policies = McpPolicies(
            catalog=lambda: load_catalog(tmp_path / "data" / "mcp.json", ()),
            store=state.mcp,
            channels=state.places,
            control_url=control_url(lock_port),
            on_change=_ignore,
        )
        control = ControlServer(port=lock_port, data_dir=tmp_path, health=dict)
        await nursery.start(control.serve)
        yield model, port, open_reader, policies, control
        nursery.cancel_scope.cancel()


async def _ignore(channel_id: int) -> None:
    return None


def _script(proof: Path) -> list[Reply]:
    return [
        Reply.tool("kimaki_query_audit", {"kind": "command.", "since": "1d"}),
        # Tools it does not have: a shell, a file read, another kimaki tool.
        Reply.tool("bash", {"command": f"touch {proof}", "description": "try"}),
        Reply.tool("read", {"filePath": "/etc/hostname"}),
        Reply.tool("kimaki_send_message", {"content": "leaked"}),
        Reply.text(f"<@{BOB}> ran /abort an hour ago."),
    ]


def _check(model: ModelServer, answer: str, proof: Path) -> None:
    assert answer == f"<@{BOB}> ran /abort an hour ago."
    first = model.agent_requests[0].body
    offered = {tool["function"]["name"] for tool in first.get("tools", [])}
    assert offered == {"kimaki_query_audit"}, offered
    results = [
        str(message.get("content"))
        for message in model.agent_requests[-1].body["messages"]
        if message.get("role") == "tool"
    ]
    assert any("command.invoked" in r and "/abort" in r for r in results), results
    assert not any("another channel" in r for r in results)
    assert not proof.exists()  # bash never ran
    assert len(results) == 4, results
    assert all("leaked" not in r for r in results[1:]), results


@pytest.mark.e2e
@pytest.mark.slow
async def test_opencode_serve_answers_with_query_audit_and_nothing_else(tmp_path: Path) -> None:
    binary = real_opencode_binary()
    proof = tmp_path / "proof.txt"
    async with daemon_side(tmp_path, *_script(proof)) as side:
        model, port, open_reader, policies, control = side

        def open_engine(mcp: McpProvider, grants: Grants) -> AbstractAsyncContextManager[Engine]:
            content = restricted_opencode_config(opencode_config(port))
            return open_opencode_engine(
                OpenCodeConfig(
                    command=(binary,),
                    home_for=lambda directory: tmp_path / "home",
                    extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(content)},
                    ready_timeout=60.0,
                    probe=None,
                    mcp=mcp,
                    grants=grants,
                )
            )

        agent = AuditAgent(
            open_reader=open_reader,
            mcp=policies,
            open_engine=open_engine,
            data_dir=tmp_path / "data",
            time_limit=90,
        )
        thread_places = FakeToolPlaces()
        install_tool_routes(
            control,
            ToolBox(BUILTIN_TOOLS),
            thread_places,
            private=[(ToolBox(AUDIT_TOOLS), agent.places)],
        )
        answer = await agent.ask("Who aborted?", channel_id=CHANNEL, user_id=ALICE)
    _check(model, answer, proof)
    assert len(agent.grants) == 0  # the server's grant ended with it


@pytest.mark.e2e
@pytest.mark.slow
async def test_opencode_acp_answers_with_query_audit_and_nothing_else(tmp_path: Path) -> None:
    binary = real_opencode_binary()
    proof = tmp_path / "proof.txt"
    async with daemon_side(tmp_path, *_script(proof)) as side:
        model, port, open_reader, policies, control = side
        acp_agent = resolve_agent(f"{binary} acp", tmp_path / "data")

        def open_engine(mcp: McpProvider, grants: Grants) -> AbstractAsyncContextManager[Engine]:
            content = restricted_opencode_config(opencode_config(port))
            return open_acp_engine(
                AcpConfig(
                    acp_agent,
                    extra_env={"OPENCODE_CONFIG_CONTENT": json.dumps(content)},
                    ready_timeout=60.0,
                    mcp=mcp,
                    grants=grants,
                    serve_files=False,
                )
            )

        agent = AuditAgent(
            open_reader=open_reader,
            mcp=policies,
            open_engine=open_engine,
            data_dir=tmp_path / "data",
            time_limit=90,
        )
        install_tool_routes(
            control,
            ToolBox(BUILTIN_TOOLS),
            FakeToolPlaces(),
            private=[(ToolBox(AUDIT_TOOLS), agent.places)],
        )
        answer = await agent.ask("Who aborted?", channel_id=CHANNEL, user_id=ALICE)
    _check(model, answer, proof)
    assert len(agent.grants) == 0
