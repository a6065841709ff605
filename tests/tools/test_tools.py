"""Each built-in tool through the `ToolBox`, against a recording thread: what the model gets
back when it sends something wrong, and what lands in the thread when it does not."""

from __future__ import annotations

import datetime as dt
import logging
import os
import zoneinfo
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from kimaki.agents import QuestionOption
from kimaki.testing.tools import ButtonsPosted, HistoryRead, Posted, RecordingToolContext
from kimaki.tools import (
    BUILTIN_TOOLS,
    ButtonChoice,
    HistoryEntry,
    ToolBox,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSpec,
)
from kimaki.tools._current_time import describe_time

MIB = 1024 * 1024


@pytest.fixture
def ctx(tmp_path: Path) -> RecordingToolContext:
    directory = tmp_path / "project"
    directory.mkdir()
    return RecordingToolContext(directory=directory, data_dir=tmp_path / "data")


@pytest.fixture
def box() -> ToolBox:
    return ToolBox(BUILTIN_TOOLS)


async def refused(box: ToolBox, ctx: RecordingToolContext, tool: str, **arguments: Any) -> str:
    result = await box.call(ctx, tool, arguments)
    assert result.is_error, result.text
    return result.text


# The box


def test_the_builtin_tools_in_order_each_an_object_schema() -> None:
    names = [spec.name for spec in BUILTIN_TOOLS]
    assert names == [
        "send_message",
        "send_file",
        "action_buttons",
        "ask",
        "channel_history",
        "current_time",
    ]
    for spec in BUILTIN_TOOLS:
        assert spec.input_schema["type"] == "object"
        assert set(spec.input_schema.get("required", ())) <= set(spec.input_schema["properties"])
        assert len(spec.description) > 80, spec.name


def test_a_second_tool_with_the_same_name_is_refused() -> None:
    box = ToolBox(BUILTIN_TOOLS)
    with pytest.raises(ValueError, match="send_message"):
        box.add(BUILTIN_TOOLS[0])
    assert box.specs() == BUILTIN_TOOLS


async def test_an_unknown_tool_is_an_error_naming_the_tools(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    text = await refused(box, ctx, "send_mesage", content="hi")
    assert text.startswith("no tool named 'send_mesage'")
    assert "send_message" in text
    assert ctx.posts == []


def _tool(name: str, run: Any) -> ToolSpec:
    return ToolSpec(name, "a test tool", {"type": "object", "properties": {}}, run)


async def test_a_tool_error_is_the_result_and_a_crash_only_points_at_the_log(
    ctx: RecordingToolContext, caplog: pytest.LogCaptureFixture
) -> None:
    async def picky(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
        raise ToolError("send `x` as a number")

    async def broken(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
        raise RuntimeError("secret path /home/someone/.ssh")

    box = ToolBox([_tool("picky", picky), _tool("broken", broken)])
    assert await box.call(ctx, "picky", {}) == ToolResult("send `x` as a number", is_error=True)
    with caplog.at_level(logging.ERROR, logger="kimaki.tools"):
        result = await box.call(ctx, "broken", {})
    assert result == ToolResult("the tool failed; see the daemon's log", is_error=True)
    # Only the crash is an error (the refusal above is a debug line, captured or not).
    [record] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info is not None
    assert "broken" in record.getMessage()


async def test_cancellation_goes_through_the_box(ctx: RecordingToolContext) -> None:
    async def waits(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    box = ToolBox([_tool("waits", waits)])
    with trio.CancelScope() as scope:
        scope.cancel()
        await box.call(ctx, "waits", {})
    assert scope.cancelled_caught


# send_message


async def test_send_message_posts_to_the_thread_or_the_channel(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    first = await box.call(ctx, "send_message", {"content": "Build is green."})
    second = await box.call(ctx, "send_message", {"content": "x" * 8000, "where": "channel"})
    assert ctx.posts == [
        Posted("Build is green.", "thread", ctx.posts[0].message_id),
        Posted("x" * 8000, "channel", ctx.posts[1].message_id),
    ]
    assert first == ToolResult(f"sent (message {ctx.posts[0].message_id})")
    assert not second.is_error


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "`content` is required"),
        ({"content": "   \n"}, "`content` is empty; send the text itself"),
        ({"content": 42}, "`content` must be a string, not int"),
        ({"content": "x" * 8001}, "`content` is 8001 characters; the limit is 8000"),
        ({"content": "hi", "where": "dm"}, '`where` must be "thread" or "channel", not \'dm\''),
    ],
)
async def test_send_message_says_what_is_wrong(
    box: ToolBox, ctx: RecordingToolContext, arguments: dict[str, Any], error: str
) -> None:
    assert await refused(box, ctx, "send_message", **arguments) == error
    assert ctx.posts == []


# send_file


async def test_send_file_uploads_a_file_of_the_project(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    (ctx.directory / "out").mkdir()
    report = ctx.directory / "out" / "report.txt"
    report.write_bytes(b"all good\n")
    result = await box.call(ctx, "send_file", {"path": "out/report.txt", "content": "The report"})
    [upload] = ctx.uploads
    assert (upload.path, upload.data, upload.content) == (report, b"all good\n", "The report")
    assert result == ToolResult(f"uploaded report.txt (9 bytes) (message {upload.message_id})")

    await box.call(ctx, "send_file", {"path": str(report)})
    assert ctx.uploads[1].path == report
    assert ctx.uploads[1].content is None


async def test_send_file_follows_a_link_inside_the_project(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    (ctx.directory / "real.txt").write_text("real")
    (ctx.directory / "link.txt").symlink_to("real.txt")
    result = await box.call(ctx, "send_file", {"path": "link.txt"})
    assert not result.is_error, result.text
    assert ctx.uploads[0].path == ctx.directory / "real.txt"


async def test_send_file_refuses_what_is_outside_the_project(
    box: ToolBox, ctx: RecordingToolContext, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("token")
    (ctx.directory / "innocent.txt").symlink_to(secret)
    for path in ("../secret.txt", str(secret), "innocent.txt", "/etc/passwd"):
        text = await refused(box, ctx, "send_file", path=path)
        assert text.startswith(f"{path} is outside the project directory"), text
    assert ctx.uploads == []


async def test_send_file_never_reads_the_data_dir_even_inside_the_project(
    box: ToolBox, tmp_path: Path
) -> None:
    project = tmp_path / "home"
    data_dir = project / ".kimaki"
    data_dir.mkdir(parents=True)
    (data_dir / "kimaki.db").write_bytes(b"SQLite")
    ctx = RecordingToolContext(directory=project, data_dir=data_dir)
    text = await refused(box, ctx, "send_file", path=".kimaki/kimaki.db")
    assert text == ".kimaki/kimaki.db is inside kimaki's data directory, which tools cannot read"
    assert ctx.uploads == []


async def test_send_file_refuses_a_missing_file_a_directory_a_fifo_and_a_loop(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    (ctx.directory / "src").mkdir()
    os.mkfifo(ctx.directory / "pipe")
    (ctx.directory / "loop").symlink_to("loop")
    assert await refused(box, ctx, "send_file", path="nope.txt") == ("there is no file at nope.txt")
    assert await refused(box, ctx, "send_file", path="src") == (
        "src is a directory; only a regular file is sent"
    )
    assert await refused(box, ctx, "send_file", path="pipe") == (
        "pipe is not a regular file; only a regular file is sent"
    )
    assert await refused(box, ctx, "send_file", path="loop") == (
        "loop cannot be resolved (a symlink loop?)"
    )
    assert await refused(box, ctx, "send_file") == "`path` is required"
    assert ctx.uploads == []


def _sparse(path: Path, size: int) -> None:
    path.touch()
    os.truncate(path, size)


async def test_send_file_refuses_text_over_5_mib(box: ToolBox, ctx: RecordingToolContext) -> None:
    # The egress policy's limits (tests/egress has every kind); sizes are checked before reading.
    _sparse(ctx.directory / "big.log", int(9.1 * MIB))
    _sparse(ctx.directory / "just.log", 5 * MIB + 1)
    assert await refused(box, ctx, "send_file", path="big.log") == (
        "big.log is 9.1 MiB; text files are sent up to 5 MiB"
    )
    assert await refused(box, ctx, "send_file", path="just.log") == (
        "just.log is 5,242,881 bytes; text files are sent up to 5 MiB"
    )
    (ctx.directory / "limit.log").write_bytes(b"x" * (5 * MIB))
    result = await box.call(ctx, "send_file", {"path": "limit.log"})
    assert result.text.startswith("uploaded limit.log (5.0 MiB)")
    assert len(ctx.uploads[0].data) == 5 * MIB


# action_buttons


async def test_action_buttons_posts_the_prompt_and_its_buttons(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    result = await box.call(
        ctx,
        "action_buttons",
        {
            "prompt": "Deploy now?",
            "buttons": [{"label": "Deploy", "style": "success"}, {"label": "Wait"}, "Cancel"],
        },
    )
    assert result == ToolResult(
        'buttons posted; a press arrives as a new message "<name> pressed: <label>"'
    )
    assert ctx.button_posts == [
        ButtonsPosted(
            "Deploy now?",
            (
                ButtonChoice("Deploy", "success"),
                ButtonChoice("Wait", "secondary"),
                ButtonChoice("Cancel", "secondary"),
            ),
            ctx.button_posts[0].message_id,
        )
    ]


@pytest.mark.parametrize(
    ("buttons", "error"),
    [
        (None, "`buttons` is required: a list of 1 to 5 buttons"),
        ([], "`buttons` is required: a list of 1 to 5 buttons"),
        (["a", "b", "c", "d", "e", "f"], "`buttons` has 6 buttons; at most 5 fit"),
        ([{"label": "x" * 81}], "buttons[0].label is 81 characters; the limit is 80"),
        (["ok", {"style": "danger"}], "buttons[1].label is required: the text on the button"),
        (
            [{"label": "Go", "style": "blurple"}],
            "buttons[0].style must be one of primary, secondary, success, danger, not 'blurple'",
        ),
        (["Go", "Go"], "two buttons are labelled 'Go'; labels must differ"),
        ([3], 'buttons[0] must be a string or an object like {"label": "Deploy"}'),
    ],
)
async def test_action_buttons_says_what_is_wrong(
    box: ToolBox, ctx: RecordingToolContext, buttons: Any, error: str
) -> None:
    arguments = {"prompt": "Choose", "buttons": buttons}
    assert await refused(box, ctx, "action_buttons", **arguments) == error
    assert ctx.button_posts == []


# ask


async def test_ask_builds_one_question_and_returns_the_chosen_labels(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    ctx.answers.append([["Postgres", "SQLite"]])
    question = "Which databases should the cache layer support in production?\nPick any."
    result = await box.call(
        ctx,
        "ask",
        {
            "question": question,
            "options": ["Postgres", {"label": "SQLite", "description": "embedded"}],
            "multiple": True,
        },
    )
    assert result == ToolResult("Postgres, SQLite")
    [[asked]] = ctx.asked
    assert asked.question == question
    assert asked.header == "Which databases should the cache layer…"
    assert asked.options == (QuestionOption("Postgres"), QuestionOption("SQLite", "embedded"))
    assert asked.multiple
    assert asked.custom


async def test_ask_without_options_offers_a_free_answer_and_can_be_dismissed(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    ctx.answers.extend([[["next Tuesday"]], None])
    assert await box.call(ctx, "ask", {"question": "When?"}) == ToolResult("next Tuesday")
    assert await box.call(ctx, "ask", {"question": "And then?"}) == ToolResult("dismissed")
    assert [asked.header for [asked] in ctx.asked] == ["When?", "And then?"]
    assert all(asked.options == () and asked.custom for [asked] in ctx.asked)
    assert not ctx.asked[0][0].multiple


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({}, "`question` is required"),
        ({"question": "Which?", "options": "a, b"}, "`options` must be a list of choices"),
        (
            {"question": "Which?", "options": [str(n) for n in range(25)]},
            '`options` has 25 choices; at most 24 fit (an "Other…" choice is always added)',
        ),
        (
            {"question": "Which?", "options": ["x" * 101]},
            "options[0].label is 101 characters; the limit is 100",
        ),
        ({"question": "Which?", "options": ["a", "a"]}, "two options are labelled 'a'"),
        ({"question": "Which?", "multiple": "yes"}, "`multiple` must be true or false"),
        ({"question": "x" * 1801}, "`question` is 1801 characters; the limit is 1800"),
    ],
)
async def test_ask_says_what_is_wrong(
    box: ToolBox, ctx: RecordingToolContext, arguments: dict[str, Any], error: str
) -> None:
    assert (await refused(box, ctx, "ask", **arguments)).startswith(error)
    assert ctx.asked == []


# channel_history


def _entries(first: int, last: int) -> list[HistoryEntry]:
    """Messages `first`..`last`, newest first, as the context gives them."""
    return [
        HistoryEntry(n, f"user{n}", f"2025-03-0{n % 9 + 1}T10:00:00+00:00", f"message {n}")
        for n in range(last, first - 1, -1)
    ]


async def test_channel_history_reads_oldest_first_and_says_how_to_page(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    ctx.thread_history = _entries(1, 5)
    first = await box.call(ctx, "channel_history", {"limit": 2})
    assert first.text == (
        "2 messages of this thread, oldest first:\n"
        "2025-03-05T10:00:00+00:00 user4 (id 4): message 4\n"
        "2025-03-06T10:00:00+00:00 user5 (id 5): message 5\n"
        'For older messages, call channel_history with before="4".'
    )
    last = await box.call(ctx, "channel_history", {"limit": 5, "before": "4"})
    assert last.text == (
        "3 messages of this thread before message 4, oldest first:\n"
        "2025-03-02T10:00:00+00:00 user1 (id 1): message 1\n"
        "2025-03-03T10:00:00+00:00 user2 (id 2): message 2\n"
        "2025-03-04T10:00:00+00:00 user3 (id 3): message 3\n"
        "That is the beginning of this thread."
    )
    none = await box.call(ctx, "channel_history", {"before": "1"})
    assert none.text == "No messages in this thread before message 1."
    assert ctx.history_reads == [
        HistoryRead("thread", 2, None),
        HistoryRead("thread", 5, 4),
        HistoryRead("thread", 20, 1),
    ]


async def test_channel_history_of_the_project_channel(
    box: ToolBox, ctx: RecordingToolContext
) -> None:
    ctx.channel_history = [HistoryEntry(9, "ana", "2025-03-01T08:00:00+00:00", "line 1\nline 2")]
    result = await box.call(ctx, "channel_history", {"where": "channel", "limit": 1})
    assert result.text == (
        "1 message of the project channel, oldest first:\n"
        "2025-03-01T08:00:00+00:00 ana (id 9): line 1\n    line 2\n"
        'For older messages, call channel_history with before="9", where="channel".'
    )
    assert ctx.history_reads == [HistoryRead("channel", 1, None)]


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"limit": 0}, "`limit` must be from 1 to 50, not 0"),
        ({"limit": 51}, "`limit` must be from 1 to 50, not 51"),
        ({"limit": "many"}, "`limit` must be a whole number from 1 to 50, not 'many'"),
        ({"before": "yesterday"}, "`before` must be a message id (digits, as a string)"),
        ({"where": "guild"}, '`where` must be "thread" or "channel"'),
    ],
)
async def test_channel_history_says_what_is_wrong(
    box: ToolBox, ctx: RecordingToolContext, arguments: dict[str, Any], error: str
) -> None:
    assert (await refused(box, ctx, "channel_history", **arguments)).startswith(error)
    assert ctx.history_reads == []


# current_time


def test_the_time_in_the_local_zone_and_in_utc() -> None:
    paris = zoneinfo.ZoneInfo("Europe/Paris")
    summer = dt.datetime(2025, 7, 14, 22, 5, 9, tzinfo=paris)
    assert describe_time(summer, "Europe/Paris") == (
        "local: Monday 2025-07-14 22:05:09 Europe/Paris (CEST, UTC+02:00)\n"
        "UTC: 2025-07-14T20:05:09Z"
    )
    winter = dt.datetime(2025, 1, 2, 0, 30, tzinfo=paris)
    assert describe_time(winter, None) == (
        "local: Thursday 2025-01-02 00:30:00 CET (UTC+01:00)\nUTC: 2025-01-01T23:30:00Z"
    )
    utc = dt.datetime(2025, 1, 2, 0, 30, tzinfo=dt.UTC)
    assert describe_time(utc, None) == (
        "local: Thursday 2025-01-02 00:30:00 UTC (UTC+00:00)\nUTC: 2025-01-02T00:30:00Z"
    )


async def test_current_time_is_now(box: ToolBox, ctx: RecordingToolContext) -> None:
    before = dt.datetime.now(dt.UTC).replace(microsecond=0)
    result = await box.call(ctx, "current_time", {})
    after = dt.datetime.now(dt.UTC)
    local, utc = result.text.split("\n")
    assert local.startswith("local: ")
    said = dt.datetime.strptime(utc, "UTC: %Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    assert before <= said <= after
