"""Settings: one frozen object, built once at start-up from CLI flags > environment > defaults.

Validation happens here, not where a value is first used, so a mistake is reported before the
daemon touches Discord, and every message names the flag or variable that fixes it.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Final, final
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from kimaki._memory import parse_size
from kimaki.agents.acp import DEFAULT_AGENTS, AgentCommand, resolve_agent, runtime_home
from kimaki.discord.gateway import HANDSHAKE_TIMEOUT
from kimaki.errors import ConfigError

__all__ = [
    "CREDENTIAL_NAME",
    "DEFAULT_DISCORD_API_URL",
    "DEFAULT_ENGINE",
    "LOCK_PORT_RANGE",
    "TRANSCRIPTION_PROVIDERS",
    "Settings",
    "derive_lock_port",
    "load_settings",
]

DEFAULT_DISCORD_API_URL: Final = "https://discord.com/api/v10"
# The systemd credential holding the bot token (`LoadCredential=kimaki-bot-token:<file>`).
CREDENTIAL_NAME: Final = "kimaki-bot-token"
LOCK_PORT_RANGE: Final = range(30000, 40000)
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
# The OpenCode HTTP engine; ACP agents are engines named `acp:<agent name>`.
DEFAULT_ENGINE: Final = "opencode"
_AGENT_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
# Defaults of the durations (seconds), for `Settings` and for `load_settings` alike.
_AGENT_IDLE_TIMEOUT: Final = 30 * 60.0
_AGENT_PROBE_INTERVAL: Final = 60.0
_AGENT_SILENCE_TIMEOUT: Final = 60.0
_THREAD_IDLE_TIMEOUT: Final = 15 * 60.0
_PERMISSION_TIMEOUT: Final = 10 * 60.0
_TASK_TIME_LIMIT: Final = 30 * 60.0
_AUDIT_ASK_TIME_LIMIT: Final = 120.0
_TASK_GRACE: Final = 60 * 60.0
_GATEWAY_HANDSHAKE_TIMEOUT: Final = HANDSHAKE_TIMEOUT
_AUDIT_RETENTION_DAYS: Final = 90.0
# Channel memory: the bytes a channel's memory (and its flash memory) may hold; the most
# messages and characters of the channel's recent conversation a new thread's first prompt gets.
_MEMORY_LIMIT_BYTES: Final = 8 * 1024
_THREAD_CONTEXT_MESSAGES: Final = 20
_THREAD_CONTEXT_CHARS: Final = 4000
# Voice messages: the services that transcribe them, the longest one transcribed (seconds,
# judged by Discord's `duration_secs` before downloading), and the time a download or the
# service may take.
TRANSCRIPTION_PROVIDERS: Final = ("openai", "groq", "gemini")
_TRANSCRIPTION_MAX_SECONDS: Final = 10 * 60.0
_TRANSCRIPTION_TIMEOUT: Final = 120.0
_TRANSCRIPTION_FALLBACK_KEYS: Final = (
    ("openai", "OPENAI_API_KEY"),
    ("gemini", "GEMINI_API_KEY"),
    ("groq", "GROQ_API_KEY"),
)


@final
@attrs.frozen
class Settings:
    """Everything the daemon is configured with. Paths are absolute."""

    data_dir: Path
    projects_dir: Path
    discord_api_url: str
    lock_port: int
    opencode_path: str
    # Seconds without session activity before an agent server is stopped (restarted on demand).
    agent_idle_timeout: float = _AGENT_IDLE_TIMEOUT
    # Seconds between health probes of an OpenCode server while a turn uses it, and without a
    # word from it during a turn before it is probed at once (a failed probe restarts it).
    agent_probe_interval: float = _AGENT_PROBE_INTERVAL
    agent_silence_timeout: float = _AGENT_SILENCE_TIMEOUT
    # Seconds a thread with nothing to do keeps its runtime in memory (rebuilt on demand).
    thread_idle_timeout: float = _THREAD_IDLE_TIMEOUT
    # Seconds a permission request waits for a person before it is denied.
    permission_timeout: float = _PERMISSION_TIMEOUT
    # A scheduled run's turn is aborted past this; a run missed by less than `task_grace`
    # (downtime) runs late, once; an older miss is skipped.
    task_time_limit: float = _TASK_TIME_LIMIT
    task_grace: float = _TASK_GRACE
    # Seconds the gateway has to answer IDENTIFY with READY, or RESUME with RESUMED / op 9.
    gateway_handshake_timeout: float = _GATEWAY_HANDSHAKE_TIMEOUT
    # Start tracemalloc at boot, so heap snapshots have allocation sites from the start.
    trace_memory: bool = False
    # Bytes; the cgroup's memory.max wins when there is one. None: no automatic snapshots.
    memory_limit: int | None = None
    # The ACP agents the daemon offers as engines `acp:<name>` (KIMAKI_AGENTS over the defaults).
    agents: tuple[AgentCommand, ...] = ()
    # The engine of channels that have not chosen one: "opencode" or "acp:<name>".
    default_engine: str = DEFAULT_ENGINE
    # From KIMAKI_BOT_TOKEN, else systemd's credential `kimaki-bot-token`
    # ($CREDENTIALS_DIRECTORY); None means "use the token stored by `kimaki token set`".
    bot_token: str | None = attrs.field(default=None, repr=False)
    # KIMAKI_AGENT_USER: the OS user agent programs run as (the daemon must run as root);
    # None runs them as the daemon's own user.
    agent_user: str | None = None
    # KIMAKI_AUDIT_RETENTION_DAYS: days the audit trail keeps an event (swept daily; 0 keeps
    # everything).
    audit_retention_days: float = _AUDIT_RETENTION_DAYS
    # Voice messages (kimaki.voice): KIMAKI_TRANSCRIPTION_PROVIDER / _BASE_URL / _MODEL /
    # _API_KEY / _LANGUAGE / _MAX_SECONDS / _TIMEOUT; the vendors' own keys as fallbacks.
    transcription_provider: str | None = None
    transcription_base_url: str | None = None
    transcription_model: str | None = None
    transcription_api_key: str | None = attrs.field(default=None, repr=False)
    transcription_fallback_keys: tuple[tuple[str, str], ...] = attrs.field(default=(), repr=False)
    transcription_language: str | None = None
    transcription_max_seconds: float = _TRANSCRIPTION_MAX_SECONDS
    transcription_timeout: float = _TRANSCRIPTION_TIMEOUT
    # KIMAKI_SENTRY_DSN: report errors to Sentry (needs `kimaki[sentry]`); None: nothing sent.
    sentry_dsn: str | None = attrs.field(default=None, repr=False)
    # KIMAKI_USAGE_TIMEZONE: the IANA zone where `/usage`'s days and budgets' periods begin
    # (None: the machine's).
    usage_timezone: str | None = None
    # Channel memory (kimaki.channel_memory): KIMAKI_MEMORY_LIMIT_BYTES,
    # KIMAKI_THREAD_CONTEXT_MESSAGES (0 to 100; 0: no recent conversation), and
    # KIMAKI_THREAD_CONTEXT_CHARS.
    memory_limit_bytes: int = _MEMORY_LIMIT_BYTES
    thread_context_messages: int = _THREAD_CONTEXT_MESSAGES
    thread_context_chars: int = _THREAD_CONTEXT_CHARS
    # KIMAKI_AUDIT_ASK_TIME_LIMIT: seconds `/audit ask`'s private agent has to answer.
    audit_ask_time_limit: float = _AUDIT_ASK_TIME_LIMIT

    @property
    def engine_names(self) -> tuple[str, ...]:
        """Every engine the daemon runs: the OpenCode HTTP engine, then one per ACP agent."""
        return _engine_names(self.agents)

    @property
    def engine_commands(self) -> dict[str, tuple[str, ...]]:
        """Each engine's name and the command line its agent processes start with."""
        return {
            DEFAULT_ENGINE: (self.opencode_path, "serve"),
            **{f"acp:{agent.name}": agent.argv for agent in self.agents},
        }

    def program_setting(self, engine: str) -> str:
        """The setting that says where `engine`'s program is (for "not found" answers)."""
        command = self.engine_commands.get(engine, ())
        if command and command[0] == self.opencode_path:
            return "KIMAKI_OPENCODE_PATH"
        return "KIMAKI_AGENTS"

    @property
    def database_path(self) -> Path:
        return self.data_dir / "discord-sessions.db"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "kimaki.log"

    @property
    def heap_snapshots_dir(self) -> Path:
        return self.data_dir / "heap-snapshots"

    @property
    def worktrees_dir(self) -> Path:
        return self.data_dir / "worktrees"

    @property
    def attachments_dir(self) -> Path:
        return self.data_dir / "attachments"

    @property
    def audit_path(self) -> Path:
        """The audit trail's own SQLite file (kept apart from the state database)."""
        return self.data_dir / "audit.db"


def derive_lock_port(data_dir: Path) -> int:
    """A stable port in 30000–39999 for `data_dir`, so each data dir has its own lock."""
    digest = hashlib.sha256(str(data_dir).encode()).digest()
    offset = int.from_bytes(digest[:8], "big") % len(LOCK_PORT_RANGE)
    return LOCK_PORT_RANGE.start + offset


def load_settings(
    *,
    data_dir: str | None = None,
    projects_dir: str | None = None,
    lock_port: str | int | None = None,
    memory_limit: str | None = None,
    trace_memory: bool = False,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Build `Settings` from CLI flag values (None when not given) over the environment.

    Raises `ConfigError` with a message naming the flag or variable to fix.
    """
    env = os.environ if environ is None else environ

    def pick(flag_value: str | int | None, variable: str) -> tuple[str | None, str]:
        if flag_value is not None:
            return str(flag_value), "flag"
        value = env.get(variable)
        if value is not None and value.strip() != "":
            return value.strip(), variable
        return None, variable

    raw_data_dir, _ = pick(data_dir, "KIMAKI_DATA_DIR")
    resolved_data_dir = _directory(raw_data_dir or "~/.kimaki", "--data-dir / KIMAKI_DATA_DIR")
    raw_projects_dir, _ = pick(projects_dir, "KIMAKI_PROJECTS_DIR")
    resolved_projects_dir = (
        _directory(raw_projects_dir, "--projects-dir / KIMAKI_PROJECTS_DIR")
        if raw_projects_dir
        else resolved_data_dir / "projects"
    )

    raw_port, port_source = pick(lock_port, "KIMAKI_LOCK_PORT")
    port_name = "--lock-port" if port_source == "flag" else "KIMAKI_LOCK_PORT"
    port = (
        _port(raw_port, port_name) if raw_port is not None else derive_lock_port(resolved_data_dir)
    )

    api_url = env.get("KIMAKI_DISCORD_API_URL", "").strip() or DEFAULT_DISCORD_API_URL
    _check_api_url(api_url)

    opencode_path = env.get("KIMAKI_OPENCODE_PATH", "").strip() or "opencode"

    def duration(variable: str, default: float) -> float:
        raw = env.get(variable, "").strip()
        return _duration(raw, variable) if raw else default

    idle = duration("KIMAKI_AGENT_IDLE_TIMEOUT", _AGENT_IDLE_TIMEOUT)
    probe_interval = duration("KIMAKI_AGENT_PROBE_INTERVAL", _AGENT_PROBE_INTERVAL)
    silence_timeout = duration("KIMAKI_AGENT_SILENCE_TIMEOUT", _AGENT_SILENCE_TIMEOUT)
    thread_idle = duration("KIMAKI_THREAD_IDLE_TIMEOUT", _THREAD_IDLE_TIMEOUT)
    permission_timeout = duration("KIMAKI_PERMISSION_TIMEOUT", _PERMISSION_TIMEOUT)
    task_time_limit = duration("KIMAKI_TASK_TIME_LIMIT", _TASK_TIME_LIMIT)
    task_grace = duration("KIMAKI_TASK_GRACE", _TASK_GRACE)
    handshake_timeout = duration("KIMAKI_GATEWAY_HANDSHAKE_TIMEOUT", _GATEWAY_HANDSHAKE_TIMEOUT)

    raw_limit, limit_source = pick(memory_limit, "KIMAKI_MEMORY_LIMIT")
    limit = (
        _size(raw_limit, "--memory-limit" if limit_source == "flag" else "KIMAKI_MEMORY_LIMIT")
        if raw_limit is not None
        else None
    )
    trace = trace_memory or env.get("KIMAKI_TRACE_MEMORY", "").strip().lower() in _TRUE

    agents = _agents(env.get("KIMAKI_AGENTS", ""), resolved_data_dir, opencode_path)
    default_engine = env.get("KIMAKI_DEFAULT_ENGINE", "").strip() or DEFAULT_ENGINE
    _check_engine(default_engine, agents)

    token = env.get("KIMAKI_BOT_TOKEN", "").strip() or None
    if token is not None:
        check_token_shape(token, "KIMAKI_BOT_TOKEN")
    else:
        token = _credential_token(env)

    agent_user = env.get("KIMAKI_AGENT_USER", "").strip() or None
    if agent_user is not None:
        _check_user(agent_user)

    transcription_provider = env.get("KIMAKI_TRANSCRIPTION_PROVIDER", "").strip().lower() or None
    if transcription_provider is not None and transcription_provider not in TRANSCRIPTION_PROVIDERS:
        raise ConfigError(
            "KIMAKI_TRANSCRIPTION_PROVIDER must be one of "
            f"{', '.join(TRANSCRIPTION_PROVIDERS)} (a local whisper server is `openai` with "
            f"KIMAKI_TRANSCRIPTION_BASE_URL), got {transcription_provider!r}"
        )
    transcription_base_url = env.get("KIMAKI_TRANSCRIPTION_BASE_URL", "").strip() or None
    if transcription_base_url is not None and urlsplit(transcription_base_url).scheme not in {
        "http",
        "https",
    }:
        raise ConfigError(
            "KIMAKI_TRANSCRIPTION_BASE_URL must be an http(s) URL such as "
            f"https://api.openai.com/v1, got {transcription_base_url!r}"
        )
    transcription_fallback_keys = tuple(
        (provider, env[variable].strip())
        for provider, variable in _TRANSCRIPTION_FALLBACK_KEYS
        if env.get(variable, "").strip()
    )

    raw_memory_bytes = env.get("KIMAKI_MEMORY_LIMIT_BYTES", "").strip()
    memory_limit_bytes = (
        _size(raw_memory_bytes, "KIMAKI_MEMORY_LIMIT_BYTES")
        if raw_memory_bytes
        else _MEMORY_LIMIT_BYTES
    )
    thread_context_messages = _count(
        env, "KIMAKI_THREAD_CONTEXT_MESSAGES", _THREAD_CONTEXT_MESSAGES, high=100
    )
    thread_context_chars = _count(
        env, "KIMAKI_THREAD_CONTEXT_CHARS", _THREAD_CONTEXT_CHARS, high=100_000
    )

    audit_retention_days = _retention_days(env.get("KIMAKI_AUDIT_RETENTION_DAYS", "").strip())

    return Settings(
        data_dir=resolved_data_dir,
        projects_dir=resolved_projects_dir,
        discord_api_url=api_url.rstrip("/"),
        lock_port=port,
        opencode_path=opencode_path,
        agent_idle_timeout=idle,
        agent_probe_interval=probe_interval,
        agent_silence_timeout=silence_timeout,
        thread_idle_timeout=thread_idle,
        permission_timeout=permission_timeout,
        task_time_limit=task_time_limit,
        task_grace=task_grace,
        gateway_handshake_timeout=handshake_timeout,
        trace_memory=trace,
        memory_limit=limit,
        agents=agents,
        default_engine=default_engine,
        bot_token=token,
        agent_user=agent_user,
        audit_retention_days=audit_retention_days,
        transcription_provider=transcription_provider,
        transcription_base_url=transcription_base_url,
        transcription_model=env.get("KIMAKI_TRANSCRIPTION_MODEL", "").strip() or None,
        transcription_api_key=env.get("KIMAKI_TRANSCRIPTION_API_KEY", "").strip() or None,
        transcription_fallback_keys=transcription_fallback_keys,
        transcription_language=env.get("KIMAKI_TRANSCRIPTION_LANGUAGE", "").strip() or None,
        transcription_max_seconds=duration(
            "KIMAKI_TRANSCRIPTION_MAX_SECONDS", _TRANSCRIPTION_MAX_SECONDS
        ),
        transcription_timeout=duration("KIMAKI_TRANSCRIPTION_TIMEOUT", _TRANSCRIPTION_TIMEOUT),
        sentry_dsn=_sentry_dsn(env.get("KIMAKI_SENTRY_DSN", "").strip() or None),
        usage_timezone=_usage_timezone(env.get("KIMAKI_USAGE_TIMEZONE", "").strip() or None),
        memory_limit_bytes=memory_limit_bytes,
        thread_context_messages=thread_context_messages,
        thread_context_chars=thread_context_chars,
        audit_ask_time_limit=duration("KIMAKI_AUDIT_ASK_TIME_LIMIT", _AUDIT_ASK_TIME_LIMIT),
    )


def _usage_timezone(name: str | None) -> str | None:
    """KIMAKI_USAGE_TIMEZONE, checked now: a wrong name is a start-up error, not a report's."""
    if name is None:
        return None
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"KIMAKI_USAGE_TIMEZONE must be an IANA timezone such as Europe/Paris or UTC, "
            f"got {name!r}"
        ) from None
    return name


def _sentry_dsn(dsn: str | None) -> str | None:
    """KIMAKI_SENTRY_DSN, checked for the shape Sentry gives: https://<key>@<host>/<project>."""
    if dsn is None:
        return None
    parts = urlsplit(dsn)
    if parts.scheme not in ("http", "https") or not parts.username or not parts.hostname:
        raise ConfigError(
            "KIMAKI_SENTRY_DSN must be the DSN Sentry shows for the project, such as "
            "https://<key>@o0.ingest.sentry.io/<project>"
        )
    return dsn


def _retention_days(value: str) -> float:
    """KIMAKI_AUDIT_RETENTION_DAYS: a number of days, 0 or more (0: keep everything)."""
    if not value:
        return _AUDIT_RETENTION_DAYS
    try:
        days = float(value)
    except ValueError:
        days = -1.0
    if not days >= 0 or days == float("inf"):
        raise ConfigError(
            f"KIMAKI_AUDIT_RETENTION_DAYS must be a number of days (0 keeps everything), "
            f"got {value!r}"
        )
    return days


def _credential_token(env: Mapping[str, str]) -> str | None:
    """The token systemd passes with `LoadCredential=kimaki-bot-token:<file>`: a file only the
    service can read, never in any process's environment."""
    directory = env.get("CREDENTIALS_DIRECTORY", "").strip()
    if not directory:
        return None
    path = Path(directory) / CREDENTIAL_NAME
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"the credential {path} cannot be read: {exc}") from None
    if not token:
        return None
    check_token_shape(token, f"the credential {path}")
    return token


def _check_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        raise ConfigError(
            f"KIMAKI_AGENT_USER: there is no user {name!r} on this machine (create it, or "
            "leave the variable unset to run agents as the daemon's user)"
        ) from None


def check_token_shape(token: str, source: str) -> None:
    """Refuse values that cannot be a bot token, without echoing the value."""
    if token.lower().startswith("bot "):
        raise ConfigError(f"{source} must be the bare token, without the 'Bot ' prefix")
    if any(ch.isspace() for ch in token) or len(token) < 20:
        raise ConfigError(
            f"{source} does not look like a Discord bot token (copy it again from the "
            "Developer Portal: Bot → Reset Token)"
        )


def _directory(value: str, name: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = Path.cwd() / path
    path = Path(os.path.normpath(path))
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{name}: {path} exists and is not a directory")
    return path


def _duration(value: str, name: str) -> float:
    """Seconds, or a number with s, m or h: '90', '45s', '30m', '2h'."""
    units = {"s": 1, "m": 60, "h": 3600}
    number, unit = (value[:-1], value[-1]) if value[-1:].lower() in units else (value, "s")
    try:
        seconds = float(number) * units[unit.lower()]
    except ValueError:
        seconds = 0
    if not seconds > 0:
        raise ConfigError(f"{name} must be a duration such as 30m or 1800, got {value!r}")
    return seconds


def _size(value: str, name: str) -> int:
    try:
        return parse_size(value)
    except ValueError:
        raise ConfigError(f"{name} must be a size such as 512M or 2G, got {value!r}") from None


def _count(env: Mapping[str, str], name: str, default: int, *, high: int) -> int:
    """A whole number from 0 to `high` in `name`; `default` when unset."""
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number from 0 to {high}, got {raw!r}") from None
    if not 0 <= value <= high:
        raise ConfigError(f"{name} must be a whole number from 0 to {high}, got {value}")
    return value


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name} must be a port number, got {value!r}") from None
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name} must be between 1 and 65535, got {port}")
    return port


def _check_api_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(
            f"KIMAKI_DISCORD_API_URL must be an http(s) URL such as {DEFAULT_DISCORD_API_URL}, "
            f"got {url!r}"
        )


def _agents(value: str, data_dir: Path, opencode_path: str) -> tuple[AgentCommand, ...]:
    """The default agents, then `KIMAKI_AGENTS`: entries separated by `;` or newlines, each
    `name=command line` (adds or replaces `name`; an empty command line removes it) or a bare
    command line (named after its program, as `resolve_agent` names it).

    An agent started as plain `opencode` (`acp:opencode` by default) runs the OpenCode that
    KIMAKI_OPENCODE_PATH names: one setting says which OpenCode this machine uses."""
    agents = {name: resolve_agent(name, data_dir) for name in DEFAULT_AGENTS}
    for entry in re.split(r"[;\n]", value):
        entry = entry.strip()
        if not entry:
            continue
        name, equals, command_line = entry.partition("=")
        name = name.strip()
        if not equals or not _AGENT_NAME.fullmatch(name):
            if equals and not any(ch.isspace() for ch in name):
                raise ConfigError(
                    f"KIMAKI_AGENTS: {name!r} is not an agent name (up to 32 letters, digits, "
                    "'-', '_' or '.'); write name=command line"
                )
            name, command_line = "", entry  # a bare command line such as `my-agent --acp`
        elif not command_line.strip():
            agents.pop(name, None)
            continue
        try:
            agent = resolve_agent(command_line, data_dir)
        except ValueError as exc:
            raise ConfigError(f"KIMAKI_AGENTS: {exc} (in {entry!r})") from None
        if name and name != agent.name:
            # A known agent's program keeps that agent's home and logins; another program
            # gets a home of its own name.
            home = agent.home
            if agent.name not in DEFAULT_AGENTS and home is not None:
                home = runtime_home(data_dir, name)
            agent = attrs.evolve(agent, name=name, home=home)
        elif not _AGENT_NAME.fullmatch(agent.name):
            raise ConfigError(
                f"KIMAKI_AGENTS: cannot name the agent of {entry!r} after its program; "
                "write name=command line"
            )
        agents[agent.name] = agent
    return tuple(
        attrs.evolve(agent, argv=(opencode_path, *agent.argv[1:]))
        if agent.program == "opencode"
        else agent
        for agent in agents.values()
    )


def _engine_names(agents: tuple[AgentCommand, ...]) -> tuple[str, ...]:
    return (DEFAULT_ENGINE, *(f"acp:{agent.name}" for agent in agents))


def _check_engine(engine: str, agents: tuple[AgentCommand, ...]) -> None:
    known = _engine_names(agents)
    if engine not in known:
        raise ConfigError(
            f"KIMAKI_DEFAULT_ENGINE must be one of {', '.join(known)} (ACP agents are "
            f"configured with KIMAKI_AGENTS), got {engine!r}"
        )
