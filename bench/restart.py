"""In-place restart (SIGUSR2) under steady traffic: how long Discord waits, and what is lost.

    python bench/restart.py [--threads 3] [--restarts 5] [--pause 0.05]

Runs the real daemon (`python -m kimaki`, `kimaki.testing.daemon`) against the Discord
emulator, with the fake `opencode serve` (`python -m kimaki.testing.opencode`) as its agent
server. One project channel; `--threads` threads, each driven by a person who sends a message,
waits for the bot's answer (or `--answer-timeout`), pauses `--pause` seconds and sends the
next, so there is always traffic, also while the daemon restarts. Every `--every` seconds the
daemon gets SIGUSR2, `--restarts` times.

Reported:

- **signal → RESUMED**: from `kill(SIGUSR2)` to the emulator's gateway receiving the new
  process's RESUME (Discord then replays what was sent meanwhile); and signal → the new
  process's `READY=1` as a `$NOTIFY_SOCKET` would hear it;
- **lost**: a person's message with no answer from the bot before the person's next message
  (or the end of the run); **duplicated**: a message answered more than once. The fake agent
  answers every prompt with one paragraph, `ok`, so an answer is one bot paragraph `ok`.
- the pid after each restart (it must not change).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from kimaki.testing.bot import paragraphs, said
from kimaki.testing.daemon import DaemonProcess, map_project, running_daemon, wait_for_health
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator
from kimaki.testing.discord._errors import WaitTimeout

ANSWER = "ok"


class Traffic:
    """People writing into threads, one message at a time each."""

    def __init__(self, emulator: DiscordEmulator, pause: float) -> None:
        self.emulator = emulator
        self.pause = pause
        self.sent = 0
        self.stop = trio.Event()

    async def person(self, actor: Any, thread_id: str) -> None:
        while not self.stop.is_set():
            message = actor.send_message(thread_id, f"message {self.sent}")
            self.sent += 1
            with contextlib.suppress(WaitTimeout):  # counted as lost at the end
                await self.emulator.wait_for_message(thread_id, said(ANSWER), after=message)
            await trio.sleep(self.pause)


def count_answers(
    emulator: DiscordEmulator, thread_id: str, person_id: str
) -> tuple[int, int, int]:
    """(messages, lost, duplicated) in one thread, in message-id (time) order."""
    bot_id = emulator.bot_user["id"]
    messages = sorted(
        emulator.state.messages.get(thread_id, {}).values(), key=lambda m: int(m["id"])
    )
    answers: list[int] = []
    for message in messages:
        author = message["author"]["id"]
        if author == person_id:
            answers.append(0)
        elif author == bot_id and answers:
            answers[-1] += paragraphs(message).count(ANSWER)
    lost = sum(1 for n in answers if n == 0)
    duplicated = sum(n - 1 for n in answers if n > 1)
    return len(answers), lost, duplicated


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


async def restart_once(
    daemon: DaemonProcess, emulator: DiscordEmulator, notify: NotifyListener
) -> tuple[float, float, int]:
    resumes = len(emulator.gateway.resumes)
    readies = len(notify.ready_at)
    started = time.monotonic()
    daemon.send_signal(signal.SIGUSR2)
    with trio.fail_after(30):
        await emulator.gateway.wait_for_resume(resumes + 1)
        resumed = time.monotonic() - started
        ready = await notify.wait_for_ready(readies + 1) - started
    health = await wait_for_health(daemon)
    return resumed, ready, int(health["pid"])


async def run(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="kimaki-bench-restart-"))
    data, project = tmp / "data", tmp / "project"
    data.mkdir()
    project.mkdir()
    agent = tmp / "opencode"
    agent.write_text(f'#!/bin/sh\nexec {sys.executable} -m kimaki.testing.opencode "$@"\n')
    agent.chmod(0o755)
    notify = NotifyListener(Path(tempfile.gettempdir()) / f"kimaki-bench-notify-{os.getpid()}")
    resumed: list[float] = []
    ready: list[float] = []
    pids: set[int] = set()
    async with open_discord_emulator() as emulator, trio.open_nursery() as nursery:
        await nursery.start(notify.serve)
        workspace = emulator.create_workspace(users=[f"person{n}" for n in range(args.threads)])
        channel_id = await map_project(data, emulator, workspace, project)
        env = {
            "KIMAKI_OPENCODE_PATH": str(agent),
            "NOTIFY_SOCKET": str(notify.path),
            # As an installed package has: compiled bytecode (kept out of the source tree).
            "PYTHONDONTWRITEBYTECODE": "",
            "PYTHONPYCACHEPREFIX": str(tmp / "pycache"),
        }
        async with running_daemon(
            api_url=emulator.api_url, token=emulator.token, data_dir=data, env=env
        ) as daemon:
            pids.add(daemon.process.pid)
            people = list(workspace.users.values())
            threads: list[str] = []
            for person in people:  # one thread each, opened by a first message
                first = person.send_message(channel_id, f"hello from {person.name}")
                thread_id = str(first["id"])  # a thread started from a message has its id
                await emulator.wait_for_thread(channel_id, lambda t, i=thread_id: t["id"] == i)
                await emulator.wait_for_message(thread_id, said(ANSWER))
                threads.append(thread_id)
            emulator.wait_timeout = args.answer_timeout  # then an answer counts as lost
            traffic = Traffic(emulator, args.pause)
            async with trio.open_nursery() as people_nursery:
                for person, thread_id in zip(people, threads, strict=True):
                    people_nursery.start_soon(traffic.person, person, thread_id)
                for n in range(args.restarts):
                    await trio.sleep(args.every)
                    took, to_ready, pid = await restart_once(daemon, emulator, notify)
                    resumed.append(took)
                    ready.append(to_ready)
                    pids.add(pid)
                    print(
                        f"restart {n + 1}: RESUME after {took * 1000:.0f} ms, "
                        f"READY=1 after {to_ready * 1000:.0f} ms, pid {pid}"
                    )
                await trio.sleep(args.every)
                traffic.stop.set()
            await trio.sleep(args.answer_timeout)  # let the last answers land
            await daemon.stop()
        nursery.cancel_scope.cancel()
    notify.path.unlink(missing_ok=True)

    total = lost = duplicated = 0
    for person, thread_id in zip(people, threads, strict=True):
        messages, thread_lost, thread_duplicated = count_answers(emulator, thread_id, person.id)
        total += messages
        lost += thread_lost
        duplicated += thread_duplicated
    print(
        f"\n{args.restarts} restarts under traffic in {args.threads} threads; "
        f"{total} messages from people"
    )
    print(
        f"signal → RESUMED: median {statistics.median(resumed) * 1000:.0f} ms, "
        f"max {max(resumed) * 1000:.0f} ms (target < 1500 ms)"
    )
    print(
        f"signal → READY=1: median {statistics.median(ready) * 1000:.0f} ms, "
        f"max {max(ready) * 1000:.0f} ms"
    )
    print(f"lost: {lost}, duplicated: {duplicated} (target 0 and 0)")
    print(f"pids: {sorted(pids)} ({'same process' if len(pids) == 1 else 'CHANGED'})")
    print(f"log: {data / 'kimaki.log'}")
    return 0 if lost == duplicated == 0 and len(pids) == 1 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=3)
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--every", type=float, default=3.0, help="seconds between restarts")
    parser.add_argument("--pause", type=float, default=0.05, help="a person's pause")
    parser.add_argument("--answer-timeout", type=float, default=15.0)
    return trio.run(run, parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
