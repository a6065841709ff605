"""The MCP catalog: every MCP server this machine knows, whichever file it was written in.

Two sources feed it. `<data-dir>/mcp.json` is kimaki's own, in the `mcpServers` format most MCP
clients share (a `command` with `args` and `env`, or a Streamable HTTP `url` with `headers`); a
mistake there is the person's to fix, so it stops the load with a message naming the file, the
entry and the fix. The person's OpenCode configuration is read too, read-only, for its `mcp`
entries: it is someone else's file, so a problem there is logged (never with a value) and that
entry or file skipped. On a name clash mcp.json wins, and later OpenCode files win over earlier
ones, as OpenCode merges them.

The catalog decides nothing: the per-channel policy picks from it, and the proxy runs what the
policy picked. Env and header values are secrets (API keys, bearer tokens): `repr` leaves them
out, and no message here ever quotes one.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal, final

import attrs

from kimaki.errors import KimakiError

__all__ = [
    "RESERVED_NAME",
    "CatalogEntry",
    "McpConfigError",
    "load_catalog",
    "opencode_config_paths",
    "strip_jsonc",
]

log = logging.getLogger("kimaki.mcp")

RESERVED_NAME: Final = "kimaki"
"""kimaki's own tool server has this name in every agent's configuration."""

# A name becomes part of tool names (`github_create_issue`), config keys and command lines.
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENV_REF: Final = re.compile(r"\{env:([^}]+)\}")
_HTTP_TYPES: Final = frozenset({"http", "streamable-http", "streamablehttp"})


class McpConfigError(KimakiError, ValueError):
    """mcp.json cannot be used as written; the message names the file, the entry and the fix."""


@final
@attrs.frozen
class CatalogEntry:
    """One MCP server of the catalog, as the proxy needs it to reach the server.

    `raw` is the entry as its file has it (the OpenCode form for OpenCode's entries), so the
    OpenCode configuration kimaki writes can switch that very entry off by name.
    """

    name: str
    transport: Literal["stdio", "http"]
    command: str = ""
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    url: str = ""
    headers: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    source: Literal["kimaki", "opencode"] = "kimaki"
    raw: Mapping[str, Any] = attrs.field(factory=dict, repr=False)

    def to_json(self) -> dict[str, Any]:
        """Everything, secrets included: for the daemon to hand a proxy its plan, nothing else."""
        return {
            "name": self.name,
            "transport": self.transport,
            "command": self.command,
            "args": list(self.args),
            "env": dict(self.env),
            "url": self.url,
            "headers": dict(self.headers),
            "source": self.source,
            "raw": dict(self.raw),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CatalogEntry:
        """The inverse of `to_json`; raises `McpConfigError` on anything else."""
        if not isinstance(data, Mapping):
            raise McpConfigError("an MCP catalog entry must be a JSON object")
        name = data.get("name")
        if not isinstance(name, str) or not name:
            raise McpConfigError('an MCP catalog entry needs a "name"')
        where = f'MCP server "{name}"'
        transport = data.get("transport")
        source = data.get("source", "kimaki")
        if transport not in ("stdio", "http"):
            raise McpConfigError(f'{where}: "transport" must be "stdio" or "http"')
        if source not in ("kimaki", "opencode"):
            raise McpConfigError(f'{where}: "source" must be "kimaki" or "opencode"')
        raw = data.get("raw", {})
        if not isinstance(raw, Mapping):
            raise McpConfigError(f'{where}: "raw" must be an object')
        command = _string(data.get("command", ""), "command", where)
        url = _string(data.get("url", ""), "url", where)
        if transport == "stdio" and not command:
            raise McpConfigError(f'{where}: a stdio server needs a "command"')
        if transport == "http" and not url:
            raise McpConfigError(f'{where}: an http server needs a "url"')
        return cls(
            name=name,
            transport=transport,
            command=command,
            args=_strings(data.get("args", []), "args", where),
            env=_string_map(data.get("env", {}), "env", where),
            url=url,
            headers=_string_map(data.get("headers", {}), "headers", where),
            source=source,
            raw=dict(raw),
        )


def opencode_config_paths(env: Mapping[str, str], home: Path) -> list[Path]:
    """The files OpenCode reads its global configuration from, lowest precedence first.

    `$XDG_CONFIG_HOME/opencode/` (else `~/.config/opencode/`): `config.json`, `opencode.json`,
    `opencode.jsonc`, merged in that order, then `$OPENCODE_CONFIG` over them. Missing files
    are listed too; `load_catalog` skips them.
    """
    xdg = env.get("XDG_CONFIG_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else home / ".config"
    folder = base / "opencode"
    paths = [folder / "config.json", folder / "opencode.json", folder / "opencode.jsonc"]
    explicit = env.get("OPENCODE_CONFIG", "")
    if explicit:
        paths.append(Path(explicit).expanduser())
    return paths


def load_catalog(
    mcp_json: Path,
    opencode_configs: Sequence[Path],
    *,
    environ: Mapping[str, str] | None = None,
) -> dict[str, CatalogEntry]:
    """The catalog by server name. Blocking file reads: run it in a thread from trio.

    `environ` resolves OpenCode's `{env:NAME}` references (the daemon's environment unless
    given), as OpenCode itself would for the same person.
    """
    catalog: dict[str, CatalogEntry] = {}
    variables = os.environ if environ is None else environ
    for path in opencode_configs:
        catalog.update(_read_opencode(path, variables))
    for name, entry in _read_mcp_json(mcp_json).items():
        if name in catalog:
            log.info("MCP server %r: %s replaces the one in the OpenCode config", name, mcp_json)
        catalog[name] = entry
    return catalog


# -- kimaki's mcp.json -----------------------------------------------------------------------


def _read_mcp_json(path: Path) -> dict[str, CatalogEntry]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise McpConfigError(f"{path} cannot be read ({type(exc).__name__}); check it") from exc
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise McpConfigError(
            f"{path} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
            'fix the file: {"mcpServers": {"<name>": {"command": ..., "args": [...]}}}'
        ) from None
    if not isinstance(document, dict):
        raise McpConfigError(f'{path} must hold a JSON object: {{"mcpServers": {{...}}}}')
    servers = document.get("mcpServers", {})
    if not isinstance(servers, dict):
        raise McpConfigError(
            f'{path}: "mcpServers" must be an object of servers by name, '
            '{"<name>": {"command": ..., "args": [...]}}'
        )
    entries: dict[str, CatalogEntry] = {}
    for name, spec in servers.items():
        if name.casefold() == RESERVED_NAME:
            log.warning(
                "%s: server %r skipped: the name is reserved for kimaki's tool server; rename it",
                path,
                name,
            )
            continue
        entries[name] = _mcp_json_entry(path, name, spec)
    return entries


def _mcp_json_entry(path: Path, name: str, spec: Any) -> CatalogEntry:
    where = f'{path}: server "{name}"'
    try:
        return _mcp_json_shape(name, spec)
    except McpConfigError as exc:
        raise McpConfigError(f"{where}: {exc}; fix that entry or remove it") from None


def _mcp_json_shape(name: str, spec: Any) -> CatalogEntry:
    """One `mcpServers` entry; errors say what is wrong, the caller says where."""
    if not _NAME.fullmatch(name):
        raise McpConfigError(
            "a name is 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit"
        )
    if not isinstance(spec, dict):
        raise McpConfigError('must be an object with a "command" or a "url"')
    kind = spec.get("type")
    if kind is not None and not isinstance(kind, str):
        raise McpConfigError('"type" must be "stdio" or "http"')
    kind = kind.casefold() if isinstance(kind, str) else None
    if kind == "sse":
        raise McpConfigError(
            "SSE servers are not supported; give the server's Streamable HTTP URL "
            'with "type": "http"'
        )
    if kind is not None and kind != "stdio" and kind not in _HTTP_TYPES:
        raise McpConfigError('"type" must be "stdio" or "http"')
    if "command" in spec and "url" in spec:
        raise McpConfigError('has both "command" and "url"; keep one')
    if "url" in spec or kind in _HTTP_TYPES:
        url = _string(spec.get("url"), "url")
        if not url.startswith(("http://", "https://")):
            raise McpConfigError('"url" must be an http:// or https:// URL')
        return CatalogEntry(
            name=name,
            transport="http",
            url=url,
            headers=_string_map(spec.get("headers", {}), "headers"),
            raw=spec,
        )
    command = spec.get("command")
    if not isinstance(command, str) or not command:
        raise McpConfigError('needs a "command" (stdio) or a "url" (http), as a string')
    return CatalogEntry(
        name=name,
        transport="stdio",
        command=command,
        args=_strings(spec.get("args", []), "args"),
        env=_string_map(spec.get("env", {}), "env"),
        raw=spec,
    )


# -- the person's OpenCode configuration -----------------------------------------------------


def _read_opencode(path: Path, environ: Mapping[str, str]) -> dict[str, CatalogEntry]:
    """The `mcp` entries of one OpenCode config file; problems are logged and skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        log.warning("%s: skipped, cannot be read (%s)", path, type(exc).__name__)
        return {}
    try:
        document = json.loads(strip_jsonc(text))
    except json.JSONDecodeError as exc:
        log.warning(
            "%s: skipped, not valid JSON or JSONC (line %d, column %d: %s)",
            path,
            exc.lineno,
            exc.colno,
            exc.msg,
        )
        return {}
    if not isinstance(document, dict):
        log.warning("%s: skipped, not a JSON object", path)
        return {}
    servers = document.get("mcp", {})
    if not isinstance(servers, dict):
        log.warning('%s: "mcp" skipped, not an object', path)
        return {}
    entries: dict[str, CatalogEntry] = {}
    for name, spec in servers.items():
        if name.casefold() == RESERVED_NAME:
            log.warning(
                "%s: MCP server %r skipped: the name is reserved for kimaki's tool server",
                path,
                name,
            )
            continue
        try:
            entries[name] = _opencode_entry(name, spec, environ)
        except McpConfigError as exc:
            log.warning("%s: MCP server %r skipped: %s", path, name, exc)
    return entries


def _opencode_entry(name: str, spec: Any, environ: Mapping[str, str]) -> CatalogEntry:
    # Messages name keys and types only: a value here may be a secret.
    if not _NAME.fullmatch(name):
        raise McpConfigError("the name is not 1 to 64 letters, digits, '_', '-' or '.'")
    if not isinstance(spec, dict):
        raise McpConfigError("not an object")
    kind = spec.get("type")
    if kind == "local":
        argv = _strings(spec.get("command"), "command")
        if not argv or not argv[0]:
            raise McpConfigError('"command" must be a non-empty list of strings')
        env = _string_map(spec.get("environment", {}), "environment")
        return CatalogEntry(
            name=name,
            transport="stdio",
            command=_resolve(argv[0], environ),
            args=tuple(_resolve(arg, environ) for arg in argv[1:]),
            env={key: _resolve(value, environ) for key, value in env.items()},
            source="opencode",
            raw=spec,
        )
    if kind == "remote":
        url = _resolve(_string(spec.get("url"), "url"), environ)
        if not url.startswith(("http://", "https://")):
            raise McpConfigError('"url" must be an http:// or https:// URL')
        headers = _string_map(spec.get("headers", {}), "headers")
        return CatalogEntry(
            name=name,
            transport="http",
            url=url,
            headers={key: _resolve(value, environ) for key, value in headers.items()},
            source="opencode",
            raw=spec,
        )
    raise McpConfigError('"type" must be "local" or "remote"')


def _resolve(value: str, environ: Mapping[str, str]) -> str:
    """OpenCode's `{env:NAME}`: the variable's value, or nothing when it is unset."""
    if "{env:" not in value:
        return value
    return _ENV_REF.sub(lambda match: environ.get(match.group(1).strip(), ""), value)


def strip_jsonc(text: str) -> str:
    """JSONC as plain JSON: comments (`//`, `/* */`) and trailing commas removed, strings kept.

    Comments become spaces and keep their newlines, so a JSON error still points at the right
    line and column.
    """
    out: list[str] = []
    comma = -1  # index in `out` of a comma only blanks have followed yet
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            end = i + 1
            while end < n and text[end] != '"':
                end += 2 if text[end] == "\\" else 1
            out.append(text[i : end + 1])
            comma = -1
            i = end + 1
        elif text.startswith("//", i):
            end = text.find("\n", i)
            end = n if end < 0 else end
            out.append(" " * (end - i))
            i = end
        elif text.startswith("/*", i):
            end = text.find("*/", i + 2)
            end = n if end < 0 else end + 2
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        else:
            if char in "}]" and comma >= 0:
                out[comma] = " "
            if char == ",":
                comma = len(out)
            elif not char.isspace():
                comma = -1
            out.append(char)
            i += 1
    return "".join(out)


# -- shapes ----------------------------------------------------------------------------------


def _string(value: Any, key: str, where: str = "") -> str:
    if not isinstance(value, str):
        raise McpConfigError(f'{_prefix(where)}"{key}" must be a string')
    return value


def _strings(value: Any, key: str, where: str = "") -> tuple[str, ...]:
    if not isinstance(value, list | tuple) or not all(isinstance(item, str) for item in value):
        raise McpConfigError(f'{_prefix(where)}"{key}" must be a list of strings')
    return tuple(value)


def _string_map(value: Any, key: str, where: str = "") -> dict[str, str]:
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise McpConfigError(f'{_prefix(where)}"{key}" must be an object of strings')
    return dict(value)


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""
