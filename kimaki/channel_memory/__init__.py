"""Channel memory (issue #16): a project channel's standing instructions for its agents, its
flash memory (emphasis for now, gone at a restart), and the recent conversation a new thread's
first prompt carries.

`ChannelMemory` is the door (`/memory`, `/flashmemory`, `/context`, and a person's Accept on
an agent's proposal all change memory through it); `MemoryHook` is the turn hook that puts the
blocks before every prompt; `memory_tools` are the agent's `memory_list` and `memory_add`.
"""

from __future__ import annotations

from kimaki.channel_memory._memory import (
    DEFAULT_LIMIT_BYTES,
    ENTRY_LIMIT,
    PROPOSAL_KIND,
    ChannelMemory,
    MemoryKind,
    MemoryRecords,
    MemoryRefusedError,
    Proposal,
    ProposalIds,
    ProposalREST,
    collapse,
    memory_size,
)
from kimaki.channel_memory._preamble import (
    CONTEXT_END,
    CONTEXT_HEADING,
    DEFAULT_CONTEXT_CHARS,
    DEFAULT_CONTEXT_MESSAGES,
    FLASH_HEADING,
    MEMORY_HEADING,
    MemoryHook,
    RecentMessages,
    context_block,
    memory_block,
)
from kimaki.channel_memory._tools import MemoryDoor, memory_tools, proposal_text

__all__ = [
    "CONTEXT_END",
    "CONTEXT_HEADING",
    "DEFAULT_CONTEXT_CHARS",
    "DEFAULT_CONTEXT_MESSAGES",
    "DEFAULT_LIMIT_BYTES",
    "ENTRY_LIMIT",
    "FLASH_HEADING",
    "MEMORY_HEADING",
    "PROPOSAL_KIND",
    "ChannelMemory",
    "MemoryDoor",
    "MemoryHook",
    "MemoryKind",
    "MemoryRecords",
    "MemoryRefusedError",
    "Proposal",
    "ProposalIds",
    "ProposalREST",
    "RecentMessages",
    "collapse",
    "context_block",
    "memory_block",
    "memory_size",
    "memory_tools",
    "proposal_text",
]
