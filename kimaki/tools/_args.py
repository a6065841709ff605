"""Reading a tool's arguments: each helper returns the value or raises `ToolError` saying what to
send instead.

A model may send anything, whatever the schema says, and its only way to learn is the error it
gets back; so every message names the argument, what was wrong, and what is accepted. Arguments
a tool does not know are ignored (a model that adds one still gets its call done).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from kimaki.tools._spec import ToolError, Where

__all__ = [
    "distinct_labels",
    "labelled",
    "optional_bool",
    "optional_int",
    "optional_text",
    "required_text",
    "where",
]


def required_text(arguments: Mapping[str, Any], name: str, *, limit: int) -> str:
    """A non-blank string of at most `limit` characters."""
    value = arguments.get(name)
    if value is None:
        raise ToolError(f"`{name}` is required")
    text = _text(name, value, limit)
    if not text.strip():
        raise ToolError(f"`{name}` is empty; send the text itself")
    return text


def optional_text(arguments: Mapping[str, Any], name: str, *, limit: int) -> str | None:
    """A string of at most `limit` characters, or None when absent or blank."""
    value = arguments.get(name)
    if value is None:
        return None
    text = _text(name, value, limit)
    return text if text.strip() else None


def optional_int(
    arguments: Mapping[str, Any], name: str, *, default: int, low: int, high: int
) -> int:
    """An integer in `low..high`; `default` when absent. "20" is taken as 20."""
    value = arguments.get(name)
    if value is None:
        return default
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ToolError(f"`{name}` must be a whole number from {low} to {high}, not {value!r}")
    if not low <= value <= high:
        raise ToolError(f"`{name}` must be from {low} to {high}, not {value}")
    return value


def optional_bool(arguments: Mapping[str, Any], name: str, *, default: bool) -> bool:
    value = arguments.get(name)
    if value is None:
        return default
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if not isinstance(value, bool):
        raise ToolError(f"`{name}` must be true or false, not {value!r}")
    return value


def where(arguments: Mapping[str, Any]) -> Where:
    """`where`: "thread" (the default) or "channel" (the thread's project channel)."""
    value = arguments.get("where")
    if value is None or value == "thread":
        return "thread"
    if value == "channel":
        return "channel"
    raise ToolError(f'`where` must be "thread" or "channel", not {value!r}')


def _text(name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ToolError(f"`{name}` must be a string, not {type(value).__name__}")
    if len(value) > limit:
        raise ToolError(f"`{name}` is {len(value)} characters; the limit is {limit}")
    return value


def distinct_labels(labels: Iterable[str], what: str) -> None:
    """Refuse two choices with one label: a person could not tell them apart."""
    seen: set[str] = set()
    for label in labels:
        if label in seen:
            raise ToolError(f"two {what} are labelled {label!r}; labels must differ")
        seen.add(label)


def labelled(
    value: object, where: str, *, limit: int, example: str, label_is: str
) -> tuple[str, Mapping[str, Any]]:
    """A choice sent as a bare label (models often do) or as an object with a `label`: its
    label, stripped, and its fields."""
    if isinstance(value, str):
        value = {"label": value}
    if not isinstance(value, Mapping):
        raise ToolError(f'{where} must be a string or an object like {{"label": "{example}"}}')
    label = value.get("label")
    if not isinstance(label, str) or not label.strip():
        raise ToolError(f"{where}.label is required: {label_is}")
    label = label.strip()
    if len(label) > limit:
        raise ToolError(f"{where}.label is {len(label)} characters; the limit is {limit}")
    return label, value
