"""`action_buttons`: a message with buttons under it; a press comes back as a new message."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, get_args

from kimaki.tools import _args
from kimaki.tools._spec import (
    ButtonChoice,
    ButtonStyleName,
    ToolContext,
    ToolError,
    ToolResult,
    ToolSpec,
)

__all__ = ["ACTION_BUTTONS"]

MAX_BUTTONS: Final = 5  # one Discord action row
LABEL_LIMIT: Final = 80  # Discord's limit for a button's label
PROMPT_LIMIT: Final = 2000  # one Discord message
STYLES: Final[tuple[ButtonStyleName, ...]] = get_args(ButtonStyleName)

POSTED: Final = 'buttons posted; a press arrives as a new message "<name> pressed: <label>"'


def _button(position: int, value: object) -> ButtonChoice:
    where = f"buttons[{position}]"
    label, value = _args.labelled(
        value, where, limit=LABEL_LIMIT, example="Deploy", label_is="the text on the button"
    )
    style = value.get("style", "secondary")
    if style is None:
        style = "secondary"
    for known in STYLES:
        if style == known:
            return ButtonChoice(label, known)
    raise ToolError(f"{where}.style must be one of {', '.join(STYLES)}, not {style!r}")


def _buttons(arguments: Mapping[str, Any]) -> tuple[ButtonChoice, ...]:
    value = arguments.get("buttons")
    if not isinstance(value, list) or not value:
        raise ToolError(f"`buttons` is required: a list of 1 to {MAX_BUTTONS} buttons")
    if len(value) > MAX_BUTTONS:
        raise ToolError(f"`buttons` has {len(value)} buttons; at most {MAX_BUTTONS} fit")
    buttons = tuple(_button(position, item) for position, item in enumerate(value))
    _args.distinct_labels([button.label for button in buttons], "buttons")
    return buttons


async def _run(ctx: ToolContext, arguments: Mapping[str, Any]) -> ToolResult:
    prompt = _args.required_text(arguments, "prompt", limit=PROMPT_LIMIT)
    buttons = _buttons(arguments)
    await ctx.buttons(prompt, buttons)
    return ToolResult(POSTED)


ACTION_BUTTONS: Final = ToolSpec(
    name="action_buttons",
    description=(
        "Post a message with 1 to 5 buttons under it to this session's Discord thread, for a "
        'quick choice between a few next steps ("Deploy" / "Run the tests first" / '
        '"Stop"). It returns at once; your turn goes on or ends as usual. When a person '
        'presses a button, it arrives later as a new message "<name> pressed: <label>" (a '
        "new message in the thread closes the buttons). To wait for an answer within this "
        "turn, use ask instead."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "prompt": {
                "type": "string",
                "description": "The message above the buttons: what the choice is about.",
                "minLength": 1,
                "maxLength": PROMPT_LIMIT,
            },
            "buttons": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BUTTONS,
                "items": {
                    "type": "object",
                    "properties": {
                        "label": {"type": "string", "minLength": 1, "maxLength": LABEL_LIMIT},
                        "style": {
                            "type": "string",
                            "enum": list(STYLES),
                            "default": "secondary",
                            "description": "primary (blue), secondary (grey), success "
                            "(green), danger (red).",
                        },
                    },
                    "required": ["label"],
                },
            },
        },
        "required": ["prompt", "buttons"],
    },
    run=_run,
)
