"""Thread runtimes: per-thread serial prompts, abort on new message, queueing, idle eviction."""

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
