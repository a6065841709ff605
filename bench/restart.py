"""Restarts under steady traffic: SIGUSR2 in place, or SIGKILL and a cold start.

    python bench/restart.py [--signal usr2|kill] [--threads 3] [--restarts 5] [--pause 0.05]

Runs the real daemon (`python -m kimaki`, `kimaki.testing.daemon`) against the Discord
emulator. Its "opencode" is a stub pointing at a fake OpenCode in this process, so the agent
outlives the daemon (as an adopted agent server does) and every prompt it receives is counted.
One project channel; `--threads` threads, each driven by a person who sends a message, waits
for the bot's answer (or `--answer-timeout`), pauses `--pause` seconds and sends the next; one
more person opens a thread every `--open-every` seconds and runs `/new-session` every
`--command-every` seconds. Every `--every` seconds the daemon gets the signal, `--restarts`
times; after a SIGKILL a new daemon starts on the same data dir and RESUMEs from the stored
gateway sequence, so the emulator replays what came after it.

Reported (`kimaki.testing.traffic`):

- **signal → RESUMED**: from the signal to the emulator's gateway receiving the RESUME of the
  new process (Discord then replays what was sent meanwhile); for SIGUSR2 also signal → the new
  process's `READY=1` as a `$NOTIFY_SOCKET` would hear it;
- **replayed**: events the emulator sent again on those RESUMEs (new sequence − resumed
  sequence), and how many of them the bot recognised as handled and refused;
- **lost**: a message with no answer; **answered twice**; **duplicate prompts** at the agent
  (by message id; command prompts by text); commands run twice or not at all;
- the pid after each SIGUSR2 restart (it must not change).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import trio

from kimaki.testing.bot import said
from kimaki.testing.daemon import DaemonProcess, map_project, running_daemon, wait_for_health
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.opencode import running_fake_opencode, stub_command
from kimaki.testing.traffic import Traffic, fake_opencode_prompts

ANSWER = "ok"
_REFUSED = re.compile(
    r"already handled \(replayed\)|was already handled|thread was opened before a restart"
)


class NotifyListener:
    """Stands in for systemd's `$NOTIFY_SOCKET`: when did each `READY=1` arrive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ready_at: list[float] = []
        self._lot = trio.lowlevel.ParkingLot()

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        with trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            await sock.bind(str(self.path))
            task_status.started()
            while True:
                data = await sock.recv(4096)
                if data.startswith(b"READY=1"):
                    self.ready_at.append(time.monotonic())
                    self._lot.unpark_all()

    async def wait_for_ready(self, count: int) -> float:
        while len(self.ready_at) < count:
            await self._lot.park()
        return self.ready_at[count - 1]


class Run:
    """The daemon (re)started on one data dir, and what its restarts cost."""

    def __init__(self, emulator: DiscordEmulator, data: Path, env: dict[str, str]) -> None:
        self.emulator = emulator
        self.data = data
        self.env = env
        self.resumed: list[float] = []
        self.ready: list[float] = []
        self.pids: set[int] = set()
        self.replayed = 0
        self.logs: list[str] = []

    @asynccontextmanager
    async def daemon(self) -> AsyncIterator[DaemonProcess]:
        async with running_daemon(
            api_url=self.emulator.api_url,
            token=self.emulator.token,
            data_dir=self.data,
            env=self.env,
            wait_ready=False,
        ) as daemon:
            yield daemon
            self.logs.append(daemon.log_text())

    async def resumed_after(self, count: int, started: float) -> None:
        """Wait for RESUME number `count`; count what the emulator replays for it."""
        gateway = self.emulator.gateway
        with trio.fail_after(30):
            resume = await gateway.wait_for_resume(count)
        self.resumed.append(time.monotonic() - started)
        # The session's newest sequence now, less the one resumed from: replayed (RESUMED
        # itself not counted).
        sessions = getattr(gateway, "_sessions", {})
        session = sessions.get(resume.get("session_id"))
        if session is not None:
            self.replayed += max(0, session.sequence - int(resume.get("seq") or 0) - 1)

    async def sigusr2(self, daemon: DaemonProcess, notify: NotifyListener) -> None:
        resumes = len(self.emulator.gateway.resumes)
        readies = len(notify.ready_at)
        started = time.monotonic()
        daemon.send_signal(signal.SIGUSR2)
        await self.resumed_after(resumes + 1, started)
        with trio.fail_after(30):
            self.ready.append(await notify.wait_for_ready(readies + 1) - started)
        self.pids.add(int((await wait_for_health(daemon))["pid"]))


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="kimaki-bench-restart-"))
    data, project = tmp / "data", tmp / "project"
    data.mkdir()
    project.mkdir()
    notify = NotifyListener(Path(tempfile.gettempdir()) / f"kimaki-bench-notify-{os.getpid()}")
    kill = args.signal == "kill"
    async with (
        open_discord_emulator() as emulator,
        running_fake_opencode(project) as (fake, port),
        trio.open_nursery() as nursery,
    ):
        await nursery.start(notify.serve)
        agent = tmp / "opencode"
        agent.write_text(f'#!/bin/sh\nexec {shlex.join(stub_command(port))} "$@"\n')
        agent.chmod(0o755)
        people = [f"person{n}" for n in range(args.threads + 1)]
        workspace = emulator.create_workspace(users=people)
        channel_id = await map_project(data, emulator, workspace, project)
        env = {
            "KIMAKI_OPENCODE_PATH": str(agent),
            "NOTIFY_SOCKET": str(notify.path),
            # As an installed package has: compiled bytecode (kept out of the source tree).
            "PYTHONDONTWRITEBYTECODE": "",
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
        }
        bench = Run(emulator, data, env)
        actors = [workspace.users[name] for name in people]
        traffic = Traffic(emulator, answer=ANSWER, pause=args.pause)
        async with trio.open_nursery() as people_nursery:
            async with bench.daemon() as daemon:
                await wait_for_health(daemon)
                bench.pids.add(daemon.process.pid)
                threads: list[str] = []
                for person in actors[:-1]:  # one thread each, opened by a first message
                    first = person.send_message(channel_id, f"hello from {person.name}")
                    threads.append(str(first["id"]))  # a thread started from a message has its id
                    await emulator.wait_for_message(threads[-1], said(ANSWER))
                emulator.wait_timeout = args.answer_timeout  # then an answer counts as lost
                for person, thread_id in zip(actors, threads, strict=False):
                    people_nursery.start_soon(traffic.converse, person, thread_id)
                opener = actors[-1]
                people_nursery.start_soon(traffic.open_threads, opener, channel_id, args.open_every)
                people_nursery.start_soon(
                    traffic.run_commands, opener, channel_id, args.command_every
                )
                for n in range(args.restarts):
                    await trio.sleep(args.every)
                    if not kill:
                        await bench.sigusr2(daemon, notify)
                        print(
                            f"SIGUSR2 {n + 1}: RESUME after {bench.resumed[-1] * 1000:.0f} ms, "
                            f"READY=1 after {bench.ready[-1] * 1000:.0f} ms"
                        )
                        continue
                    daemon.process.kill()
                    await daemon.process.wait()
                    break
                if not kill:
                    await trio.sleep(args.every)
                    traffic.stop.set()
                    await traffic.settle(within=args.answer_timeout)
                    await daemon.stop()
            for n in range(args.restarts if kill else 0):
                resumes = len(emulator.gateway.resumes)
                started = time.monotonic()
                async with bench.daemon() as daemon:
                    await bench.resumed_after(resumes + 1, started)
                    print(
                        f"SIGKILL {n + 1}: new daemon RESUMEd after "
                        f"{bench.resumed[-1] * 1000:.0f} ms"
                    )
                    await trio.sleep(args.every)
                    if n + 1 < args.restarts:
                        daemon.process.kill()
                        await daemon.process.wait()
                        continue
                    traffic.stop.set()
                    await traffic.settle(within=args.answer_timeout)
                    await daemon.stop()
            people_nursery.cancel_scope.cancel()
        nursery.cancel_scope.cancel()
    notify.path.unlink(missing_ok=True)

    report = traffic.report(fake_opencode_prompts(fake))
    refused = sum(len(_REFUSED.findall(log)) for log in bench.logs)
    name = "SIGKILL" if kill else "SIGUSR2"
    print(f"\n{args.restarts} × {name} under traffic in {args.threads} threads")
    print(report.summary())
    print(f"replayed on RESUME: {bench.replayed} events; refused as already handled: {refused}")
    print(
        f"signal → RESUMED: median {statistics.median(bench.resumed) * 1000:.0f} ms, "
        f"max {max(bench.resumed) * 1000:.0f} ms"
    )
    if bench.ready:
        print(
            f"signal → READY=1: median {statistics.median(bench.ready) * 1000:.0f} ms, "
            f"max {max(bench.ready) * 1000:.0f} ms"
        )
        same = "same process" if len(bench.pids) == 1 else "CHANGED"
        print(f"pids: {sorted(bench.pids)} ({same})")
    print(f"log: {data / 'kimaki.log'} (the last process's)")
    twice = report.duplicated + report.duplicate_prompts + report.commands_twice
    return 0 if twice == 0 and (kill or (report.lost == 0 and len(bench.pids) == 1)) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--signal", choices=("usr2", "kill"), default="usr2")
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between restarts")
    parser.add_argument("--pause", type=float, default=0.05, help="a person's pause")
    parser.add_argument("--open-every", type=float, default=2.0)
    parser.add_argument("--command-every", type=float, default=2.5)
    parser.add_argument("--answer-timeout", type=float, default=15.0)
    return trio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
