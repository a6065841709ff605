"""`kimaki` / `python -m kimaki`: the command line.

`main()` is the one place exceptions become exit codes: a `FatalError` prints its one line to
stderr and exits with its code; anything else is a crash, printed as one line with the
traceback in the log file only (exit 70). Exception groups from nurseries are unwrapped first.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import os
import shlex
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import NoReturn

import attrs
import trio

from kimaki._agent_side import AGENT_COMMANDS, run_agent_command
from kimaki._control_client import DaemonNotRunningError, find_daemon
from kimaki._log import FILE_ONLY, configure_logging, redact
from kimaki._restart import TOKEN_ENV, exec_without_token_env, take_handed_token
from kimaki._sentry import start_error_reporting, stop_error_reporting
from kimaki._systemd_unit import unit_for_current_user
from kimaki._version import __version__
from kimaki.agents import INSTALL_COMMANDS
from kimaki.agents.acp import find_agents
from kimaki.app import Daemon, prepare_data_dir, read_token_from_user
from kimaki.audit import AuditStoreError, SinceError, print_audit
from kimaki.bot._session_routes import (
    DEFAULT_READ_LIMIT,
    SessionError,
    SessionsClient,
    list_sessions,
    session_json,
)
from kimaki.errors import EXIT_CRASH, EXIT_OK, EXIT_USAGE, ConfigError, FatalError
from kimaki.projects import (
    ProjectError,
    Projects,
    ProjectsClient,
    connect_to_daemon,
    open_direct_projects,
    record_json,
)
from kimaki.schedules import ScheduleError, resolve_timezone
from kimaki.schedules._client import NO_DAEMON, TaskOperations, TasksClient, open_direct_tasks
from kimaki.schedules._shell import SendRequest, task_json
from kimaki.settings import Settings, check_token_shape, load_settings
from kimaki.store import ScheduledTask, Store
from kimaki.usage import usage_command_text

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

    send = commands.add_parser(
        "send",
        parents=[common],
        help="send a prompt to a project channel or thread, now or later",
        description="Send a prompt through the running daemon: a new thread in the project's "
        "channel (named by --name or the prompt's first line), or the session of --thread. "
        "With --send-at the prompt is stored as a task instead, which works with no daemon "
        "running too (it is sent when the daemon runs). Discord shows it as sent by the "
        "command line and the user who ran it. Exit 64 for bad input (nothing is stored), 69 "
        "for an immediate send with no daemon running; with --wait, 1 if the turn failed.",
    )
    where = send.add_mutually_exclusive_group()
    where.add_argument("--channel", metavar="ID", type=int, help="the project's channel")
    where.add_argument("--project", metavar="DIR", help="the project's folder")
    send.add_argument(
        "--thread", metavar="ID", type=int, help="continue this thread's session instead"
    )
    send.add_argument("--prompt", metavar="TEXT", help="the prompt (default: standard input)")
    send.add_argument("--name", help="the new thread's (or the task's) name")
    send.add_argument("--agent", help="the agent persona for this prompt")
    send.add_argument("--model", help="the model for this prompt (provider/model)")
    send.add_argument("--worktree", metavar="NAME", help="a new thread in a new git worktree")
    when = send.add_mutually_exclusive_group()
    when.add_argument(
        "--wait",
        action="store_true",
        help="wait for the turn to end and print the agent's final answer",
    )
    when.add_argument(
        "--send-at",
        metavar="WHEN",
        help="schedule instead: an ISO 8601 time with an offset or Z (in the future), a "
        "delay (10m, 2h30m, 1d), or a 5-field cron expression (repeats)",
    )
    send.add_argument(
        "--tz",
        metavar="AREA/CITY",
        help="the timezone of a cron expression (default: the machine's)",
    )

    task = commands.add_parser(
        "task",
        help="list, pause, resume or delete scheduled tasks",
        description="The scheduled tasks (from --send-at, /schedule, /remind and the agents' "
        "schedule tool). Through the daemon when it runs, else the database directly.",
    )
    task_commands = task.add_subparsers(
        dest="task_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    task_list = task_commands.add_parser(
        "list",
        parents=[common],
        help="list the tasks not finished, by next run",
        description="List the tasks: id, next run, schedule, last result, name, who made it.",
    )
    task_list.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    for action, what in (
        ("delete", "delete a task (its runs' history goes with it)"),
        ("pause", "pause a task: it does not run until resumed"),
        ("resume", "resume a paused task (a cron task's next run counts from now)"),
    ):
        acting = task_commands.add_parser(action, parents=[common], help=what, description=what)
        acting.add_argument("task_id", metavar="ID", type=int, help="the task (see `task list`)")

    session = commands.add_parser(
        "session",
        help="list the threads' sessions, or read one",
        description="The threads of the projects and their agent sessions.",
    )
    session_commands = session.add_subparsers(
        dest="session_command", metavar="ACTION", required=True, parser_class=_Parser
    )
    session_list = session_commands.add_parser(
        "list",
        parents=[common],
        help="threads with their session, engine, folder, last activity and state",
        description="List the threads, most recently active first. State (with the daemon "
        "running): running (a turn is under way), idle (in memory), evicted (not in memory; "
        "resumed on the next message). With no daemon every thread is evicted.",
    )
    session_list.add_argument("--project", metavar="DIR", help="only this project's threads")
    session_list.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    session_read = session_commands.add_parser(
        "read",
        parents=[common],
        help="print a thread's session messages, from its engine (needs the daemon)",
        description="Print the session's last messages as text, as its engine keeps them. "
        "Needs the running daemon (exit 69 otherwise).",
    )
    session_read.add_argument("thread_id", metavar="THREAD_ID", type=int, help="the thread")
    session_read.add_argument(
        "--limit", type=int, default=DEFAULT_READ_LIMIT, help="at most this many messages"
    )

    usage = commands.add_parser(
        "usage",
        parents=[common],
        help="what the agents' turns used and cost, from the database",
        description="Turns, tokens and cost since a date, in total, by model and by person "
        "(a Discord user id; 0 is the command line). Read from the database file, read-only: "
        "the same with or without the daemon. Days begin in KIMAKI_USAGE_TIMEZONE, else the "
        "machine's timezone.",
    )
    usage.add_argument("--json", action="store_true", help="JSON with every turn's row")
    usage.add_argument(
        "--since", metavar="DATE", help="a date or ISO time (default: this month's start)"
    )

    audit_parser = commands.add_parser(
        "audit",
        parents=[common],
        help="the audit trail: the last events, or `audit export` as JSON lines",
        description="The audit trail (<data-dir>/audit.db), read-only: the same with or "
        "without the daemon. Without an action, the last events, newest first; "
        "`kimaki audit export --since 7d > trail.jsonl` writes every event since then, "
        "oldest first, one JSON object a line.",
    )
    audit_parser.add_argument(
        "audit_action", nargs="?", choices=("export",), metavar="export", help="export"
    )
    audit_parser.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    audit_parser.add_argument(
        "--since", metavar="WHEN", help="a span back from now (30m, 2h, 7d) or an ISO date"
    )
    audit_parser.add_argument(
        "--channel", metavar="ID", type=int, help="only this channel's (or thread's) events"
    )
    audit_parser.add_argument(
        "--kind",
        action="append",
        default=[],
        metavar="KIND",
        help="only events of this kind (a prefix: turn, message.deleted); repeatable",
    )
    audit_parser.add_argument(
        "--limit", type=int, default=50, help="at most this many events (not for export)"
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
        if args.command == "send":
            return trio.run(_send_command, settings, args, _read_prompt(args))
        if args.command == "task":
            return trio.run(_task_command, settings, args)
        if args.command == "session":
            return trio.run(_session_command, settings, args)
        if args.command == "audit":
            return trio.run(_audit_command, settings, args)
        if args.command == "usage":
            return _usage_command(settings, args)
        if handed_token is not None:
            settings = attrs.evolve(settings, bot_token=handed_token)
        from_env = os.environ.pop(TOKEN_ENV, "").strip()
        if from_env and settings.bot_token is not None and argv is None:
            # Readable in /proc/<pid>/environ for as long as this image runs: start again
            # without it, the token handed over privately. (Only when this is the program's
            # own command line: `main([...])` called in-process has no command line to rerun.)
            exec_without_token_env(settings.bot_token)
        daemon = Daemon(settings)
        start_error_reporting(settings.sentry_dsn)  # only with KIMAKI_SENTRY_DSN
        trio.run(daemon.run)
        stop_error_reporting()  # what is queued leaves before an in-place restart's exec
        daemon.exec_if_restarting()  # SIGUSR2: returns only if there was no restart to do
    except BaseException as exc:
        return _exit_code(exc)
    finally:
        stop_error_reporting()  # after `_exit_code` logged a crash (a Sentry event)
    return EXIT_OK


def _usage_command(settings: Settings, args: argparse.Namespace) -> int:
    zone = resolve_timezone(settings.usage_timezone)
    print(
        usage_command_text(
            settings.database_path,
            since_text=args.since,
            as_json=args.json,
            now=time.time(),
            zone=zone,
        )
    )
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


# ---- send, task, session


def _read_prompt(args: argparse.Namespace) -> str:
    """`--prompt`, or all of standard input when it is not a terminal."""
    if args.prompt is not None:
        return str(args.prompt)
    if sys.stdin is None or sys.stdin.isatty():
        raise ConfigError("no prompt: give --prompt TEXT, or pipe it on standard input")
    return sys.stdin.read()


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        return f"uid {os.getuid()}"


def _absolute(path: str) -> Path:
    """Relative to where the command runs, not to wherever the daemon runs."""
    return Path(os.path.normpath(Path(path).expanduser().absolute()))


async def _send_command(settings: Settings, args: argparse.Namespace, prompt: str) -> int:
    request = SendRequest(
        prompt=prompt,
        os_user=_os_user(),
        channel_id=args.channel,
        directory=None if args.project is None else _absolute(args.project),
        thread_id=args.thread,
        name=args.name or "",
        agent=args.agent,
        model=args.model,
        worktree=args.worktree,
        send_at=args.send_at,
        tz=args.tz,
        wait=args.wait,
    )
    try:
        daemon = await find_daemon(settings.lock_port, settings.data_dir)
        if daemon is not None:
            outcome = await TasksClient(daemon).send(request)
        elif request.send_at is None:
            raise DaemonNotRunningError(NO_DAEMON)
        else:
            await trio.to_thread.run_sync(prepare_data_dir, settings)
            async with open_direct_tasks(settings.database_path) as tasks:
                outcome = await tasks.send(request)
    except ScheduleError as exc:
        raise ConfigError(str(exc)) from None
    if outcome.task is not None:
        later = "" if daemon is not None else " (no daemon is running: it is sent once one runs)"
        print(f"scheduled {_task_line(outcome.task)}{later}")
        return EXIT_OK
    result = outcome.result
    if result is None:
        print(f"sent: thread {outcome.thread_id}")
        return EXIT_OK
    if result.status == "answered":
        if result.answer:
            print(result.answer)
        return EXIT_OK
    _say(f"the turn in thread {outcome.thread_id} {result.status}: {result.error or 'no answer'}")
    return 1


async def _task_command(settings: Settings, args: argparse.Namespace) -> int:
    """`kimaki task ...`: through the running daemon, or the store directly."""
    try:
        daemon = await find_daemon(settings.lock_port, settings.data_dir)
        if daemon is not None:
            return await _task_action(TasksClient(daemon), args)
        await trio.to_thread.run_sync(prepare_data_dir, settings)
        async with open_direct_tasks(settings.database_path) as tasks:
            return await _task_action(tasks, args)
    except ScheduleError as exc:
        raise ConfigError(str(exc)) from None


async def _task_action(tasks: TaskOperations, args: argparse.Namespace) -> int:
    action = args.task_command
    if action == "list":
        listed = await tasks.tasks()
        if args.json:
            print(json.dumps([task_json(task) for task in listed], indent=2))
        elif not listed:
            print("no tasks: schedule one with `kimaki send --send-at WHEN` or /schedule")
        else:
            for task in listed:
                print(_task_row(task))
        return EXIT_OK
    if action == "delete":
        await tasks.delete(args.task_id)
        print(f"deleted task {args.task_id}")
    elif action == "pause":
        print(f"paused {_task_line(await tasks.pause(args.task_id))}")
    else:
        print(f"resumed {_task_line(await tasks.resume(args.task_id))}")
    return EXIT_OK


def _when_text(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def _task_line(task: ScheduledTask) -> str:
    repeats = f", repeating ({task.schedule}{' ' + task.tz if task.tz else ''})"
    name = f" {task.name!r}" if task.name else ""
    return (
        f"task {task.task_id}{name}: next run {_when_text(task.next_run_at)}"
        f"{repeats if task.schedule else ''}"
    )


def _task_row(task: ScheduledTask) -> str:
    next_run = "paused" if task.paused else _when_text(task.next_run_at)
    schedule = task.schedule or "once"
    return "\t".join(
        (
            str(task.task_id),
            next_run,
            schedule,
            task.last_status or "-",
            task.name or "-",
            task.created_by_name or str(task.created_by),
        )
    )


async def _session_command(settings: Settings, args: argparse.Namespace) -> int:
    """`kimaki session ...`: the list from the daemon (with live states) or the store; a
    session's messages only from the daemon (its engines)."""
    directory = getattr(args, "project", None)
    try:
        daemon = await find_daemon(settings.lock_port, settings.data_dir)
        sessions = None if daemon is None else SessionsClient(daemon)
        if args.session_command == "read":
            if sessions is None:
                raise DaemonNotRunningError(
                    "reading a session needs the running daemon (its engines keep the "
                    "messages): start it with `kimaki`"
                )
            entries = await sessions.read(args.thread_id, limit=args.limit)
            for entry in entries:
                print(f"[{entry.role}]\n{entry.text}\n")
            return EXIT_OK
        where = None if directory is None else _absolute(directory)
        if sessions is not None:
            rows = await sessions.list_sessions(directory=where)
        else:
            await trio.to_thread.run_sync(prepare_data_dir, settings)
            async with await Store.open(settings.database_path) as store:
                rows = await list_sessions(store.places, live=None, directory=where)
    except SessionError as exc:
        raise ConfigError(str(exc)) from None
    if args.json:
        print(json.dumps([session_json(row) for row in rows], indent=2))
    elif not rows:
        print("no sessions yet: send a message in a project channel, or `kimaki send`")
    else:
        for row in rows:
            print(
                "\t".join(
                    (
                        str(row.thread_id),
                        row.state,
                        row.engine,
                        row.session_id or "-",
                        _when_text(row.last_activity),
                        str(row.directory),
                    )
                )
            )
    return EXIT_OK


async def _audit_command(settings: Settings, args: argparse.Namespace) -> int:
    """`kimaki audit [export]`: the audit file, read-only."""
    try:
        await print_audit(
            settings.audit_path,
            sys.stdout,
            export=args.audit_action == "export",
            as_json=args.json,
            since=args.since,
            channel_id=args.channel,
            kinds=tuple(args.kind),
            limit=max(1, args.limit),
        )
    except (AuditStoreError, SinceError) as exc:
        raise ConfigError(str(exc)) from None
    return EXIT_OK
