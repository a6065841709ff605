"""`kimaki mcp-tools` and `kimaki mcp-proxy`: the two commands an agent runs, not a person.

They run inside the agent's environment with stdout as the MCP channel, so they read no
settings and no data dir (the agent may run as another user, in an isolated home): the grant
and the lock port's URL come in the environment the daemon gave the agent's MCP configuration.
`python -m kimaki` comes here before importing the rest of the CLI, since an agent waits for
its MCP servers to start.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Final

import anyio

__all__ = ["AGENT_COMMANDS", "run_agent_command"]

AGENT_COMMANDS: Final = ("mcp-tools", "mcp-proxy")
_OK, _USAGE, _FAILED = 0, 64, 70  # kimaki.errors' EXIT_OK, EXIT_USAGE, EXIT_CRASH


def run_agent_command(command: str, server: str | None = None) -> int:
    from kimaki._log import configure_logging, register_secret

    configure_logging()  # stderr (the agent's log), secrets redacted; stdout is MCP's
    from kimaki.agents import CONTROL_URL_ENV, GRANT_ENV

    control_url = os.environ.get(CONTROL_URL_ENV, "")
    token = os.environ.get(GRANT_ENV, "")
    if not control_url or not token:
        _say(
            f"{command} is started by an agent that kimaki runs "
            "(KIMAKI_CONTROL_URL and KIMAKI_GRANT are not set)"
        )
        return _USAGE
    register_secret(token)
    from kimaki.errors import KimakiError

    try:
        if command == "mcp-tools":
            from kimaki.tools import serve_relay_stdio

            anyio.run(serve_relay_stdio, control_url, token, backend="trio")
        else:
            if not server:
                _say("mcp-proxy needs --server NAME")
                return _USAGE
            from kimaki.mcp import fetch_plan, serve_proxy_stdio

            async def proxy() -> None:
                await serve_proxy_stdio(await fetch_plan(control_url, token, server))

            anyio.run(proxy, backend="trio")
    except KimakiError as exc:
        _say(str(exc))
        return _FAILED
    except KeyboardInterrupt:
        return 130
    return _OK


def main(argv: Sequence[str]) -> int:
    """`python -m kimaki mcp-tools` / `python -m kimaki mcp-proxy --server NAME`."""
    command, rest = argv[0], list(argv[1:])
    server = None
    if rest[:1] == ["--server"] and len(rest) >= 2:
        server = rest[1]
    elif rest and rest[0].startswith("--server="):
        server = rest[0].split("=", 1)[1]
    elif rest:
        _say(f"unexpected arguments for {command}: {' '.join(rest)}")
        return _USAGE
    return run_agent_command(command, server)


def _say(message: str) -> None:
    sys.stderr.write(f"kimaki: {message}\n")
