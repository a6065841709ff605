"""The OpenCode engine against the fake server: the engine starts a real (stub) child process
as its server, the fake in this process answers its HTTP and scripts its turns."""

from __future__ import annotations

import base64
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.agents import (
    EngineEvent,
    EventQueue,
    ModelRef,
    PermissionRequested,
    PermissionResolved,
    PlanEntry,
    PlanUpdated,
    ProbePolicy,
    Question,
    QuestionAsked,
    QuestionOption,
    QuestionResolved,
    SessionNotFoundError,
    SessionRenamed,
    StepFinished,
    TextCompleted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnEnded,
    TurnInProgressError,
    Usage,
)
from kimaki.agents.opencode import OpenCodeConfig, OpenCodeEngine, open_opencode_engine
from kimaki.testing.engine import texts, until_turn_end
from kimaki.testing.opencode import FakeOpenCode, stub_command
from kimaki.testing.script import (
    Ask,
    DropStream,
    Fail,
    Hold,
    Malformed,
    Plan,
    Rename,
    Say,
    Stop,
    Tool,
    TurnScript,
)
from kimaki.threads import PromptFile


@asynccontextmanager
async def running(
    tmp_path: Path, *turns: TurnScript, **config: Any
) -> AsyncIterator[tuple[FakeOpenCode, OpenCodeEngine]]:
    fake = FakeOpenCode(turns=turns, directory=str(tmp_path), plugin_burst=3)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(fake.serve)
        options: dict[str, Any] = {
            "command": stub_command(port),
            "stream_backoff": (0.01, 0.05),
            "stop_grace": 2.0,
        }
        options.update(config)
        async with open_opencode_engine(OpenCodeConfig(**options)) as engine:
            yield fake, engine
        nursery.cancel_scope.cancel()


async def test_a_text_turn(tmp_path: Path) -> None:
    turn = TurnScript(Say("Hello there, this is a scripted reply.", chunk=8))
    async with running(tmp_path, turn) as (fake, engine):
        session = await engine.open_session(tmp_path, title="first")
        assert session.title == "first"
        turn_id = await session.prompt("do the thing", model=ModelRef.parse("fake/fake-model"))
        events = await until_turn_end(session.events)
    deltas = [e.delta for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "Hello there, this is a scripted reply."
    assert len(deltas) == 5
    assert texts(events) == ["Hello there, this is a scripted reply."]
    step = [e for e in events if isinstance(e, StepFinished)]
    assert [s.reason for s in step] == ["stop"]
    assert [e for e in events if isinstance(e, Usage)] == [
        Usage(10, 5, 0, 0, 0, 0.0, 100_000, model="fake/fake-model")
    ]
    assert events[-1] == TurnEnded(turn_id, "end_turn")
    [prompt] = [r for r in fake.requests if r.path.endswith("/prompt_async")]
    assert prompt.body["messageID"] == turn_id
    assert prompt.body["model"] == {"providerID": "fake", "modelID": "fake-model"}
    assert prompt.body["parts"] == [{"type": "text", "text": "do the thing"}]


async def test_files_go_as_data_urls(tmp_path: Path) -> None:
    async with running(tmp_path) as (fake, engine):
        session = await engine.open_session(tmp_path)
        png = b"\x89PNG\r\n\x1a\nfake"
        await session.prompt("look", [PromptFile("shot.png", "image/png", png)], agent="plan")
        await until_turn_end(session.events)
    [prompt] = [r for r in fake.requests if r.path.endswith("/prompt_async")]
    assert prompt.body["agent"] == "plan"
    assert prompt.body["parts"][1] == {
        "type": "file",
        "mime": "image/png",
        "filename": "shot.png",
        "url": "data:image/png;base64," + base64.b64encode(png).decode(),
    }


@pytest.mark.parametrize("reply", ["once", "reject"])
async def test_permission_approved_or_rejected(tmp_path: Path, reply: str) -> None:
    turn = TurnScript(
        Tool(
            "bash", input={"command": "echo hi", "description": "Say hi"}, output="hi\n", ask=True
        ),
        Say("Ran it."),
    )
    async with running(tmp_path, turn) as (fake, engine):
        session = await engine.open_session(tmp_path)
        turn_id = await session.prompt("run echo")
        events: list[EngineEvent] = []
        with trio.fail_after(10):
            async for event in session.events:
                events.append(event)
                if isinstance(event, PermissionRequested):
                    assert event.title == "echo hi"
                    assert event.patterns == ("echo hi",)
                    await session.reply_permission(event.request_id, reply)  # type: ignore[arg-type]
                if isinstance(event, TurnEnded):
                    break
        assert fake.pending("permission") == []
    [resolved] = [e for e in events if isinstance(e, PermissionResolved)]
    assert resolved.reply == reply
    [finished] = [e for e in events if isinstance(e, ToolFinished)]
    assert finished.tool == "bash"
    assert finished.input_summary == "echo hi"
    if reply == "once":
        assert (finished.status, finished.output) == ("completed", "hi\n")
        assert texts(events) == ["Ran it."]
    else:
        assert finished.status == "error"
        assert "rejected" in (finished.error or "")
        assert texts(events) == []
    assert events[-1] == TurnEnded(turn_id, "end_turn")


async def test_question_answered_then_one_rejected(tmp_path: Path) -> None:
    question = Question(
        "Which color?", "Color", (QuestionOption("Red", "warm"), QuestionOption("Blue"))
    )
    turns = [TurnScript(Ask((question,)), Say("Blue it is.")), TurnScript(Ask((question,)))]
    async with running(tmp_path, *turns) as (_fake, engine):
        session = await engine.open_session(tmp_path)
        for answer in (["Blue"], None):
            await session.prompt("ask me")
            events: list[EngineEvent] = []
            with trio.fail_after(10):
                async for event in session.events:
                    events.append(event)
                    if isinstance(event, QuestionAsked):
                        assert event.questions[0].options[1].label == "Blue"
                        if answer is None:
                            await session.reject_question(event.request_id)
                        else:
                            await session.answer_question(event.request_id, [answer])
                    if isinstance(event, TurnEnded):
                        break
            [resolved] = [e for e in events if isinstance(e, QuestionResolved)]
            assert resolved.answers == (None if answer is None else (tuple(answer),))
        assert texts(events) == []


async def test_abort_during_a_slow_stream_then_the_next_turn_is_clean(tmp_path: Path) -> None:
    turns = [TurnScript(Say("slow stream "), Hold()), TurnScript(Say("fresh"))]
    async with running(tmp_path, *turns) as (_fake, engine):
        session = await engine.open_session(tmp_path)
        first = await session.prompt("go slow")
        with trio.fail_after(10):
            async for event in session.events:
                if isinstance(event, TextCompleted):
                    break
        await session.abort()
        assert session.turn_id is None
        events = await until_turn_end(session.events)
        assert events[-1] == TurnEnded(first, "aborted")
        second = await session.prompt("again")
        events = await until_turn_end(session.events)
    assert texts(events) == ["fresh"]
    assert events[-1] == TurnEnded(second, "end_turn")
    assert not any(isinstance(e, TurnEnded) and e.turn_id == first for e in events)


async def test_prompting_during_a_turn_is_refused(tmp_path: Path) -> None:
    async with running(tmp_path, TurnScript(Hold())) as (fake, engine):
        session = await engine.open_session(tmp_path)
        await session.prompt("one")
        with pytest.raises(TurnInProgressError):
            await session.prompt("two")
        fake.release()
        await until_turn_end(session.events)


async def test_a_turn_that_ends_while_the_stream_is_down_still_ends(tmp_path: Path) -> None:
    turn = TurnScript(Say("before"), DropStream(until_turn_end=True), Say("while away"))
    async with running(tmp_path, turn) as (fake, engine):
        session = await engine.open_session(tmp_path)
        turn_id = await session.prompt("go")
        events = await until_turn_end(session.events)
        assert fake.streams_opened >= 2
    assert texts(events) == ["before", "while away"]
    assert events[-1] == TurnEnded(turn_id, "end_turn")


async def test_malformed_events_are_skipped(tmp_path: Path) -> None:
    turn = TurnScript(
        Malformed("{broken"),
        Malformed('{"type": "message.part.delta", "properties": {"sessionID": 5}}'),
        Say("still fine"),
    )
    async with running(tmp_path, turn) as (_fake, engine):
        session = await engine.open_session(tmp_path)
        await session.prompt("go")
        events = await until_turn_end(session.events)
        assert engine._directory(tmp_path).malformed_events == 2
    assert texts(events) == ["still fine"]


@pytest.mark.parametrize(
    ("turn", "reason", "message"),
    [
        (TurnScript(Fail("rate limited", name="APIError")), "error", "rate limited"),
        (TurnScript(Say("cut"), Stop("max_tokens")), "max_tokens", None),  # finish `length`
        (
            TurnScript(Say("no"), Stop("refused")),  # finish `content-filter`
            "refused",
            "blocked by the content filter",
        ),
    ],
)
async def test_stop_reasons(
    tmp_path: Path, turn: TurnScript, reason: str, message: str | None
) -> None:
    async with running(tmp_path, turn) as (_fake, engine):
        session = await engine.open_session(tmp_path)
        turn_id = await session.prompt("go")
        events = await until_turn_end(session.events)
    assert events[-1] == TurnEnded(turn_id, reason, message)  # type: ignore[arg-type]


async def test_rename_and_todos(tmp_path: Path) -> None:
    turn = TurnScript(
        Rename("A better title"),
        Plan(("Do a", "pending", "high")),
        Say("ok"),
    )
    async with running(tmp_path, turn) as (_fake, engine):
        session = await engine.open_session(tmp_path)
        await session.prompt("go")
        events = await until_turn_end(session.events)
    assert SessionRenamed("A better title") in events
    assert PlanUpdated((PlanEntry("Do a", "pending", "high"),)) in events
    assert session.title == "A better title"


async def test_resuming_a_session(tmp_path: Path) -> None:
    async with running(tmp_path) as (_fake, engine):
        with pytest.raises(SessionNotFoundError) as raised:
            await engine.open_session(tmp_path, resume_id="ses_gone")
        assert raised.value.session_id == "ses_gone"
        session = await engine.open_session(tmp_path)
        await session.aclose()
        again = await engine.open_session(tmp_path, resume_id=session.session_id)
        assert again is not session
        assert again is await engine.open_session(tmp_path, resume_id=session.session_id)
        await again.prompt("hello")
        assert texts(await until_turn_end(again.events)) == ["ok"]


async def test_a_reserved_turn_is_known_only_once_sent(tmp_path: Path) -> None:
    # A daemon killed between recording a turn and sending it asks the session afterwards.
    async with running(tmp_path) as (_fake, engine):
        session = await engine.open_session(tmp_path)
        turn_id = session.new_turn_id()
        assert not await session.resume_turn(turn_id)  # never sent: nothing to follow
        assert await session.prompt("hello", turn_id=turn_id) == turn_id
        events = await until_turn_end(session.events)
        assert events[-1] == TurnEnded(turn_id, "end_turn")
        await session.aclose()
        again = await engine.open_session(tmp_path, resume_id=session.session_id)
        assert await again.resume_turn(turn_id)  # sent: followed (here, replayed to its end)
        replayed = await until_turn_end(again.events)
        assert texts(replayed) == ["ok"]
        assert replayed[-1] == TurnEnded(turn_id, "end_turn")


async def test_a_crash_mid_turn_ends_the_turn_and_the_next_prompt_restarts(tmp_path: Path) -> None:
    from kimaki.agents import RestartPolicy, ServerState

    policy = RestartPolicy(initial_delay=0.01)
    async with running(tmp_path, TurnScript(Say("working"), Hold()), policy=policy) as (
        fake,
        engine,
    ):
        session = await engine.open_session(tmp_path)
        turn_id = await session.prompt("go")
        server = engine.server(tmp_path)
        connection = server.current
        assert connection is not None
        os.kill(connection.process.pid, signal.SIGKILL)
        events = await until_turn_end(session.events)
        assert events[-1].stop_reason == "error"  # type: ignore[union-attr]
        assert events[-1].turn_id == turn_id  # type: ignore[union-attr]
        assert "exited unexpectedly" in (events[-1].message or "")  # type: ignore[union-attr]
        await server.wait_for_state(ServerState.READY)
        fake.release()  # the fake's own turn is still "running"; let it end
        await fake.wait_for(lambda: not any(s.busy for s in fake.sessions.values()))
        await session.prompt("again")
        assert texts(await until_turn_end(session.events)) == ["ok"]


async def test_models_agents_and_commands(tmp_path: Path) -> None:
    async with running(tmp_path) as (_fake, engine):
        [provider] = await engine.list_models(tmp_path)
        assert provider.provider_id == "fake"
        assert provider.default_model == "fake-model"
        assert [(m.id, m.context_limit) for m in provider.models] == [
            ("fake-model", 100_000),
            ("fake-large", 1_000_000),
        ]
        agents = await engine.list_agents(tmp_path)
        assert [(a.name, a.primary) for a in agents] == [
            ("build", True),
            ("plan", True),
            ("explore", False),
        ]
        assert [c.name for c in await engine.list_commands(tmp_path)] == ["init", "review"]


async def test_a_slow_reader_never_blocks_and_loses_no_final_event() -> None:
    queue = EventQueue(max_pending_deltas=3)
    for n in range(10):
        queue.send_nowait(TextDelta("p", str(n)))
    queue.send_nowait(TextCompleted("p", "0123456789"))
    queue.send_nowait(
        ToolStarted(
            part_id="t", call_id="c", tool="bash", title="", input_summary="", status="running"
        )
    )
    received = [queue.receive_nowait() for _ in range(5)]
    assert received[:3] == [TextDelta("p", "0"), TextDelta("p", "1"), TextDelta("p", "2")]
    assert received[3] == TextCompleted("p", "0123456789")
    assert queue.statistics().deltas_dropped == 7
    queue.close()
    with pytest.raises(trio.EndOfChannel):
        await queue.receive()


# ----------------------------------------------------------------------------- hung servers

HANG_PROBE = ProbePolicy(interval=60.0, silence=0.3, timeout=0.5)


async def _until_text(session: Any, text: str) -> None:
    with trio.fail_after(10):
        async for event in session.events:
            if isinstance(event, TextCompleted) and event.text == text:
                return


async def test_a_silent_but_healthy_server_is_probed_and_left_alone(tmp_path: Path) -> None:
    async with running(tmp_path, TurnScript(Say("thinking"), Hold()), probe=HANG_PROBE) as (
        fake,
        engine,
    ):
        session = await engine.open_session(tmp_path)
        await session.prompt("take your time")
        await _until_text(session, "thinking")
        asked = len([r for r in fake.requests if r.path == "/global/health"])
        # Silent for the bound during a turn: probed, again and again, and it answers.
        with trio.fail_after(10):
            await fake.wait_for(
                lambda: len([r for r in fake.requests if r.path == "/global/health"]) >= asked + 3
            )
        server = engine.server(tmp_path)
        assert server.statistics().crashes == 0
        assert session.turn_id is not None  # the turn still runs
        fake.release()
        events = await until_turn_end(session.events)
        assert events[-1].stop_reason == "end_turn"  # type: ignore[union-attr]


async def test_a_server_that_hangs_mid_turn_ends_the_turn_and_is_restarted(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, TurnScript(Say("working"), Hold()), probe=HANG_PROBE) as (
        fake,
        engine,
    ):
        session = await engine.open_session(tmp_path)
        server = engine.server(tmp_path)
        first = await server.connection()
        turn_id = await session.prompt("go")
        await _until_text(session, "working")
        fake.hang()  # alive, but answers nothing: no events, no heartbeats, no health
        events = await until_turn_end(session.events, within=20)
        ended = events[-1]
        assert isinstance(ended, TurnEnded)
        assert (ended.turn_id, ended.stop_reason) == (turn_id, "error")
        assert ended.message is not None
        assert "stopped answering (no answer to its health check within 0.5 s)" in ended.message
        assert "\n" not in ended.message
        fake.recover()
        with trio.fail_after(20):
            second = await server.connection()
        assert second.process.pid != first.process.pid
        assert server.statistics().crashes == 1
        with pytest.raises(trio.WouldBlock):  # said once
            session.events.receive_nowait()
