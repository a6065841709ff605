"""The bot: Discord messages and interactions ⇄ agent sessions (see `_bot.py`)."""

from __future__ import annotations

from kimaki.bot._asks import Asks, format_permission
from kimaki.bot._bot import Bot, BotConfig
from kimaki.bot._delivery import ThreadWriter
from kimaki.bot._engines import Engines, UnknownEngineError
from kimaki.bot._interactions import (
    ACK_DEADLINE,
    InteractionContext,
    Interactions,
    SlashCommand,
    make_custom_id,
    modal_values,
    parse_custom_id,
)
from kimaki.bot._router import CONTENT_INTENT_HELP, Router, split_queue_suffix
from kimaki.bot._threads import Threads, thread_name
from kimaki.bot._turn import INTERRUPTED, ThreadTurns, compose_prompt

__all__ = [
    "ACK_DEADLINE",
    "CONTENT_INTENT_HELP",
    "INTERRUPTED",
    "Asks",
    "Bot",
    "BotConfig",
    "Engines",
    "InteractionContext",
    "Interactions",
    "Router",
    "SlashCommand",
    "ThreadTurns",
    "ThreadWriter",
    "Threads",
    "UnknownEngineError",
    "compose_prompt",
    "format_permission",
    "make_custom_id",
    "modal_values",
    "parse_custom_id",
    "split_queue_suffix",
    "thread_name",
]
