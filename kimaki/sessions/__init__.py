"""Thread runtimes: per-thread serial prompts, abort on new message, queueing, idle eviction."""

from __future__ import annotations

from kimaki.sessions._prompt import Prompt, PromptSource
from kimaki.sessions._runtime import (
    RuntimeStatistics,
    ThreadRuntime,
    ThreadRuntimes,
    TurnHandler,
    TurnHandlerFactory,
)

__all__ = [
    "Prompt",
    "PromptSource",
    "RuntimeStatistics",
    "ThreadRuntime",
    "ThreadRuntimes",
    "TurnHandler",
    "TurnHandlerFactory",
]
