"""REST routes: a method and a path template, compiled with ids into a concrete request target.

The template (not the concrete path) names the rate-limit route, and the *major parameter*
(channel, guild, or webhook id + token) splits one Discord bucket into independent ones, as
Discord computes its limits per top-level resource.
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Final, final

import attrs

__all__ = ["CompiledRoute", "Route"]

_PARAM: Final = re.compile(r"\{(\w+)\}")
_MAJOR_PARAMS: Final = (
    ("channel_id",),
    ("guild_id",),
    ("webhook_id", "webhook_token"),
    ("application_id", "interaction_token"),
    ("interaction_id", "interaction_token"),
)


@final
@attrs.frozen
class Route:
    """`method` + `template`, e.g. `POST /channels/{channel_id}/messages`.

    `idempotent`: whether resending after an ambiguous network failure (the request may have
    reached Discord) is harmless. POSTs are not, unless the route says so (message creation
    carries an enforced nonce, typing and interaction callbacks are safe to repeat).
    """

    method: str
    template: str
    idempotent: bool = attrs.field(
        default=attrs.Factory(lambda self: self.method != "POST", takes_self=True)
    )

    @property
    def key(self) -> str:
        return f"{self.method} {self.template}"

    @property
    def interaction(self) -> bool:
        """Interaction endpoints are not bound by the bot's global rate limit."""
        return "{interaction_token}" in self.template

    def compile(self, **params: int | str) -> CompiledRoute:
        names = _PARAM.findall(self.template)
        if set(names) != set(params):
            raise TypeError(f"{self.key} needs {sorted(names)}, got {sorted(params)}")
        quoted = {name: urllib.parse.quote(str(value), safe="") for name, value in params.items()}
        # Tokens are credentials for 15 minutes: never in a log line or an exception message.
        shown = {
            name: "{" + name + "}" if name.endswith("token") else value
            for name, value in quoted.items()
        }
        major = ""
        for group in _MAJOR_PARAMS:
            if all(name in params for name in group):
                major = ":".join(str(params[name]) for name in group)
                break
        return CompiledRoute(
            route=self,
            path=self.template.format_map(quoted),
            loggable_path=self.template.format_map(shown),
            major=major,
        )


@final
@attrs.frozen
class CompiledRoute:
    route: Route
    path: str = attrs.field(repr=False)
    loggable_path: str
    major: str = attrs.field(repr=False)
