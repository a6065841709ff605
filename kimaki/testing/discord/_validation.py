"""The form checks Discord makes before it changes anything (names, message payloads): each
raises the `DiscordAPIError` Discord answers, `50035 Invalid Form Body` with the field's error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body
from kimaki.testing.discord._world import FLAG_COMPONENTS_V2, MAX_CONTENT, File

__all__ = [
    "require_name",
    "validate_message_payload",
]


def require_name(value: Any, field: str, limit: int = 100) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= limit:
        raise invalid_form_body(
            [field], "BASE_TYPE_BAD_LENGTH", f"Must be between 1 and {limit} in length."
        )
    return value


def validate_message_payload(
    payload: Mapping[str, Any], files: Sequence[File], *, editing: bool = False
) -> None:
    content = payload.get("content")
    if content is not None and not isinstance(content, str):
        raise invalid_form_body(["content"], "BASE_TYPE_STRING", "Must be a string.")
    if content is not None and len(content) > MAX_CONTENT:
        raise invalid_form_body(
            ["content"], "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT} or fewer in length."
        )
    embeds = payload.get("embeds") or []
    if len(embeds) > 10:
        raise invalid_form_body(["embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")
    components = payload.get("components") or []
    flags = payload.get("flags") or 0
    if not flags & FLAG_COMPONENTS_V2:
        if len(components) > 5:
            raise invalid_form_body(
                ["components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length."
            )
        for row_index, row in enumerate(components):
            children = row.get("components") or []
            if row.get("type") != 1 or not 1 <= len(children) <= 5:
                raise invalid_form_body(
                    ["components", row_index],
                    "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                    "An action row must hold between 1 and 5 components.",
                )
    if len(files) > 10:
        raise invalid_form_body(["files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")
    if not editing and not (
        content
        or embeds
        or components
        or files
        or payload.get("sticker_ids")
        or payload.get("poll")
    ):
        raise DiscordAPIError(400, 50006, "Cannot send an empty message")
