"""Fakes and harnesses the tests, benchmarks and offline runs share.

- `kimaki.testing.discord`: a Discord-compatible emulator (REST, gateway, actors, waiters).
- `kimaki.testing.script`: the one script vocabulary (`TurnScript(Say(...), Tool(...), ...)`)
  the three fake agents below play, each over its own wire.
- `kimaki.testing.engine`: a fake engine in memory, for everything above the engine interface.
- `kimaki.testing.opencode`: a fake `opencode serve` (also runnable as a process).
- `kimaki.testing.acp_agent`: a fake ACP agent, a child process on stdio.
- `kimaki.testing.model_server`: a fake OpenAI-compatible model server for the real OpenCode.
- `kimaki.testing.daemon`: runs the real daemon as a child process.
- `kimaki.testing.mcp_server`: a small MCP server (a stdio child, or Streamable HTTP in-process).
- `kimaki.testing.tools`: a recording `ToolContext` and fake `ToolPlaces`, for the agent tools.
"""

from __future__ import annotations
