"""`kimaki send`, `kimaki task` and `kimaki session` as a person runs them: real `python -m
kimaki` processes against a daemon's lock port, and with no daemon (the store directly).

The lock port here is served in the test's process with the real routes over the real
`Schedules` door and store; only how a run reaches Discord (`RunTarget`) is a recording fake,
so what the command line sends, and what it prints for each ending of a turn, is seen exactly.
The last test runs the whole daemon against the emulator.
"""

from __future__ import annotations

import getpass
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Generator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
import trio

from kimaki._control import ControlServer, control_url
from kimaki._control_client import CONTROL_TOKEN_FILE, issue_control_token
from kimaki.agents import HistoryEntry
from kimaki.bot._session_routes import install_session_routes
from kimaki.schedules import RunResult, Schedules, StartedRun
from kimaki.schedules._routes import install_schedule_routes
from kimaki.schedules._shell import ShellTasks
from kimaki.store import ChannelRecord, ScheduledTask, Store, ThreadRecord
from kimaki.testing.daemon import free_port, map_project, running_daemon, within
from kimaki.testing.discord import open_discord_emulator

CHANNEL = 1001
THREAD = 2002
ME = f"command line ({getpass.getuser()})"


async def kimaki(
    data_dir: Path,
    lock_port: int,
    *args: str,
    stdin: bytes | None = None,
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """`python -m kimaki ARGS --data-dir ... --lock-port ...` (the flags after the action)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KIMAKI_")}
    env["HOME"] = str(data_dir.parent)
    return await trio.run_process(
        [
            sys.executable,
            "-m",
            "kimaki",
            *args,
            "--data-dir",
            str(data_dir),
            "--lock-port",
            str(lock_port),
        ],
        stdin=stdin or b"",
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
        cwd=cwd,
    )


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in lines[0]
    return lines[0]


@attrs.frozen
class Ended:
    """A turn that has ended: awaiting it gives its result (not awaiting it is fine too)."""

    result: RunResult

    def __await__(self) -> Generator[Any, None, RunResult]:
        return self._result().__await__()

    async def _result(self) -> RunResult:
        await trio.lowlevel.checkpoint()
        return self.result


@attrs.define
class RecordingTarget:
    """The `RunTarget` the bot would be: records each prompt and ends its turn as told."""

    started: list[tuple[ScheduledTask, str]] = attrs.Factory(list)
    endings: list[RunResult] = attrs.Factory(list)

    async def start_prompt(self, task: ScheduledTask, text: str) -> StartedRun:
        self.started.append((task, text))
        ending = self.endings.pop(0) if self.endings else RunResult("answered", "done")
        return StartedRun(thread_id=task.thread_id or THREAD, done=Ended(ending))

    async def interrupt(self, thread_id: int, notice: str) -> None:
        raise AssertionError("no run here reaches its time limit")

    async def post(self, channel_id: int, content: str, *, mention_user_id: int | None) -> None:
        raise AssertionError("nothing is posted here")


async def prepare_store(data_dir: Path, project: Path) -> None:
    """A project channel and one of its threads, as `kimaki project add` and a first message
    would leave them."""
    await trio.Path(data_dir).mkdir(mode=0o700, exist_ok=True)
    async with await Store.open(data_dir / "discord-sessions.db") as store:
        await store.places.put_channel(
            ChannelRecord(channel_id=CHANNEL, directory=project, guild_id=1, app_id=2)
        )
        await store.places.put_thread(
            ThreadRecord(
                thread_id=THREAD,
                session_id="ses_1",
                engine="opencode",
                directory=project,
                channel_id=CHANNEL,
            )
        )


@asynccontextmanager
async def lock_port(
    data_dir: Path, store: Store, target: RecordingTarget
) -> AsyncIterator[tuple[int, Schedules]]:
    """The daemon's lock port as app.py wires it: one control token, the scheduling routes
    over the door (with its run target) and the store's places."""
    door = Schedules(store=store.schedules, target=target)
    control = ControlServer(
        port=0,
        data_dir=data_dir,
        health=lambda: {"pid": os.getpid(), "data_dir": str(data_dir)},
    )
    token = await issue_control_token(data_dir)
    install_schedule_routes(control, ShellTasks(door, store.places), token)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(control.serve)
        yield port, door
        nursery.cancel_scope.cancel()


async def test_send_now_and_wait_through_the_daemon(tmp_path: Path) -> None:
    data, project = tmp_path / "data", tmp_path / "app"
    project.mkdir()
    await prepare_store(data, project)
    target = RecordingTarget()
    async with (
        await Store.open(data / "discord-sessions.db") as store,
        lock_port(data, store, target) as (port, _),
    ):
        assert (data / CONTROL_TOKEN_FILE).stat().st_mode & 0o777 == 0o600
        async with httpx.AsyncClient(base_url=control_url(port)) as client:
            refused = await client.post("/schedules/send", json={"prompt": "x"})
            assert refused.status_code == 401

        result = await kimaki(data, port, "send", "--channel", str(CHANNEL), "--prompt", "hi")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode().strip() == f"sent: thread {THREAD}"
        [(task, text)] = target.started
        assert text == "hi"
        assert (task.channel_id, task.thread_id, task.created_by) == (CHANNEL, None, 0)
        assert task.created_by_name == ME

        # The prompt on stdin, the project by its folder (relative to where the command runs),
        # a name for the new thread; --wait prints the final answer and nothing else.
        target.endings.append(RunResult("answered", "CI is green"))
        result = await kimaki(
            data,
            port,
            "send",
            "--project",
            "app",
            "--name",
            "CI check",
            "--model",
            "p/m",
            "--wait",
            stdin=b"check CI\nand report\n",
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == "CI is green\n"
        task, text = target.started[-1]
        assert text == "check CI\nand report"
        assert (task.name, task.model, task.channel_id) == ("CI check", "p/m", CHANNEL)

        # A turn that fails: exit 1, the reason on stderr, nothing on stdout.
        target.endings.append(RunResult("failed", error="the model is overloaded"))
        result = await kimaki(
            data, port, "send", "--thread", str(THREAD), "--prompt", "go on", "--wait"
        )
        assert result.returncode == 1
        assert result.stdout == b""
        assert "failed: the model is overloaded" in one_line(result)
        task, _ = target.started[-1]
        assert (task.thread_id, task.channel_id) == (THREAD, CHANNEL)

        target.endings.append(RunResult("timed out", error="past the 30 min limit"))
        result = await kimaki(
            data, port, "send", "--thread", str(THREAD), "--prompt", "slow", "--wait"
        )
        assert result.returncode == 1
        assert "timed out: past the 30 min limit" in one_line(result)


async def test_bad_input_exits_64_and_sends_or_stores_nothing(tmp_path: Path) -> None:
    data, project = tmp_path / "data", tmp_path / "app"
    project.mkdir()
    await prepare_store(data, project)
    target = RecordingTarget()
    cases: list[tuple[Sequence[str], str]] = [
        (["--channel", "999", "--prompt", "x"], "channel 999 is not a project channel"),
        (["--project", str(tmp_path), "--prompt", "x"], f"{tmp_path} is not a project"),
        (["--thread", "31337", "--prompt", "x"], "thread 31337 is not a thread"),
        (["--channel", str(CHANNEL), "--prompt", "  "], "the prompt is empty"),
        (["--channel", str(CHANNEL), "--prompt", "x", "--send-at", "2001-01-01T00:00:00Z"], "past"),
        (["--channel", str(CHANNEL), "--prompt", "x", "--send-at", "61 * * * *"], "61"),
        (["--channel", str(CHANNEL), "--prompt", "x", "--send-at", "soon"], "soon"),
        (
            [
                "--channel",
                str(CHANNEL),
                "--prompt",
                "x",
                "--send-at",
                "0 9 * * *",
                "--tz",
                "Mars/X",
            ],
            "Mars/X",
        ),
        (["--prompt", "x"], "--channel ID, --project DIR, or --thread ID"),
        (["--channel", str(CHANNEL)], "the prompt is empty"),  # nothing on stdin
    ]
    async with (
        await Store.open(data / "discord-sessions.db") as store,
        lock_port(data, store, target) as (port, door),
    ):
        for args, says in cases:
            result = await kimaki(data, port, "send", *args)
            assert result.returncode == 64, (args, result.stderr)
            assert says in one_line(result), args
        # Both ways of saying where at once is a usage error argparse reports.
        result = await kimaki(data, port, "send", "--channel", "1", "--project", ".")
        assert result.returncode == 64
        assert target.started == []
        assert await door.tasks() == []


async def test_tasks_through_the_daemon(tmp_path: Path) -> None:
    data, project = tmp_path / "data", tmp_path / "app"
    project.mkdir()
    await prepare_store(data, project)
    async with (
        await Store.open(data / "discord-sessions.db") as store,
        lock_port(data, store, RecordingTarget()) as (port, door),
    ):
        result = await kimaki(
            data,
            port,
            "send",
            "--channel",
            str(CHANNEL),
            "--prompt",
            "check CI",
            "--send-at",
            "0 9 * * 1-5",
            "--tz",
            "Europe/Paris",
        )
        assert result.returncode == 0, result.stderr
        assert "repeating (0 9 * * 1-5 Europe/Paris)" in result.stdout.decode()
        # The daemon's own door has it at once (its runner was told).
        [task] = await door.tasks()
        assert (task.schedule, task.tz, task.created_by_name) == ("0 9 * * 1-5", "Europe/Paris", ME)
        assert task.task_id is not None

        result = await kimaki(data, port, "task", "list", "--json")
        assert result.returncode == 0, result.stderr
        [listed] = json.loads(result.stdout)
        assert (listed["task_id"], listed["prompt"], listed["paused"]) == (
            task.task_id,
            "check CI",
            False,
        )

        result = await kimaki(data, port, "task", "pause", str(task.task_id))
        assert result.returncode == 0, result.stderr
        assert (await door.tasks())[0].paused
        result = await kimaki(data, port, "task", "list")
        assert result.stdout.decode().split("\t")[1] == "paused"

        result = await kimaki(data, port, "task", "resume", str(task.task_id))
        assert result.returncode == 0, result.stderr
        assert not (await door.tasks())[0].paused

        result = await kimaki(data, port, "task", "delete", str(task.task_id))
        assert result.returncode == 0, result.stderr
        assert await door.tasks() == []
        result = await kimaki(data, port, "task", "delete", str(task.task_id))
        assert result.returncode == 64
        assert f"no task {task.task_id}" in one_line(result)


async def test_without_a_daemon(tmp_path: Path) -> None:
    data, project = tmp_path / "data", tmp_path / "app"
    project.mkdir()
    await prepare_store(data, project)
    port = free_port()  # nothing listens

    result = await kimaki(data, port, "send", "--channel", str(CHANNEL), "--prompt", "now")
    assert result.returncode == 69
    assert "the daemon is not running" in one_line(result)

    result = await kimaki(
        data, port, "send", "--project", str(project), "--prompt", "later", "--send-at", "2h30m"
    )
    assert result.returncode == 0, result.stderr
    assert "sent once one runs" in result.stdout.decode()

    result = await kimaki(
        data, port, "send", "--channel", "999", "--prompt", "x", "--send-at", "10m"
    )
    assert result.returncode == 64
    assert "channel 999 is not a project channel" in one_line(result)

    async with await Store.open(data / "discord-sessions.db") as store:
        [task] = await Schedules(store=store.schedules, target=None).tasks()
    assert (task.prompt, task.channel_id, task.created_by_name) == ("later", CHANNEL, ME)

    result = await kimaki(data, port, "task", "list", "--json")
    assert result.returncode == 0, result.stderr
    assert [item["task_id"] for item in json.loads(result.stdout)] == [task.task_id]
    result = await kimaki(data, port, "task", "pause", str(task.task_id))
    assert result.returncode == 0, result.stderr
    result = await kimaki(data, port, "task", "delete", str(task.task_id))
    assert result.returncode == 0, result.stderr
    result = await kimaki(data, port, "task", "list")
    assert result.stdout.decode().startswith("no tasks")

    result = await kimaki(data, port, "session", "read", str(THREAD))
    assert result.returncode == 69
    assert "needs the running daemon" in one_line(result)


@attrs.define
class FakeThreads:
    """Two threads, one with a turn under way, as the daemon's runtimes would have them."""

    running: dict[int, object | None]

    @property
    def runtimes(self) -> FakeThreads:
        return self

    def get(self, thread_id: int) -> FakeRuntime | None:
        if thread_id not in self.running:
            return None
        return FakeRuntime(self.running[thread_id])


@attrs.frozen
class FakeRuntime:
    running: object | None


@attrs.define
class Index:
    """The thread records with their last activity (the store's `list_threads`, to come)."""

    threads: list[tuple[ThreadRecord, float]]
    projects: dict[Path, int]

    async def list_threads(self) -> list[tuple[ThreadRecord, float]]:
        return list(self.threads)

    async def get_thread(self, thread_id: int) -> ThreadRecord | None:
        return next((r for r, _ in self.threads if r.thread_id == thread_id), None)

    async def channel_of_directory(self, directory: Path) -> int | None:
        return self.projects.get(directory)


@attrs.define
class TranscriptEngine:
    """An engine that keeps its sessions' messages (`SessionTranscript`)."""

    asked: list[tuple[Path, str, int]] = attrs.Factory(list)

    async def recent_messages(
        self, directory: Path, session_id: str, *, limit: int = 10
    ) -> list[HistoryEntry]:
        self.asked.append((directory, session_id, limit))
        return [HistoryEntry("user", "check CI"), HistoryEntry("assistant", "CI is green")]


@attrs.define
class OneEngine:
    engine: TranscriptEngine

    def get(self, name: str | None = None) -> TranscriptEngine:
        return self.engine

    @property
    def default(self) -> str:
        return "opencode"


async def test_sessions_through_the_daemon(tmp_path: Path) -> None:
    data, app, other = tmp_path / "data", tmp_path / "app", tmp_path / "other"
    for folder in (data, app, other):
        folder.mkdir()
    records = [
        (ThreadRecord(11, "ses_a", "opencode", app, CHANNEL), 1_700_000_100.0),
        (ThreadRecord(12, "ses_b", "acp:kiro", app, CHANNEL), 1_700_000_300.0),
        (ThreadRecord(13, "", "opencode", app / "wt", CHANNEL), 1_700_000_200.0),
        (ThreadRecord(21, "ses_c", "opencode", other, 3003), 1_700_000_000.0),
    ]
    index = Index(records, {app: CHANNEL, other: 3003})
    engine = TranscriptEngine()
    control = ControlServer(
        port=0, data_dir=data, health=lambda: {"pid": os.getpid(), "data_dir": str(data)}
    )
    token = await issue_control_token(data)
    install_session_routes(
        control,
        token,
        index=index,
        live=FakeThreads({11: object(), 13: None}),
        engines=OneEngine(engine),  # type: ignore[arg-type]
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(control.serve)

        result = await kimaki(data, port, "session", "list", "--project", str(app), "--json")
        assert result.returncode == 0, result.stderr
        rows = json.loads(result.stdout)
        assert [(r["thread_id"], r["state"]) for r in rows] == [
            ("12", "evicted"),
            ("13", "idle"),
            ("11", "running"),
        ]
        assert rows[1]["directory"] == str(app / "wt")  # a worktree's thread is the project's

        result = await kimaki(data, port, "session", "list")
        assert result.returncode == 0, result.stderr
        lines = result.stdout.decode().splitlines()
        assert [line.split("\t")[0] for line in lines] == ["12", "13", "11", "21"]

        result = await kimaki(data, port, "session", "read", "11", "--limit", "5")
        assert result.returncode == 0, result.stderr
        assert result.stdout.decode() == "[user]\ncheck CI\n\n[assistant]\nCI is green\n\n"
        assert engine.asked == [(app, "ses_a", 5)]

        result = await kimaki(data, port, "session", "read", "13")
        assert result.returncode == 64
        assert "has no session yet" in one_line(result)
        result = await kimaki(data, port, "session", "list", "--project", str(data))
        assert result.returncode == 64
        assert "is not a project" in one_line(result)
        nursery.cancel_scope.cancel()


async def test_send_at_with_the_real_daemon(tmp_path: Path) -> None:
    """The whole daemon: a task scheduled through it is in its store; with the daemon gone the
    same command stores it directly, and the next daemon lists it."""
    project, data = tmp_path / "project", tmp_path / "data"
    project.mkdir()
    async with open_discord_emulator() as emulator:
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=data
        ) as daemon:
            port = daemon.lock_port
            result = await within(
                kimaki(
                    data, port, "send", "--channel", channel_id, "--prompt", "x", "--send-at", "1d"
                )
            )
            if "does not take scheduling commands" in result.stderr.decode():
                pytest.skip("the daemon does not install the scheduling routes yet (app.py)")
            assert result.returncode == 0, result.stderr
            assert "no daemon" not in result.stdout.decode()
            result = await kimaki(data, port, "task", "list", "--json")
            assert [t["prompt"] for t in json.loads(result.stdout)] == ["x"]
            assert await daemon.stop() == 0

        result = await kimaki(
            data, port, "send", "--channel", channel_id, "--prompt", "y", "--send-at", "2d"
        )
        assert result.returncode == 0, result.stderr
        assert "no daemon is running" in result.stdout.decode()
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=data
        ) as daemon:
            result = await kimaki(data, daemon.lock_port, "task", "list", "--json")
            assert result.returncode == 0, result.stderr
            assert [t["prompt"] for t in json.loads(result.stdout)] == ["x", "y"]


async def test_send_wait_and_sessions_with_the_real_daemon(tmp_path: Path) -> None:
    """The whole path: the command line → the daemon → a new thread → the agent server
    process → the answer printed; then the session as `kimaki session` shows it."""
    project, data = tmp_path / "project", tmp_path / "data"
    project.mkdir()
    opencode = fake_opencode_command(tmp_path, "--reply", "'all checks pass'")
    async with open_discord_emulator() as emulator:
        workspace = emulator.create_workspace()
        channel_id = await map_project(data, emulator, workspace, project)
        async with running_daemon(
            api_url=emulator.api_url,
            token=emulator.token,
            data_dir=data,
            env={"KIMAKI_OPENCODE_PATH": str(opencode), "PYTHONPATH": os.getcwd()},
        ) as daemon:
            port = daemon.lock_port
            result = await within(
                kimaki(
                    data,
                    port,
                    "send",
                    "--channel",
                    channel_id,
                    "--prompt",
                    "check the build\nthoroughly",
                    "--wait",
                ),
                60,
            )
            if "does not take scheduling commands" in result.stderr.decode():
                pytest.skip("the daemon does not install the scheduling routes yet (app.py)")
            assert result.returncode == 0, result.stderr
            assert result.stdout.decode().strip() == "all checks pass"

            # A new thread named by the prompt's first line, saying who sent it.
            thread = await within(
                emulator.wait_for_thread(channel_id, lambda t: t["name"] == "check the build")
            )
            said_by = await within(
                emulator.wait_for_message(thread["id"], lambda m: ME in m["content"])
            )
            assert "check the build" in said_by["content"]

            result = await kimaki(data, port, "session", "list", "--json")
            assert result.returncode == 0, result.stderr
            [row] = json.loads(result.stdout)
            assert (row["thread_id"], row["engine"]) == (thread["id"], "opencode")
            assert row["state"] in ("idle", "running")  # the turn's end may still be flushing
            assert row["session_id"]

            result = await kimaki(data, port, "session", "read", thread["id"])
            assert result.returncode == 0, result.stderr
            text = result.stdout.decode()
            assert "[user]" in text
            assert "check the build" in text
            assert "[assistant]\nall checks pass" in text
            assert await daemon.stop() == 0


def fake_opencode_command(directory: Path, *flags: str) -> Path:
    """An executable standing in for `opencode`: the fake server, run as a process."""
    script = directory / "opencode"
    script.write_text(
        f'#!/bin/sh\nexec "{sys.executable}" -m kimaki.testing.opencode {" ".join(flags)} "$@"\n'
    )
    script.chmod(0o755)
    return script
