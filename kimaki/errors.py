"""Every exception kimaki defines descends from `KimakiError`; the ones that end the daemon
say with which exit code.

```
KimakiError
├── FatalError ................ stops the daemon; `exit_code` says how (see docs/operations.md)
│   ├── ConfigError ........... 64: usage or configuration (no token, bad flag, lock held, ...)
│   ├── DaemonNotRunningError . 69: a shell command needs the daemon (kimaki._control_client)
│   └── CredentialsError ...... 78: Discord rejected the credentials or a required intent
├── RESTError ................. a REST call to Discord did not succeed (kimaki.discord.errors)
├── ModelError ................ a Discord payload not of the model's shape (kimaki.discord.errors)
├── ContentTooLong ............ also a ValueError: over 2000 characters (kimaki.discord.errors)
├── GatewayError .............. misuse of a shard (kimaki.discord.gateway)
├── ZlibStreamCorrupt ......... the gateway's zlib stream cannot go on (discord._gateway_protocol)
├── ConnectionClosed .......... the gateway's websocket is closed (discord._websocket)
├── HandshakeError ............ the gateway refused the websocket upgrade (discord._websocket)
├── EngineError ............... what an engine could not do, fit for a thread (kimaki.agents)
├── JsonRpcError .............. an ACP peer answered with an error object (acp._jsonrpc)
├── ConnectionClosedError ..... the ACP connection ended before the answer (acp._jsonrpc)
├── FileRequestError .......... an ACP file request refused (acp._files)
├── MalformedEvent ............ also a ValueError: an OpenCode event of the wrong shape
├── MalformedMessage .......... also a ValueError: an ACP message of the wrong shape (acp._wire)
├── UnknownEngineError ........ also a LookupError: an engine this daemon does not run
├── StoreClosedError .......... also a RuntimeError: the store used after `aclose()`
├── WorktreeError ............. a worktree operation that cannot go ahead (kimaki.worktrees)
├── ProjectError .............. a project operation that cannot go ahead (kimaki.projects)
├── ToolError ................. an agent's tool call that cannot be done as asked; the model
│                               reads its message (kimaki.tools)
├── McpConfigError ............ also a ValueError: an mcp.json the catalog cannot read (kimaki.mcp)
├── McpPolicyError ............ also a ValueError: a policy change that cannot be made (kimaki.mcp)
├── UpstreamError ............. an MCP server that cannot be started or reached (kimaki.mcp)
├── ScheduleError ............. also a ValueError: a task that cannot be made as asked; says
│                               what to fix (kimaki.schedules)
├── ControlError .............. the daemon refused a shell command (kimaki._control_client)
├── SessionError .............. also a ValueError: `kimaki session` asked for what is not there
├── UnknownChannelError ....... also a LookupError: a task for a channel that is not a project
│                               (kimaki.store)
├── EmulatorError ............. the Discord emulator's (kimaki.testing.discord)
└── ScriptError ............... also a ValueError: a script a fake cannot play (testing.script)
```

Anything else escaping the root nursery is a crash (exit 70). `FatalError`s carry a message
written for the person running the daemon: what is wrong and how to fix it, in one line.
Each family's own subtree is drawn in its module. Exceptions that were a builtin kind before
they joined this tree keep that base too (multiple inheritance), so `except LookupError` and
the like still catch them. One root lets a caller tell kimaki's own failures from everyone
else's; only the test fakes' private control-flow exceptions stay outside it.
"""

from __future__ import annotations

from typing import ClassVar, Final

__all__ = [
    "EXIT_CRASH",
    "EXIT_CREDENTIALS",
    "EXIT_OK",
    "EXIT_USAGE",
    "ConfigError",
    "CredentialsError",
    "FatalError",
    "KimakiError",
]

EXIT_OK: Final = 0
EXIT_USAGE: Final = 64  # EX_USAGE
EXIT_CRASH: Final = 70  # EX_SOFTWARE
EXIT_CREDENTIALS: Final = 78  # EX_CONFIG


class KimakiError(Exception):
    """Base of every exception this package defines."""


class FatalError(KimakiError):
    """The daemon cannot go on; `str(exc)` is the one line shown to the person running it."""

    exit_code: ClassVar[int] = EXIT_CRASH


class ConfigError(FatalError):
    """A usage or configuration problem the person running the daemon can fix."""

    exit_code: ClassVar[int] = EXIT_USAGE


class CredentialsError(FatalError):
    """Discord rejected the bot token, or an intent the bot needs is switched off."""

    exit_code: ClassVar[int] = EXIT_CREDENTIALS
