"""The bot: Discord messages and interactions ⇄ the thread pipeline (`kimaki.threads`), see
`_bot.py`; its parts are built, each with only what it uses, in `_compose.py`."""

from __future__ import annotations

from kimaki.bot._bot import Bot, BotConfig
from kimaki.bot._compose import compose_bot
from kimaki.bot._engines import Engines, UnknownEngineError
from kimaki.bot._interactions import (
    AUTO_DEFER_AFTER,
    InteractionContext,
    Interactions,
    SlashCommand,
    make_custom_id,
    modal_values,
    parse_custom_id,
)
from kimaki.bot._router import CONTENT_INTENT_HELP, Router, split_queue_suffix

__all__ = [
    "AUTO_DEFER_AFTER",
    "CONTENT_INTENT_HELP",
    "Bot",
    "BotConfig",
    "Engines",
    "InteractionContext",
    "Interactions",
    "Router",
    "SlashCommand",
    "UnknownEngineError",
    "compose_bot",
    "make_custom_id",
    "modal_values",
    "parse_custom_id",
    "split_queue_suffix",
]
