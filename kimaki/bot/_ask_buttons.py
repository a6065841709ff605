"""Clicks on asks: the permission buttons and question menus a thread's turn posted (see
`kimaki.threads.Asks`), routed from the bot's interactions to that thread's live asks.

The custom ids are interaction keys (`Interactions.custom_id`), so by the time a click gets here
its key was found, unexpired, in the thread it was made for; what remains is whether the
thread's turn still waits for that answer.
"""

from __future__ import annotations

from typing import Final, Protocol

from kimaki.bot._interactions import InteractionContext, Interactions, modal_values
from kimaki.store import InteractionKey
from kimaki.threads import Asks

__all__ = ["PERMISSION_GONE", "QUESTION_GONE", "ThreadAsks", "install_ask_buttons"]

PERMISSION_GONE: Final = "This permission request is no longer pending."
QUESTION_GONE: Final = "This question is no longer open."


class ThreadAsks(Protocol):
    """The live asks of a thread's turn (`kimaki.threads.Threads` is one)."""

    def asks(self, thread_id: int) -> Asks | None: ...


def install_ask_buttons(interactions: Interactions, threads: ThreadAsks) -> None:
    """Route the asks' components and forms to `threads`."""

    async def asks_for(ctx: InteractionContext, gone: str) -> Asks | None:
        """The asks of the thread the interaction happened in, or None (said to the person)."""
        asks = threads.asks(ctx.channel_id)
        if asks is None or ctx.interaction.data is None:
            await ctx.reply(gone)
            return None
        return asks

    async def permission_button(ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        asks = await asks_for(ctx, PERMISSION_GONE)
        if asks is not None:
            await asks.on_permission_button(ctx, str(key.payload.get("request_id", "")), suffix)

    async def question_select(ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        asks = await asks_for(ctx, QUESTION_GONE)
        if asks is not None and ctx.interaction.data is not None:
            request_id, index = _question_ref(key)
            await asks.on_question_select(ctx, request_id, index, ctx.interaction.data.values)

    async def question_other(ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        asks = await asks_for(ctx, QUESTION_GONE)
        if asks is not None and ctx.interaction.data is not None:
            answer = modal_values(ctx.interaction.data.components).get("answer", "")
            text = answer if isinstance(answer, str) else " ".join(answer)
            request_id, index = _question_ref(key)
            await asks.on_question_other(ctx, request_id, index, text)

    interactions.on_component("permission", permission_button)
    interactions.on_component("question", question_select)
    interactions.on_modal("question-other", question_other)


def _question_ref(key: InteractionKey) -> tuple[str, int]:
    """The question request and the question's index a menu or form stands for."""
    payload = key.payload if isinstance(key.payload, dict) else {}
    index = payload.get("index")
    return str(payload.get("request_id", "")), index if isinstance(index, int) else -1
