"""The part every benchmark client shares: the line protocol with the benchmark and the meter.

A client prints one marked JSON line when it is connected (`{"ready": ...}`), counts the
MESSAGE_CREATE events its library hands to user code, and prints one JSON line with the
figures when the last one arrives. The window runs from the first event to the last, so
import, login and connection time are not in it; `time.process_time()` over the same window is
the client's own CPU time, whatever the server's speed.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--api-url", required=True)
    parser.add_argument("--gateway-url", required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--profile", help="write a cProfile of the measured window here")
    return parser.parse_args()


MARKER = "@gateway-bench "  # libraries may log to stdout too; only marked lines are ours


def require_zlib_stream(transport: str) -> None:
    """The emulator speaks zlib-stream only; a library that picked zstd-stream cannot connect."""
    if "zlib" not in transport.lower():
        sys.exit(
            f"this client would use {transport} (a zstd module is installed); the emulator "
            "speaks only zlib-stream: run the benchmark without zstandard/backports.zstd"
        )


def report(**fields: Any) -> None:
    sys.stdout.write(MARKER + json.dumps(fields) + "\n")
    sys.stdout.flush()


class Meter:
    """Counts events; `tick()` returns True on the last one, after the figures are printed."""

    def __init__(self, expected: int, profile_path: str | None = None) -> None:
        self.expected = expected
        self.count = 0
        self.chars = 0
        self._wall0 = self._cpu0 = 0.0
        self._profile_path = profile_path
        self._profiler: Any = None

    def tick(self, content_length: int) -> bool:
        self.count += 1
        self.chars += content_length
        if self.count == 1:
            self._wall0, self._cpu0 = time.perf_counter(), time.process_time()
            if self._profile_path:
                import cProfile

                self._profiler = cProfile.Profile()
                self._profiler.enable()
        if self.count < self.expected:
            return False
        wall, cpu = time.perf_counter() - self._wall0, time.process_time() - self._cpu0
        if self._profiler is not None:
            self._profiler.disable()
            self._profiler.dump_stats(self._profile_path)
        report(events=self.count, chars=self.chars, wall=wall, cpu=cpu)
        return True
