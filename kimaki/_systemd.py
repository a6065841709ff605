"""systemd's notify protocol, without a dependency: datagrams to `$NOTIFY_SOCKET`.

With `Type=notify` systemd waits for `READY=1` before it considers the service started, shows
`STATUS=` in `systemctl status`, and with `WatchdogSec=` restarts the service when `WATCHDOG=1`
pings stop. The pings come from a trio task, so they stop exactly when the event loop stops
making progress, which is what the watchdog is for.

Outside systemd (no `$NOTIFY_SOCKET`) every call is a cheap no-op.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import final

import trio

__all__ = ["SystemdNotifier"]

log = logging.getLogger("kimaki.systemd")


@final
class SystemdNotifier:
    """Sends notify messages to the service manager, if there is one."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        # "@name" is an abstract socket: its address starts with a NUL byte.
        self._address = ("\0" + path[1:]) if path.startswith("@") else path
        self._watchdog_interval = _watchdog_interval(env)

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between pings (half of `WATCHDOG_USEC`), or None when there is no watchdog."""
        return self._watchdog_interval

    def notify(self, *assignments: str) -> bool:
        """Send `KEY=value` lines in one datagram; False (logged) when it could not be sent."""
        if not self._address:
            return False
        message = "\n".join(assignments).encode()
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.setblocking(False)
                sock.sendto(message, self._address)
        except OSError as exc:
            log.warning("could not notify systemd (%s): %s", exc.strerror, assignments)
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *_status(status))

    def reloading(self, status: str | None = None) -> bool:
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", *_status(status))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *_status(status))

    def status(self, status: str) -> bool:
        return self.notify(*_status(status))

    async def run_watchdog(self) -> None:
        """Ping `WATCHDOG=1` at half the watchdog interval until cancelled (no-op without one)."""
        if self._watchdog_interval is None or not self._address:
            return
        while True:
            self.notify("WATCHDOG=1")
            await trio.sleep(self._watchdog_interval)


def _status(status: str | None) -> tuple[str, ...]:
    if status is None:
        return ()
    return (f"STATUS={status.replace(chr(10), ' ')}",)


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    usec = env.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID")
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is meant for another process
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 / 2 if value > 0 else None
