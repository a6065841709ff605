from __future__ import annotations

import pytest

from kimaki.agents import (
    DiffStats,
    PermissionRequested,
    PlanEntry,
    PlanUpdated,
    ReasoningCompleted,
    StepFinished,
    TextCompleted,
    TextDelta,
    ToolFinished,
    ToolStarted,
    TurnEnded,
)
from kimaki.threads._render import Footer, Renderer, Verbosity, format_footer, format_tool


def tool(
    cls: type[ToolStarted] | type[ToolFinished],
    name: str,
    summary: str = "",
    *,
    status: str = "completed",
    diff: DiffStats | None = None,
    error: str | None = None,
) -> ToolStarted | ToolFinished:
    return cls(
        part_id="p",
        call_id="c",
        tool=name,
        title="",
        input_summary=summary,
        status=status,
        diff=diff,
        error=error,  # type: ignore[arg-type]
    )


def test_tool_lines() -> None:
    assert format_tool(tool(ToolStarted, "bash", "git status")) == "┣ bash _git status_"
    assert (
        format_tool(tool(ToolFinished, "edit", diff=DiffStats("src/app.py", 12, 3)))
        == "┣ edit *src/app.py* (+12-3)"
    )
    assert (
        format_tool(tool(ToolFinished, "write", diff=DiffStats("notes.md", lines=40)))
        == "┣ write *notes.md* (40 lines)"
    )
    failed = tool(ToolFinished, "bash", "make", status="error", error="exit 2:\nno rule")
    assert format_tool(failed) == "┣ bash _make_ ✗ exit 2: no rule"
    # Markdown in what the agent ran cannot break the line's formatting.
    assert format_tool(tool(ToolStarted, "bash", "ls *_x_*")) == "┣ bash _ls \\*\\_x\\_\\*_"


def lines(renderer: Renderer, *events: object) -> list[str]:
    out: list[str] = []
    for event in events:
        out.extend(renderer.render(event).blocks)  # type: ignore[arg-type]
    return out


TURN = (
    ReasoningCompleted("r1", "I should look at the\nfailing test first."),
    tool(ToolStarted, "read", "tests/test_app.py", status="running"),
    tool(ToolFinished, "read", "tests/test_app.py"),
    tool(ToolStarted, "bash", "pytest -x", status="running"),
    tool(ToolFinished, "bash", "pytest -x"),
    tool(ToolFinished, "edit", diff=DiffStats("app.py", 2, 1)),
    TextDelta("t1", "Fixed"),
    TextCompleted("t1", "Fixed the off-by-one."),
)


@pytest.mark.parametrize(
    ("verbosity", "expected"),
    [
        (
            "tools",
            [
                "> 💭 _I should look at the failing test first._",
                "┣ read _tests/test\\_app.py_",
                "┣ bash _pytest -x_",
                "┣ edit *app.py* (+2-1)",
                "Fixed the off-by-one.",
            ],
        ),
        (
            "essential",
            [
                "> 💭 _I should look at the failing test first._",
                "┣ bash _pytest -x_",
                "┣ edit *app.py* (+2-1)",
                "Fixed the off-by-one.",
            ],
        ),
        ("text", ["Fixed the off-by-one."]),
    ],
)
def test_verbosity_levels(verbosity: Verbosity, expected: list[str]) -> None:
    assert lines(Renderer(verbosity), *TURN) == expected


def test_tool_errors_show_at_every_verbosity() -> None:
    failed = tool(ToolFinished, "read", "missing.txt", status="error", error="no such file")
    assert lines(Renderer("text"), failed) == ["┣ read _missing.txt_ ✗ no such file"]


def test_flush_points() -> None:
    renderer = Renderer()
    assert renderer.render(StepFinished("s")).flush
    assert renderer.render(PermissionRequested("per", "bash", "run make")).flush
    assert not renderer.render(TextCompleted("t", "x")).flush


def test_current_todo_item_is_shown_when_it_changes() -> None:
    renderer = Renderer()
    plan = PlanUpdated(
        (
            PlanEntry("write tests", "completed"),
            PlanEntry("fix bug", "in_progress"),
            PlanEntry("docs", "pending"),
        )
    )
    assert lines(renderer, plan) == ["☐ fix bug (1/3)"]
    assert lines(renderer, plan) == []  # unchanged: nothing new to say
    done = PlanUpdated(
        (
            PlanEntry("write tests", "completed"),
            PlanEntry("fix bug", "completed"),
            PlanEntry("docs", "pending"),
        )
    )
    assert lines(renderer, done) == ["☐ docs (2/3)"]


def test_turn_endings() -> None:
    renderer = Renderer()
    assert lines(renderer, TurnEnded("t", "end_turn")) == []
    # Reaching the renderer, an abort is the agent's own: the bot's interrupts never get here.
    assert lines(renderer, TurnEnded("t", "aborted")) == [
        "⚠️ the agent cancelled the turn on its side"
    ]
    assert lines(renderer, TurnEnded("t", "max_tokens")) == [
        "⚠️ the answer was cut off: the model reached its output limit"
    ]
    assert lines(renderer, TurnEnded("t", "error", "ProviderAuthError: bad key")) == [
        "⚠️ ProviderAuthError: bad key"
    ]


def test_footer() -> None:
    footer = Footer(
        directory="/srv/my_app/",
        branch="kimaki/fix",
        seconds=72.4,
        model="openai/gpt-5",
        agent="build",
    )
    assert format_footer(footer) == "-# my\\_app · kimaki/fix · 1m 12s · openai/gpt-5 · build"
    short = Footer(directory="/srv/app", branch=None, seconds=3, model=None, agent=None)
    assert format_footer(short) == "-# app · 3s"
