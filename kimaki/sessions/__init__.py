"""Thread runtimes: per-thread serial prompts in arrival order, abort on new message, messages
joining a prompt the engine does not have yet, queueing, idle eviction."""

from __future__ import annotations

from kimaki.sessions._attachments import (
    AttachmentInfo,
    PreparedAttachments,
    prepare_attachments,
)
from kimaki.sessions._prompt import Prompt, PromptFile, PromptSource, QuotedMessage
from kimaki.sessions._runtime import (
    RuntimeStatistics,
    ThreadRuntime,
    ThreadRuntimes,
    TurnHandler,
    TurnHandlerFactory,
)

__all__ = [
    "AttachmentInfo",
    "PreparedAttachments",
    "Prompt",
    "PromptFile",
    "PromptSource",
    "QuotedMessage",
    "RuntimeStatistics",
    "ThreadRuntime",
    "ThreadRuntimes",
    "TurnHandler",
    "TurnHandlerFactory",
    "prepare_attachments",
]
