"""The tools every session gets, in the order `tools/list` shows them."""

from __future__ import annotations

from typing import Final

from kimaki.tools._action_buttons import ACTION_BUTTONS
from kimaki.tools._ask import ASK
from kimaki.tools._channel_history import CHANNEL_HISTORY
from kimaki.tools._current_time import CURRENT_TIME
from kimaki.tools._send_file import SEND_FILE
from kimaki.tools._send_message import SEND_MESSAGE
from kimaki.tools._spec import ToolSpec

__all__ = ["BUILTIN_TOOLS"]

BUILTIN_TOOLS: Final[tuple[ToolSpec, ...]] = (
    SEND_MESSAGE,
    SEND_FILE,
    ACTION_BUTTONS,
    ASK,
    CHANNEL_HISTORY,
    CURRENT_TIME,
)
