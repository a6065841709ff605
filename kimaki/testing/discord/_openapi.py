"""Check the bot's REST requests against Discord's own OpenAPI description.

The emulator accepts what it understands, which is more than Discord does; this module closes the
gap by validating every request body against `discord-openapi.json` (path template → operation →
`requestBody` schema, `$ref`s resolved through the whole document). `jsonschema` is a test
dependency, so it is imported only when a validator is built.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, final
from urllib.parse import quote

import kimaki

__all__ = ["RequestValidator", "default_openapi_path"]

_SPEC_URI: Final = "urn:discord-openapi"
_PARAM: Final = re.compile(r"\{[^/}]+\}")


def default_openapi_path() -> Path:
    """`../shared/reference/discord-openapi.json` relative to the repository root."""
    return Path(kimaki.__file__).resolve().parents[2] / "shared/reference/discord-openapi.json"


def _pointer(*parts: str) -> str:
    return "/".join(quote(p.replace("~", "~0").replace("/", "~1"), safe="") for p in parts)


@final
class RequestValidator:
    """Validates (method, path under /api/v10, content type, body) against the spec."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self._spec = spec
        self._registry: Any = Registry().with_resource(
            _SPEC_URI, Resource.from_contents(dict(spec), default_specification=DRAFT202012)
        )
        self._validator_class: Any = Draft202012Validator
        self._validators: dict[tuple[str, str, str], Any] = {}
        # Literal paths first (`/users/@me` before `/users/{user_id}`).
        templates = sorted(spec["paths"], key=lambda t: (len(_PARAM.findall(t)), t))
        self._routes = [
            (
                template,
                re.compile(
                    "^"
                    + _PARAM.sub(
                        "[^/]+", re.escape(template).replace(r"\{", "{").replace(r"\}", "}")
                    )
                    + "$"
                ),
            )
            for template in templates
        ]

    @classmethod
    def from_path(cls, path: Path) -> RequestValidator:
        return cls(json.loads(path.read_text()))

    def template(self, method: str, path: str) -> str | None:
        """The spec's path template for this request, or None when the spec has no such route."""
        method = method.lower()
        for template, pattern in self._routes:
            if pattern.match(path) and method in self._spec["paths"][template]:
                return str(template)
        return None

    def validate(self, method: str, path: str, content_type: str, body: Any) -> list[str]:
        """Problems with this request, empty when the spec allows it.

        `content_type` is the media type without parameters; for multipart requests `body` is
        the decoded `payload_json`.
        """
        template = self.template(method, path)
        if template is None:
            return [f"{method} {path}: no such operation in discord-openapi.json"]
        operation = self._spec["paths"][template][method.lower()]
        request_body = operation.get("requestBody")
        if request_body is None:
            return []
        if body is None:
            if request_body.get("required"):
                return [f"{method} {template}: a request body is required"]
            return []
        content = request_body["content"]
        media = content_type if content_type in content else "application/json"
        if media not in content:
            return [f"{method} {template}: content type {content_type!r} is not accepted"]
        validator = self._validator(template, method.lower(), media)
        problems = []
        for error in sorted(validator.iter_errors(body), key=lambda e: list(map(str, e.path))):
            # For a oneOf/anyOf failure, name the branch's deepest complaint, not the whole value.
            best = _explain(error)
            where = "/".join(map(str, best.absolute_path)) or "<body>"
            problems.append(f"{method} {template}: {where}: {_shorten(best.message)}")
        return problems

    def _validator(self, template: str, method: str, media: str) -> Any:
        key = (template, method, media)
        validator = self._validators.get(key)
        if validator is None:
            ref = "#/" + _pointer(
                "paths", template, method, "requestBody", "content", media, "schema"
            )
            validator = self._validator_class({"$ref": _SPEC_URI + ref}, registry=self._registry)
            self._validators[key] = validator
        return validator


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _explain(error: Any) -> Any:
    """The most telling error inside a oneOf/anyOf failure.

    Branches that fail on the `type` discriminator are the wrong kind of object altogether; of
    the rest, the branch with the fewest complaints is taken to be the intended one.
    """
    if not error.context:
        return error
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    plausible = [
        errors
        for errors in branches.values()
        if not any(list(e.relative_path) == ["type"] for e in errors)
    ]
    if not plausible:
        return error
    errors = min(plausible, key=len)
    return _explain(max(errors, key=lambda e: len(e.path)))
