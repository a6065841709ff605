"""`kimaki` / `python -m kimaki`: the command line.

`main()` is the one place exceptions become exit codes: a `FatalError` prints its one line to
stderr and exits with its code; anything else is a crash, printed as one line with the
traceback in the log file only (exit 70). Exception groups from nurseries are unwrapped first.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import attrs
import trio

from kimaki._agent_side import AGENT_COMMANDS, run_agent_command
from kimaki._log import FILE_ONLY, configure_logging, redact
from kimaki._restart import TOKEN_ENV, exec_without_token_env, take_handed_token
from kimaki._systemd_unit import unit_for_current_user
from kimaki._version import __version__
from kimaki.agents import INSTALL_COMMANDS
from kimaki.agents.acp import find_agents
from kimaki.app import Daemon, prepare_data_dir, read_token_from_user
from kimaki.errors import EXIT_CRASH, EXIT_OK, EXIT_USAGE, ConfigError, FatalError
from kimaki.projects import (
    ProjectError,
    Projects,
    ProjectsClient,
    connect_to_daemon,
    open_direct_projects,
    record_json,
)
from kimaki.settings import Settings, check_token_shape, load_settings
from kimaki.store import Store

__all__ = ["main"]

log = logging.getLogger("kimaki")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 64 like every other configuration error."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"kimaki: {redact(message)} (see `kimaki --help`)\n")


def _build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--data-dir",
        help="where the database, log and worktrees live (env KIMAKI_DATA_DIR; default ~/.kimaki)",
    )
    common.add_argument(
        "--projects-dir",
        help="where new projects are created "
        "(env KIMAKI_PROJECTS_DIR; default <data-dir>/projects)",
    )
    common.add_argument(
        "--lock-port",
        help="127.0.0.1 port of the single-instance lock and control endpoint "
        "(env KIMAKI_LOCK_PORT; default derived from the data dir)",
    )
    common.add_argument("-v", "--verbose", action="store_true", help="debug lines on stderr")

    daemon = _Parser(add_help=False)
    daemon.add_argument(
        "--trace-memory",
        action="store_true",
        help="trace allocations from boot, for heap snapshots (env KIMAKI_TRACE_MEMORY=1)",
    )
    daemon.add_argument(
        "--memory-limit",
        help="take a heap snapshot past 85%% of this size, e.g. 2G, when no cgroup limit "
        "is set (env KIMAKI_MEMORY_LIMIT)",
    )

    parser = _Parser(
        prog="kimaki",
        description="Drive AI coding agents from Discord. With no command, runs the daemon.",
        parents=[common, daemon],
    )
    parser.add_argument("--version", action="version", version=f"kimaki {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    commands.add_parser(
        "run",
        parents=[common, daemon],
        help="run the daemon (the default)",
        description="Run the daemon.",
    )
    unit = commands.add_parser(
        "systemd-unit",
        parents=[common],
        help="print a systemd unit for this installation",
        description="Print a systemd unit (Type=notify, SIGUSR2 reload, watchdog) filled in "
        "for this Python, this user, this PATH and the data dir.",
    )
    unit.add_argument("--user", action="store_true", help="a user unit, for `systemctl --user`")

    token = commands.add_parser(
        "token",
        help="store or remove the bot token",
        description="Store or remove the Discord bot token kept in the database. "
        "KIMAKI_BOT_TOKEN, when set, takes precedence.",
    )
    token_commands = token.add_subparsers(
        dest="token_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    token_commands.add_parser(
        "set",
        parents=[common],
        help="read the token from a prompt (or one line of stdin) and store it",
        description="Read the bot token from a hidden prompt, or from one line of standard "
        "input when it is not a terminal, and store it in the database (mode 0600). The token "
        "is never taken from the command line, where other users can see it in `ps`.",
    )
    token_commands.add_parser(
        "clear", parents=[common], help="remove the stored token", description="Remove the token."
    )

    project = commands.add_parser(
        "project",
        help="add, list or remove project channels",
        description="Map project folders to Discord channels. With the daemon running this goes "
        "through it (the lock port); otherwise straight to Discord and the database.",
    )
    project_commands = project.add_subparsers(
        dest="project_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    add = project_commands.add_parser(
        "add",
        parents=[common],
        help="make a channel for a folder",
        description='Create a text channel (category "Kimaki") and a voice channel (category '
        '"Kimaki Audio") named after DIR, and map them to it.',
    )
    add.add_argument("directory", metavar="DIR", help="the project folder")
    add.add_argument(
        "--guild",
        metavar="ID",
        type=int,
        help="the Discord server (needed if the bot is in several)",
    )
    listing = project_commands.add_parser(
        "list", parents=[common], help="list project channels", description="List the projects."
    )
    listing.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    remove = project_commands.add_parser(
        "remove",
        parents=[common],
        help="unmap a project channel",
        description="Unmap the project of CHANNEL_ID (and its voice channel). Its files are "
        "never touched; its Discord channels are kept unless --delete-channel is given.",
    )
    remove.add_argument("channel_id", metavar="CHANNEL_ID", type=int, help="the project's channel")
    remove.add_argument(
        "--delete-channel", action="store_true", help="also delete the Discord channels"
    )

    commands.add_parser(
        "mcp-tools",
        help="(run by agents) kimaki's MCP tool server, on stdio",
        description="The MCP server on stdio that gives an agent kimaki's tools (send_message, "
        "send_file, action_buttons, ask, channel_history, current_time). Agents start it "
        "themselves, with KIMAKI_CONTROL_URL and KIMAKI_GRANT set by the daemon; every call is "
        "carried out by the daemon for the session that holds the grant.",
    )
    proxy = commands.add_parser(
        "mcp-proxy",
        help="(run by agents) an MCP server behind this channel's MCP policy, on stdio",
        description="Runs the catalog's MCP server NAME behind the policy of the channel the "
        "grant (KIMAKI_GRANT) belongs to: tools the policy does not allow are not listed and "
        "are refused without reaching the server.",
    )
    proxy.add_argument("--server", required=True, metavar="NAME", help="the catalog's server")

    commands.add_parser(
        "doctor",
        parents=[common],
        help="show the engines and which of their programs are on PATH",
        description="List every engine: the OpenCode HTTP engine (KIMAKI_OPENCODE_PATH) and "
        "each ACP agent (the named defaults and KIMAKI_AGENTS), with the command line it "
        "starts and where its program is found on PATH. Changes nothing.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command in AGENT_COMMANDS:
        return run_agent_command(args.command, getattr(args, "server", None))
    configure_logging(verbose=args.verbose)
    try:
        handed_token = take_handed_token()  # before anything can inherit its fd
        settings = load_settings(
            data_dir=args.data_dir,
            projects_dir=args.projects_dir,
            lock_port=args.lock_port,
            memory_limit=getattr(args, "memory_limit", None),
            trace_memory=getattr(args, "trace_memory", False),
        )
        if args.command == "doctor":
            return _doctor(settings)
        if args.command == "systemd-unit":
            print(unit_for_current_user(settings.data_dir, user_unit=args.user), end="")
            return EXIT_OK
        if args.command == "token":
            return trio.run(_token_command, settings, args.token_command)
        if args.command == "project":
            return trio.run(_project_command, settings, args)
        if handed_token is not None:
            settings = attrs.evolve(settings, bot_token=handed_token)
        from_env = os.environ.pop(TOKEN_ENV, "").strip()
        if from_env and settings.bot_token is not None and argv is None:
            # Readable in /proc/<pid>/environ for as long as this image runs: start again
            # without it, the token handed over privately. (Only when this is the program's
            # own command line: `main([...])` called in-process has no command line to rerun.)
            exec_without_token_env(settings.bot_token)
        daemon = Daemon(settings)
        trio.run(daemon.run)
        daemon.exec_if_restarting()  # SIGUSR2: returns only if there was no restart to do
    except BaseException as exc:
        return _exit_code(exc)
    return EXIT_OK


def _exit_code(exc: BaseException) -> int:
    error = _unwrap(exc)
    if isinstance(error, FatalError):
        log.error("stopping: %s", error, extra={FILE_ONLY: True})
        _say(str(error))
        return error.exit_code
    if isinstance(error, KeyboardInterrupt):
        return 130
    if isinstance(error, SystemExit):
        return error.code if isinstance(error.code, int) else EXIT_CRASH
    log.critical("crashed", exc_info=error, extra={FILE_ONLY: True})
    _say(f"crashed: {type(error).__name__}: {error} (the traceback is in the log file)")
    return EXIT_CRASH


def _unwrap(exc: BaseException) -> BaseException:
    """The exception that explains an exit: a FatalError anywhere in a group wins."""
    if isinstance(exc, BaseExceptionGroup):
        leaves = list(_leaves(exc))
        for leaf in leaves:
            if isinstance(leaf, FatalError):
                return leaf
        return leaves[0] if leaves else exc
    return exc


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    found: list[BaseException] = []
    for inner in group.exceptions:
        if isinstance(inner, BaseExceptionGroup):
            found.extend(_leaves(inner))
        else:
            found.append(inner)
    return found


def _say(message: str) -> None:
    print(f"kimaki: {redact(message)}", file=sys.stderr)


def _doctor(settings: Settings) -> int:
    """`kimaki doctor`: what each engine would start, the file that would really run (a name
    looked up on PATH, or the configured path), and how to install what is missing."""
    commands = settings.engine_commands
    found = find_agents(agents=commands)
    rows = [
        (
            f"{name} (default)" if name == settings.default_engine else name,
            shlex.join(commands[name]),
            path or _not_found(commands[name][0]),
        )
        for name, path in found
    ]
    print(f"kimaki {__version__}, data dir {settings.data_dir}")
    widths = [max(len(row[column]) for row in rows) for column in (0, 1)]
    for engine, command_line, where in rows:
        print(f"{engine:<{widths[0]}}  {command_line:<{widths[1]}}  {where}")
    missing = [name for name, path in found if path is None]
    if missing:
        print(
            f"{len(missing)} of {len(found)} engines cannot start here: install their program, "
            "or set KIMAKI_OPENCODE_PATH / KIMAKI_AGENTS (name=command line) to where it is"
        )
    return EXIT_OK


def _not_found(program: str) -> str:
    where = "not found" if os.sep in program else "not found on PATH"
    install = INSTALL_COMMANDS.get(os.path.basename(program))
    return f"{where} (install: {install})" if install else where


async def _token_command(settings: Settings, action: str) -> int:
    await trio.to_thread.run_sync(prepare_data_dir, settings)
    if action == "set":
        token = read_token_from_user()
        check_token_shape(token, "the token")
    async with await Store.open(settings.database_path) as store:
        if action == "set":
            await store.credentials.set_bot_token(token)
            print(f"token stored in {settings.database_path}")
            return EXIT_OK
        removed = await store.credentials.clear_bot_token()
        print("token removed" if removed else "no token was stored")
        return EXIT_OK


async def _project_command(settings: Settings, args: argparse.Namespace) -> int:
    """`kimaki project ...`: through the running daemon, or directly when there is none."""
    try:
        daemon = await connect_to_daemon(settings)
        if daemon is not None:
            return await _project_action(daemon, args)
        await trio.to_thread.run_sync(prepare_data_dir, settings)
        async with open_direct_projects(settings) as projects:
            return await _project_action(projects, args)
    except ProjectError as exc:
        raise ConfigError(str(exc)) from None


async def _project_action(projects: Projects | ProjectsClient, args: argparse.Namespace) -> int:
    action = args.project_command
    if action == "add":
        # Relative to where the command runs, not to wherever the daemon runs.
        directory = await trio.to_thread.run_sync(
            lambda: Path(args.directory).expanduser().absolute()
        )
        added = await projects.add(directory, guild_id=args.guild)
        voice = f" and voice channel {added.voice.channel_id}" if added.voice else ""
        if added.created:
            print(
                f"added {added.text.directory}: channel {added.text.channel_id}{voice} "
                f"in server {added.text.guild_id}"
            )
        else:
            print(
                f"{added.text.directory} is already a project: channel "
                f"{added.text.channel_id} in server {added.text.guild_id}"
            )
        return EXIT_OK
    if action == "list":
        records = await projects.list_projects()
        if args.json:
            print(json.dumps([record_json(record) for record in records], indent=2))
        elif not records:
            print("no projects yet: add one with `kimaki project add DIR`")
        else:
            for record in records:
                print(
                    f"{record.channel_id}\t{record.channel_type}\t"
                    f"{record.guild_id}\t{record.directory}"
                )
        return EXIT_OK
    removed = await projects.remove(args.channel_id, delete_channels=args.delete_channel)
    channels = ", ".join(str(record.channel_id) for record in removed)
    what = "deleted" if args.delete_channel else "kept"
    print(f"unmapped {removed[0].directory} (channels {channels}, {what}); files are untouched")
    return EXIT_OK
