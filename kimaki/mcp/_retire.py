"""What a policy change does to running agents: their servers are retired, not killed."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from kimaki.agents import ServerRetire

__all__ = ["retire_channel_servers"]


class ChannelOfDirectory(Protocol):
    async def channel_of_directory(self, directory: Path) -> int | None: ...


async def retire_channel_servers(
    channel_id: int, engines: Iterable[object], channels: ChannelOfDirectory
) -> int:
    """Retire every agent server of `channel_id`'s directories (the project's and its threads'
    worktrees): each stops once its running turns end, so the next turn starts one with the
    channel's new MCP servers. Engines that cannot (no `ServerRetire`) are left alone.
    Returns how many servers were retired."""
    retired = 0
    for engine in engines:
        if not isinstance(engine, ServerRetire):
            continue
        for directory in engine.server_directories():
            if await channels.channel_of_directory(directory) == channel_id:
                engine.retire_server(directory)
                retired += 1
    return retired
