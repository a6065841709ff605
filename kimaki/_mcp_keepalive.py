"""Keeping a long MCP tool call alive: progress notifications while it runs.

MCP clients give a request a time limit of their own: OpenCode's (the TypeScript SDK's default)
is 60 s, after which the call fails with "Request timed out", and it resets that limit on every
progress notification. Kimaki's tool server (an `ask` waits for a person, as long as it takes)
and the policy proxy (an upstream tool may run for minutes) say "still working" every
`EVERY` seconds, for requests that carry a progress token, until the answer is sent.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final, Protocol

import trio
from mcp import types

__all__ = ["EVERY", "progress_while_running"]

EVERY: Final = 20.0


class _Progress(Protocol):
    async def send_progress_notification(
        self,
        progress_token: str | int,
        progress: float,
        total: float | None = ...,
        message: str | None = ...,
        related_request_id: str | None = ...,
    ) -> None: ...


class _RequestContext(Protocol):
    @property
    def meta(self) -> types.RequestParams.Meta | None: ...

    @property
    def session(self) -> Any: ...


@asynccontextmanager
async def progress_while_running(
    context: _RequestContext, *, every: float = EVERY
) -> AsyncIterator[None]:
    """Within the block, a progress notification every `every` seconds for the request of
    `context` (a low-level server's `request_context`), if it asked for progress."""
    token = context.meta.progressToken if context.meta is not None else None
    if token is None:
        yield
        return
    session: _Progress = context.session
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_beat, session, token, every)
        try:
            yield
        finally:
            nursery.cancel_scope.cancel()


async def _beat(session: _Progress, token: str | int, every: float) -> None:
    beats = 0
    while True:
        await trio.sleep(every)
        beats += 1
        try:
            await session.send_progress_notification(token, float(beats), message="working")
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return  # the client went away; the call's own path notices
