"""Which engine runs a thread: a registry of engines by name, with a default.

A channel may name its engine (`ChannelRecord.engine`); its threads inherit it and keep it in
their `ThreadRecord`, so changing a channel's engine does not move running conversations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import final

from kimaki.agents import Engine
from kimaki.errors import KimakiError

__all__ = ["Engines", "UnknownEngineError"]


class UnknownEngineError(KimakiError, LookupError):
    """A channel or thread names an engine this daemon does not run (a `LookupError` too)."""


@final
class Engines:
    def __init__(self, engines: Mapping[str, Engine], *, default: str) -> None:
        if default not in engines:
            raise ValueError(f"the default engine {default!r} is not among {sorted(engines)}")
        self._engines = dict(engines)
        self.default = default

    def names(self) -> list[str]:
        return list(self._engines)

    def get(self, name: str | None = None) -> Engine:
        """The engine called `name`, or the default one for None."""
        engine = self._engines.get(name or self.default)
        if engine is None:
            raise UnknownEngineError(
                f"the engine {name!r} is not available here (available: "
                + ", ".join(sorted(self._engines))
                + ")"
            )
        return engine
