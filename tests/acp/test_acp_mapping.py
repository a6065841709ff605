"""`session/update`s → engine-neutral events, and what a session advertises (pure, no I/O)."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from kimaki.agents import (
    AgentInfo,
    ModelRef,
    ReasoningCompleted,
    TextCompleted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    ToolUpdated,
    TurnEnded,
)
from kimaki.agents.acp._mapping import Catalog, UpdateMapper, stop_reason, tool_summary
from kimaki.agents.acp._wire import (
    MalformedMessage,
    SessionState,
    ToolCallLocation,
    ToolCallUpdate,
    decode,
    decode_answer,
    decode_update,
)


def chunk(text: str, message_id: str | None = None, kind: str = "agent_message_chunk") -> Any:
    update: dict[str, Any] = {"sessionUpdate": kind, "content": {"type": "text", "text": text}}
    if message_id is not None:
        update["messageId"] = message_id
    return update


def feed(mapper: UpdateMapper, *updates: Any) -> list[Any]:
    return [event for update in updates for event in mapper.handle(decode_update(update))]


def tool_call(**fields: Any) -> ToolCallUpdate:
    return decode(ToolCallUpdate, fields, "toolCall")


def test_text_parts_end_where_something_else_begins() -> None:
    mapper = UpdateMapper(directory="/p")
    mapper.begin_turn("t")
    events = feed(
        mapper,
        chunk("Hel", "m1"),
        chunk("lo", "m1"),
        chunk("Second message", "m2"),
        chunk("hmm", kind="agent_thought_chunk"),
        {"sessionUpdate": "tool_call", "toolCallId": "c1", "title": "Read", "kind": "read"},
        chunk("after the tool", "m2"),
        {"sessionUpdate": "agent_message_chunk", "content": {"type": "image", "data": "x"}},
        {
            "sessionUpdate": "agent_message_chunk",
            "content": {"type": "resource_link", "name": "spec", "uri": "file:///p/spec.md"},
        },
    )
    events += mapper.end_turn("t", "end_turn")
    finals = [(type(e).__name__, e.part_id, e.text) for e in events if hasattr(e, "text")]
    assert finals == [
        ("TextCompleted", "t:1", "Hello"),
        ("TextCompleted", "t:2", "Second message"),
        ("ReasoningCompleted", "t:3", "hmm"),
        ("TextCompleted", "t:4", "after the tool[spec](file:///p/spec.md)"),
    ]
    assert [e.delta for e in events if isinstance(e, TextDelta)][:2] == ["Hel", "lo"]
    assert isinstance(events[-1], TurnEnded)
    assert mapper.turn_id is None


def test_nothing_outside_a_turn_and_no_end_for_another_turn() -> None:
    mapper = UpdateMapper()
    assert feed(mapper, chunk("stray")) == []
    mapper.begin_turn("new")
    assert mapper.end_turn("old", "end_turn") == []  # a late end of an abandoned turn
    mapper.request_abort()
    assert mapper.end_turn("new", "end_turn") == [TurnEnded("new", "aborted")]


def test_tool_calls_merge_their_updates() -> None:
    mapper = UpdateMapper(directory="/work/app")
    mapper.begin_turn("t")
    events = feed(
        mapper,
        {
            "sessionUpdate": "tool_call",
            "toolCallId": "c",
            "title": "bash",
            "kind": "execute",
            "status": "pending",
            "locations": [{"path": "/work/app"}],
            "rawInput": {"cwd": "/x"},
        },
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "c",
            "status": "in_progress",
            "rawInput": {"command": "pytest -q"},
        },
        {"sessionUpdate": "tool_call_update", "toolCallId": "c", "status": "in_progress"},
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "c",
            "status": "failed",
            "content": [{"type": "content", "content": {"type": "text", "text": "2 failed"}}],
        },
        {"sessionUpdate": "tool_call_update", "toolCallId": "c", "status": "completed"},
        {
            "sessionUpdate": "tool_call_update",
            "toolCallId": "late",
            "status": "completed",
            "title": "Write",
            "kind": "edit",
            "content": [{"type": "diff", "path": "/work/app/new.py", "newText": "a\nb\n"}],
        },
    )
    started, updated, failed, late_start, late_end = events
    assert isinstance(started, ToolStarted)
    assert (started.status, started.input_summary) == ("pending", "bash")
    assert isinstance(updated, ToolUpdated)
    assert (updated.status, updated.input_summary) == ("running", "pytest -q")
    assert isinstance(failed, ToolFinished)
    assert (failed.status, failed.error, failed.output) == ("error", "2 failed", "2 failed")
    assert isinstance(late_start, ToolStarted)
    assert late_start.status == "running"
    assert isinstance(late_end, ToolFinished)
    assert late_end.diff is not None
    assert (late_end.diff.path, late_end.diff.lines) == ("new.py", 2)


def test_a_permissions_tool_call_fills_in_what_the_tool_call_lacked() -> None:
    mapper = UpdateMapper()
    mapper.begin_turn("t")
    feed(
        mapper,
        {
            "sessionUpdate": "tool_call",
            "toolCallId": "c",
            "title": "bash",
            "kind": "execute",
            "status": "in_progress",
            "rawInput": {"command": "ls"},
        },
    )
    # Same command, an older status and no locations: nothing a person would see changes.
    assert (
        mapper.permission_tool(
            tool_call(toolCallId="c", status="pending", locations=[], rawInput={"command": "ls"})
        )
        == []
    )
    [update] = mapper.permission_tool(tool_call(toolCallId="c", title="ls -la"))
    assert isinstance(update, ToolUpdated)
    assert (update.status, update.title) == ("running", "ls -la")


def test_summaries() -> None:
    assert tool_summary({"command": ["git", "status"]}, []) == "git status"
    assert tool_summary({"file_path": "/w/a.py"}, [], "/w") == "a.py"
    assert tool_summary({"file_path": "/elsewhere/a.py"}, [], "/w") == "/elsewhere/a.py"
    assert tool_summary(None, [ToolCallLocation("/w/src/x.py", 3)], "/w") == "src/x.py"
    assert tool_summary({"cwd": "/w", "n": 1}, [], "/w") == '{"n": 1}'
    assert tool_summary({"query": "x" * 300}, []).endswith("…")


def test_stop_reasons() -> None:
    assert [stop_reason(r) for r in ("end_turn", "max_tokens", "refusal", "cancelled")] == [
        "end_turn",
        "max_tokens",
        "refused",
        "aborted",
    ]
    assert stop_reason("max_turn_requests") == "max_turn_requests"
    assert stop_reason("something_new") == "end_turn"
    assert stop_reason("end_turn", aborted=True) == "aborted"


def test_catalog_from_grouped_options_and_modes() -> None:
    catalog = Catalog("kiro")
    answer = decode_answer(
        SessionState,
        {
            "sessionId": "s",
            "modes": {
                "currentModeId": "ask",
                "availableModes": [{"id": "ask", "name": "Ask"}, {"id": "code", "name": "Code"}],
            },
            "configOptions": [
                {
                    "id": "m",
                    "name": "Model",
                    "category": "model",
                    "type": "select",
                    "currentValue": "sonnet",
                    "options": [
                        {
                            "group": "anthropic",
                            "name": "Anthropic",
                            "options": [
                                {"value": "sonnet", "name": "Sonnet"},
                                {"value": "opus", "name": "Opus"},
                            ],
                        },
                        {
                            "group": "local",
                            "name": "Local",
                            "options": [
                                {"value": "qwen", "name": "Qwen"},
                            ],
                        },
                    ],
                },
                {"id": "fast", "name": "Fast", "type": "boolean", "currentValue": False},
            ],
        },
        "session/new",
    )
    catalog.take_session(answer)
    models = catalog.models()
    assert [(p.provider_id, p.name, [m.id for m in p.models], p.default_model) for p in models] == [
        ("anthropic", "Anthropic", ["sonnet", "opus"], "sonnet"),
        ("local", "Local", ["qwen"], None),
    ]
    assert catalog.current_model() == ModelRef("anthropic", "sonnet")
    assert catalog.model_value(ModelRef("local", "qwen")) == ("m", "qwen")
    assert catalog.model_value(ModelRef("anthropic", "qwen")) is None
    assert catalog.agents() == [AgentInfo("ask", "Ask"), AgentInfo("code", "Code")]
    assert catalog.mode_choice("code") == ("mode", "code")
    catalog.take_update(
        decode_update({"sessionUpdate": "current_mode_update", "currentModeId": "code"})
    )
    assert catalog.current_agent() == "code"


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.dictionaries(
            st.sampled_from(
                [
                    "sessionUpdate",
                    "content",
                    "toolCallId",
                    "status",
                    "title",
                    "kind",
                    "rawInput",
                    "locations",
                    "entries",
                    "used",
                    "size",
                    "messageId",
                    "availableCommands",
                    "configOptions",
                    "currentModeId",
                ]
            ),
            st.one_of(
                st.sampled_from(
                    [
                        "agent_message_chunk",
                        "agent_thought_chunk",
                        "tool_call",
                        "tool_call_update",
                        "plan",
                        "usage_update",
                        "completed",
                        "failed",
                        "available_commands_update",
                        "config_option_update",
                        "current_mode_update",
                        "session_info_update",
                    ]
                ),
                st.none(),
                st.integers(),
                st.text(max_size=5),
                st.lists(
                    st.one_of(
                        st.none(),
                        st.text(max_size=3),
                        st.dictionaries(
                            st.text(max_size=8),
                            st.one_of(st.text(max_size=3), st.integers()),
                            max_size=3,
                        ),
                    )
                ),
                st.dictionaries(
                    st.sampled_from(["type", "text", "uri", "name"]),
                    st.one_of(st.text(max_size=4), st.integers()),
                    max_size=3,
                ),
            ),
            max_size=6,
        ),
        max_size=20,
    )
)
def test_any_update_is_mapped_or_skipped_never_a_crash(updates: list[dict[str, Any]]) -> None:
    mapper = UpdateMapper()
    catalog = Catalog("agent")
    mapper.begin_turn("t")
    for raw in updates:
        try:
            update = decode_update(raw)
        except MalformedMessage:
            continue  # what the engine skips (and logs)
        mapper.handle(update)
        catalog.take_update(update)
    catalog.models()
    catalog.agents()
    events = mapper.end_turn("t", "end_turn")
    assert isinstance(events[-1], TurnEnded)
    assert all(not isinstance(e, TextCompleted | ReasoningCompleted) or e.text for e in events)
