from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from kimaki._systemd import SystemdNotifier


def receive_all(sock: socket.socket) -> list[str]:
    messages = []
    while True:
        try:
            data = sock.recv(4096)
        except BlockingIOError:
            return messages
        messages.append(data.decode())


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[socket.socket]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(tmp_path / "notify"))
        sock.setblocking(False)
        yield sock


async def test_lifecycle_messages_reach_the_socket(
    tmp_path: Path, notify_socket: socket.socket
) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    assert notifier.enabled
    assert notifier.ready("connected to Discord")
    assert notifier.reloading()
    assert notifier.status("2 guilds\n3 threads")
    assert notifier.stopping()
    messages = receive_all(notify_socket)
    assert messages[0] == "READY=1\nSTATUS=connected to Discord"
    reloading = messages[1].split("\n")
    assert reloading[0] == "RELOADING=1"
    assert reloading[1].startswith("MONOTONIC_USEC=")
    assert int(reloading[1].split("=")[1]) > 0
    assert messages[2] == "STATUS=2 guilds 3 threads"
    assert messages[3] == "STOPPING=1"


async def test_abstract_socket_address() -> None:
    name = f"kimaki-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.setblocking(False)
        assert SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).ready()
        assert receive_all(sock) == ["READY=1"]


async def test_watchdog_pings_at_half_the_interval(
    tmp_path: Path, notify_socket: socket.socket, autojump_clock: trio.testing.MockClock
) -> None:
    notifier = SystemdNotifier(
        {"NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "4000000"}
    )
    assert notifier.watchdog_interval == 2.0
    with trio.move_on_after(9):
        await notifier.run_watchdog()
    # Pings at t = 0, 2, 4, 6, 8.
    assert receive_all(notify_socket) == ["WATCHDOG=1"] * 5


def test_watchdog_for_another_pid_or_without_systemd_is_off(tmp_path: Path) -> None:
    other = SystemdNotifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid() + 1)}
    )
    assert other.watchdog_interval is None
    mine = SystemdNotifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval == 2.0
    outside = SystemdNotifier({})
    assert not outside.enabled
    assert not outside.ready()


def test_unreachable_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert not SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "missing")}).ready()
