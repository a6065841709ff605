"""The ACP engine: Agent Client Protocol agents (`opencode acp`, `kiro-cli acp`, `gemini --acp`,
`claude-agent-acp`, `omp`, any other command) over JSON-RPC on stdio."""

from __future__ import annotations

from kimaki.agents.acp._agents import (
    DEFAULT_AGENTS,
    AgentCommand,
    find_agents,
    locate_program,
    resolve_agent,
    runtime_home,
)
from kimaki.agents.acp._engine import (
    PROTOCOL_VERSION,
    AcpConfig,
    AcpConnection,
    AcpEngine,
    AcpSession,
    AgentCapabilities,
    McpServer,
    open_acp_engine,
)
from kimaki.agents.acp._jsonrpc import (
    ConnectionClosedError,
    JsonRpcConnection,
    JsonRpcError,
    JsonRpcStatistics,
)

__all__ = [
    "DEFAULT_AGENTS",
    "PROTOCOL_VERSION",
    "AcpConfig",
    "AcpConnection",
    "AcpEngine",
    "AcpSession",
    "AgentCapabilities",
    "AgentCommand",
    "ConnectionClosedError",
    "JsonRpcConnection",
    "JsonRpcError",
    "JsonRpcStatistics",
    "McpServer",
    "find_agents",
    "locate_program",
    "open_acp_engine",
    "resolve_agent",
    "runtime_home",
]
