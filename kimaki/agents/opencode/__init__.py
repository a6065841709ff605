"""The OpenCode engine: `opencode serve` per project directory, over HTTP and SSE."""

from __future__ import annotations

from kimaki.agents.opencode._client import OpenCodeClient
from kimaki.agents.opencode._engine import (
    OpenCodeConfig,
    OpenCodeConnection,
    OpenCodeEngine,
    OpenCodeSession,
    new_message_id,
    open_opencode_engine,
)
from kimaki.agents.opencode._sse import SSEEvent, SSEParser

__all__ = [
    "OpenCodeClient",
    "OpenCodeConfig",
    "OpenCodeConnection",
    "OpenCodeEngine",
    "OpenCodeSession",
    "SSEEvent",
    "SSEParser",
    "new_message_id",
    "open_opencode_engine",
]
