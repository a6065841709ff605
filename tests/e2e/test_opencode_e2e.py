"""End to end with the real `opencode serve` (npm `opencode-ai`, pinned by the noxfile) and the
fake OpenAI-compatible model server: nothing leaves 127.0.0.1.

The binary comes from `KIMAKI_TEST_OPENCODE`, else `opencode` on PATH. Without it these tests
skip, except under CI (the `CI` variable set), where a missing binary is a failure.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.agents import (
    PermissionRequested,
    RestartPolicy,
    ServerState,
    ToolFinished,
    TurnEnded,
)
from kimaki.agents.opencode import OpenCodeConfig, OpenCodeEngine, open_opencode_engine
from kimaki.testing.engine import drive_turn, texts
from kimaki.testing.model_server import ModelServer, Reply, opencode_config
from kimaki.testing.opencode import (
    process_running,
    real_opencode_binary,
    sigkill_daemon_stand_in,
    wait_for_exit,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@asynccontextmanager
async def real_opencode(
    tmp_path: Path, *replies: Reply, **config: Any
) -> AsyncIterator[tuple[ModelServer, OpenCodeEngine, Path]]:
    binary = real_opencode_binary()
    model = ModelServer(replies)
    project = tmp_path / "project"
    project.mkdir()
    async with trio.open_nursery() as nursery:
        port = await nursery.start(model.serve)
        content = opencode_config(port, permission={"bash": "ask"})
        options: dict[str, Any] = {
            "command": (binary,),
            "home_for": lambda directory: tmp_path / "home",
            "extra_env": {"OPENCODE_CONFIG_CONTENT": json.dumps(content)},
            "ready_timeout": 60.0,
        }
        options.update(config)
        async with open_opencode_engine(OpenCodeConfig(**options)) as engine:
            yield model, engine, project
        nursery.cancel_scope.cancel()


async def test_text_reply_and_a_bash_call_approved_then_rejected(tmp_path: Path) -> None:
    bash = {"command": "echo kimaki-e2e > proof.txt", "description": "Write proof"}
    replies = [
        Reply.text("Hello from the scripted model."),
        Reply.tool("bash", bash),
        Reply.text("Wrote it."),
        Reply.tool("bash", {"command": "rm proof.txt", "description": "Remove proof"}),
    ]
    async with real_opencode(tmp_path, *replies) as (model, engine, project):
        session = await engine.open_session(project, title="e2e")

        events = await drive_turn(session, "say hello")
        assert texts(events) == ["Hello from the scripted model."]
        assert events[-1].stop_reason == "end_turn"  # type: ignore[union-attr]
        assert model.agent_requests[0].last_user_text.endswith("say hello")

        events = await drive_turn(session, "write the proof", permission="once")
        [asked] = [e for e in events if isinstance(e, PermissionRequested)]
        assert asked.permission == "bash"
        assert asked.patterns == ("echo kimaki-e2e > proof.txt",)
        [finished] = [e for e in events if isinstance(e, ToolFinished)]
        assert finished.status == "completed"
        assert (project / "proof.txt").read_text() == "kimaki-e2e\n"
        assert texts(events) == ["Wrote it."]

        events = await drive_turn(session, "remove it", permission="reject")
        [finished] = [e for e in events if isinstance(e, ToolFinished)]
        assert finished.status == "error"
        assert (project / "proof.txt").exists()
        assert events[-1].stop_reason == "end_turn"  # type: ignore[union-attr]


async def test_abort_during_a_slow_stream(tmp_path: Path) -> None:
    never = trio.Event()
    replies = [Reply(chunks=("slow ", "stream "), hold=never), Reply.text("Back again.")]
    async with real_opencode(tmp_path, *replies) as (model, engine, project):
        session = await engine.open_session(project)
        turn_id = await session.prompt("go slowly")
        await model.wait_for_agent_requests(1)
        with trio.fail_after(60):
            async for event in session.events:
                if isinstance(event, TurnEnded):
                    raise AssertionError("the turn ended before the abort")
                if getattr(event, "delta", "") == "stream ":
                    break
        await session.abort()
        with trio.fail_after(10):
            async for event in session.events:
                if isinstance(event, TurnEnded):
                    assert event == TurnEnded(turn_id, "aborted")
                    break
        events = await drive_turn(session, "again")
        assert texts(events) == ["Back again."]


async def test_a_killed_server_is_restarted_and_the_session_goes_on(tmp_path: Path) -> None:
    never = trio.Event()
    replies = [Reply(chunks=("working",), hold=never), Reply.text("Still here.")]
    policy = RestartPolicy(initial_delay=0.1)
    async with real_opencode(tmp_path, *replies, policy=policy) as (model, engine, project):
        session = await engine.open_session(project)
        turn_id = await session.prompt("work")
        await model.wait_for_agent_requests(1)
        server = engine.server(project)
        connection = server.current
        assert connection is not None
        os.kill(connection.process.pid, signal.SIGKILL)
        with trio.fail_after(30):
            async for event in session.events:
                if isinstance(event, TurnEnded):
                    assert event.turn_id == turn_id
                    assert event.stop_reason == "error"
                    break
        await server.wait_for_state(ServerState.READY)
        assert server.statistics().crashes == 1
        events = await drive_turn(session, "are you there?")
        assert texts(events) == ["Still here."]


async def test_sigkill_of_the_daemon_leaves_no_opencode_behind(tmp_path: Path) -> None:
    server_pid = await sigkill_daemon_stand_in(str(tmp_path), (real_opencode_binary(),))
    with trio.fail_after(15):
        await wait_for_exit(server_pid)
    assert not process_running(server_pid)
