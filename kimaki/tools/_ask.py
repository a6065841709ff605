"""`ask`: a question menu in the thread whose answer is the tool's result.

It is the thread's own question UI (the one OpenCode's questions use, "Other…" included), so an
ACP agent without a question tool of its own can ask too. It waits for a person as long as it
takes; a new message in the thread dismisses it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from kimaki.agents import Question, QuestionOption
from kimaki.tools import _args
from kimaki.tools._spec import ToolContext, ToolError, ToolResult, ToolSpec

__all__ = ["ASK", "DISMISSED"]

QUESTION_LIMIT: Final = 1800  # what the question message shows
# A menu holds 25 options; "Other…" (a free answer) always takes one of them.
MAX_OPTIONS: Final = 24
LABEL_LIMIT: Final = 100  # Discord's limit for a menu option's label and description
HEADER_LIMIT: Final = 40

DISMISSED: Final = "dismissed"


def header(question: str) -> str:
    """The question's first line, clipped: the bold title above it."""
    line = " ".join(question.strip().splitlines()[0].split())
    return line if len(line) <= HEADER_LIMIT else line[: HEADER_LIMIT - 1].rstrip() + "…"


def _option(position: int, value: object) -> QuestionOption:
    where = f"options[{position}]"
    label, value = _args.labelled(
        value, where, limit=LABEL_LIMIT, example="Yes", label_is="the text of the choice"
    )
    description = value.get("description") or ""
    if not isinstance(description, str):
        raise ToolError(f"{where}.description must be a string")
    if len(description) > LABEL_LIMIT:
        raise ToolError(
            f"{where}.description is {len(description)} characters; the limit is {LABEL_LIMIT}"
        )
    return QuestionOption(label, description.strip())


def _options(arguments: Mapping[str, Any]) -> tuple[QuestionOption, ...]:
    value = arguments.get("options")
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ToolError("`options` must be a list of choices (strings or {label, description})")
    if len(value) > MAX_OPTIONS:
        raise ToolError(
            f"`options` has {len(value)} choices; at most {MAX_OPTIONS} fit "
            '(an "Other…" choice is always added)'
        )
    options = tuple(_option(position, item) for position, item in enumerate(value))
    _args.distinct_labels([option.label for option in options], "options")
    return options


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    text = _args.required_text(arguments, "question", limit=QUESTION_LIMIT)
    options = _options(arguments)
    multiple = _args.optional_bool(arguments, "multiple", default=False)
    question = Question(
        question=text.strip(),
        header=header(text),
        options=options,
        multiple=multiple,
        custom=True,
    )
    answers = await ctx.ask([question])
    if answers is None:
        return ToolResult(DISMISSED)
    chosen = answers[0] if answers else ()
    return ToolResult(", ".join(chosen) if chosen else "answered with no choice")


ASK: Final = ToolSpec(
    name="ask",
    description=(
        "Ask the people in this session's Discord thread a question and wait for the answer, "
        "which is this tool's result. Use it when you cannot go on without a decision or a "
        "fact only they have; offer the likely answers as options (a free answer is always "
        'possible through "Other…"). It waits as long as it takes. The result is the chosen '
        'label(s), joined by ", ", or "dismissed" when someone wrote a new message '
        "instead: then read that message and do not ask again."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "question": {
                "type": "string",
                "description": "The question, complete in itself.",
                "minLength": 1,
                "maxLength": QUESTION_LIMIT,
            },
            "options": {
                "type": "array",
                "maxItems": MAX_OPTIONS,
                "description": "The choices offered (none: only a free answer); a plain string "
                "is taken as a label.",
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string", "minLength": 1, "maxLength": LABEL_LIMIT},
                        "description": {"type": "string", "maxLength": LABEL_LIMIT},
                    },
                    "required": ["label"],
                },
            },
            "multiple": {
                "type": "boolean",
                "default": False,
                "description": "true: several options may be chosen.",
            },
        },
        "required": ["question"],
    },
    run=_run,
)
