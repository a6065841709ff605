"""Presses on the buttons agent tools post (`action_buttons`; see `kimaki.threads.ToolButtons`),
routed from the bot's interactions to the thread pipeline.

The custom ids are interaction keys (`Interactions.custom_id`, kind "tool-button"), so by the
time a press gets here its key was found, unexpired, in the thread it was made for, and the
person pressing may drive the bot (the interactions answer everyone else "you need the Kimaki
role"); what remains is whether the buttons are still open.
"""

from __future__ import annotations

from typing import Any, Protocol

from kimaki.bot._interactions import InteractionContext, Interactions
from kimaki.store import InteractionKey
from kimaki.threads import TOOL_BUTTON_KIND, AskContext

__all__ = ["ToolButtonThreads", "install_tool_buttons"]


class ToolButtonThreads(Protocol):
    """Where a press goes (`kimaki.threads.Threads` is one)."""

    async def press_tool_button(
        self, ctx: AskContext, thread_id: int, payload: Any, choice: str
    ) -> None: ...


def install_tool_buttons(interactions: Interactions, threads: ToolButtonThreads) -> None:
    """Route presses on tools' buttons to `threads`."""

    async def tool_button(ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        await threads.press_tool_button(ctx, ctx.channel_id, key.payload, suffix)

    interactions.on_component(TOOL_BUTTON_KIND, tool_button)
