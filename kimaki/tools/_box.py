"""`ToolBox`: the tools the daemon serves, by name, and the one place a tool call is run.

Whatever happens in a tool, the model gets a result it can read: a `ToolError` becomes an error
result with its message (what to change), and any other failure an error result that points at
the daemon's log, where the traceback goes. A traceback never reaches the model: it may name
paths and values that are none of the agent's business, and it does not help it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final, final

from kimaki.tools._spec import ToolContext, ToolError, ToolResult, ToolSpec

__all__ = ["ToolBox"]

log = logging.getLogger("kimaki.tools")

FAILED: Final = "the tool failed; see the daemon's log"


@final
class ToolBox:
    """The tools by name, in the order they were added (the order `tools/list` shows)."""

    def __init__(self, specs: Iterable[ToolSpec] = ()) -> None:
        self._specs: dict[str, ToolSpec] = {}
        for spec in specs:
            self.add(spec)

    def add(self, spec: ToolSpec) -> None:
        """Add `spec`; a second tool with the same name is a mistake in the composition."""
        if spec.name in self._specs:
            raise ValueError(f"a tool named {spec.name!r} is already in the box")
        self._specs[spec.name] = spec

    def specs(self) -> tuple[ToolSpec, ...]:
        return tuple(self._specs.values())

    async def call(self, ctx: ToolContext, name: str, arguments: Mapping[str, Any]) -> ToolResult:
        """Run tool `name` for `ctx`'s thread; never raises (but lets cancellation through)."""
        spec = self._specs.get(name)
        if spec is None:
            known = ", ".join(self._specs)
            return ToolResult(f"no tool named {name!r}; the tools are: {known}", is_error=True)
        started = time.perf_counter()
        try:
            result = await spec.run(ctx, arguments)
        except ToolError as exc:
            log.debug("tool %s in thread %d refused: %s", name, ctx.thread_id, exc)
            return ToolResult(str(exc), is_error=True)
        except Exception:
            log.exception("tool %s failed in thread %d", name, ctx.thread_id)
            return ToolResult(FAILED, is_error=True)
        log.debug(
            "tool %s in thread %d took %.1f ms",
            name,
            ctx.thread_id,
            (time.perf_counter() - started) * 1000,
        )
        return result
