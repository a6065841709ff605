"""The bot half of bench/thread_fanout.py, in its own process (so the emulator's work does not
count as the bot's): the daemon's wiring with the fake engine, driven by lines on stdin.

    stats           → one JSON line: runtimes, RSS, traced heap, prompts since the last report,
                      store calls so far (record reads, preference reads, database round trips)
    wait-prompts N  → the same, once N prompts reached the engine and no turn runs
    wait-evicted    → the same, once every runtime was evicted
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
import tracemalloc
from pathlib import Path
from typing import Any

import trio

from kimaki._memory import freeze_start_up_heap
from kimaki.testing.bot import connect_bot
from kimaki.testing.engine import FakeEngine, RunningTurn, open_fake_engine

_PAGE = os.sysconf("SC_PAGE_SIZE")
_MESSAGE_ID = re.compile(r"message id (\d+)")


async def quiet(turn: RunningTurn) -> None:
    """An agent that works for a second and says nothing (so the burst of prompts is routed
    while turns run, as in real use, and their footers come after it)."""
    await trio.sleep(1.0)


def stats(engine: FakeEngine, bot: Any, store: Any, since: int) -> dict[str, Any]:
    gc.collect()
    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * _PAGE
    prompts = {}
    for prompt in engine.prompts[since:]:
        match = _MESSAGE_ID.search(prompt.text)
        if match:
            prompts[match.group(1)] = prompt.monotonic_at
    runtime = bot.threads.statistics()
    return {
        "rss": rss,
        "heap": tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else 0,
        "active_runtimes": runtime.active_runtimes,
        "running_turns": runtime.running_turns,
        "prompt_count": len(engine.prompts),
        "prompts": prompts,
        "stamps": STAMPS,
        "store_calls": {**STORE_CALLS, "loop_commits": store.statistics().loop_commits},
    }


STAMPS: dict[str, dict[str, float]] = {}
STORE_CALLS: dict[str, int] = {"place_reads": 0, "preference_reads": 0, "database_calls": 0}


def count_store_calls() -> None:
    """Count what the store is asked (thread_fanout.py reports it per routed message): reads of
    channel and thread records, preference lookups, and the calls that go to the database's
    worker thread (reads and writes; a read answered from the write-through caches does not,
    nor do the turn writes committed on the event loop, which the store counts itself)."""
    from kimaki.store import Places, Preferences
    from kimaki.store._database import Database

    def counted(cls: Any, name: str, counter: str) -> None:
        original = getattr(cls, name)

        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            STORE_CALLS[counter] += 1
            return await original(self, *args, **kwargs)

        setattr(cls, name, call)

    counted(Places, "get_thread", "place_reads")
    counted(Places, "get_channel", "place_reads")
    counted(Preferences, "effective_preference", "preference_reads")
    counted(Database, "run", "database_calls")


def instrument() -> None:
    """FANOUT_STAMPS=1: where the time goes between the socket and the engine (diagnosis)."""
    import time

    from kimaki import dispatch
    from kimaki.threads import _turn

    dispatch_original = dispatch.Dispatcher._dispatch
    turn_original = _turn.ThreadTurns.run_turn

    async def stamped_dispatch(self: Any, event: Any, nursery: Any) -> None:
        if event.name == "MESSAGE_CREATE":
            STAMPS.setdefault(str(event.data.get("id")), {})["dispatch"] = time.monotonic()
        await dispatch_original(self, event, nursery)

    async def stamped_turn(self: Any, prompt: Any, reached: Any) -> None:
        STAMPS.setdefault(str(prompt.message_id), {})["turn"] = time.monotonic()
        await turn_original(self, prompt, reached)

    dispatch.Dispatcher._dispatch = stamped_dispatch  # type: ignore[method-assign]
    _turn.ThreadTurns.run_turn = stamped_turn  # type: ignore[method-assign]


async def main(api_url: str, token: str, channel_id: int, guild_id: int, data: Path) -> None:
    if os.environ.get("FANOUT_TRACE"):
        tracemalloc.start(1)
    if os.environ.get("FANOUT_STAMPS"):
        instrument()
    count_store_calls()
    async with (
        open_fake_engine() as engine,
        connect_bot(
            api_url=api_url,
            token=token,
            data_dir=data,
            channel_id=channel_id,
            guild_id=guild_id,
            engines={"fake": engine},
            default_engine="fake",
            thread_idle_timeout=float(os.environ["FANOUT_IDLE"]),
        ) as connected,
    ):
        engine.responder = quiet
        bot = connected.connection.bot
        store = connected.store
        freeze_start_up_heap()  # as `python -m kimaki` does once connected
        print(json.dumps({"ready": True}), flush=True)
        stdin = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
        buffer = b""
        reported = 0
        while True:
            data_in = await stdin.receive_some()
            if not data_in:
                break
            buffer += data_in
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                command = line.decode().strip()
                if command == "wait-evicted":
                    while bot.threads.statistics().active_runtimes:  # noqa: ASYNC110
                        await trio.sleep(0.05)  # a benchmark driver polls a statistic
                elif command.startswith("wait-prompts "):
                    count = int(command.split()[1])
                    await engine.wait_for_prompts(count)
                    while bot.threads.statistics().running_turns:  # noqa: ASYNC110
                        await trio.sleep(0.01)
                report = stats(engine, bot, store, reported)
                reported = len(engine.prompts)
                print(json.dumps(report), flush=True)


if __name__ == "__main__":
    api, token, channel, guild, directory = sys.argv[1:6]
    trio.run(main, api, token, int(channel), int(guild), Path(directory))
