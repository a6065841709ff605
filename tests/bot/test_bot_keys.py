"""Interaction keys (the store side of custom ids) are deleted once expired, not only ignored."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import trio

from kimaki.bot._interactions import sweep_expired_keys
from kimaki.store import Store
from kimaki.testing.bot import running_bot
from kimaki.testing.discord import open_discord_emulator
from kimaki.testing.engine import FakeEngine


def _stored_keys(db: Path) -> set[str]:
    with sqlite3.connect(db) as connection:
        return {row[0] for row in connection.execute("SELECT key FROM interaction_keys")}


async def stored_keys(db: Path) -> set[str]:
    """What the database file really holds (not what the store's reads let through)."""
    return await trio.to_thread.run_sync(_stored_keys, db)


async def test_expired_keys_are_deleted_at_start_and_on_a_timer(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    db = tmp_path / "kimaki.db"
    async with await Store.open(db) as store, trio.open_nursery() as nursery:
        # Each sweep reports, once done, the time it began: the store works in a thread, and
        # meanwhile the autojump clock moves on to the sweeper's next hour.
        swept_send, swept = trio.open_memory_channel[float](math.inf)
        keys = store.keys

        class ReportingKeys:
            async def delete_expired_interaction_keys(self) -> int:
                began = trio.current_time()
                deleted = await keys.delete_expired_interaction_keys()
                swept_send.send_nowait(began)
                return deleted

        start = trio.current_time()
        left_over = await store.keys.create_interaction_key(
            thread_id=1, kind="q", payload=1, ttl=-1
        )
        await nursery.start(sweep_expired_keys, ReportingKeys(), 3600)
        assert await swept.receive() < start + 3600  # the first sweep, at once
        assert left_over.key not in await stored_keys(db)
        await store.keys.create_interaction_key(thread_id=1, kind="q", payload=1, ttl=-1)
        live = await store.keys.create_interaction_key(thread_id=1, kind="q", payload=1, ttl=86400)
        created = trio.current_time()
        while (began := await swept.receive()) < created:
            pass  # a sweep that began before the keys were there
        assert began >= start + 3600  # on the timer: hours of trio time, no real waiting
        assert await stored_keys(db) == {live.key}
        nursery.cancel_scope.cancel()


async def test_the_bot_sweeps_what_a_previous_run_left(
    fake_engine: FakeEngine, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    await trio.Path(data).mkdir()
    async with await Store.open(data / "kimaki.db") as store:
        old = await store.keys.create_interaction_key(thread_id=1, kind="q", payload=1, ttl=-1)
        live = await store.keys.create_interaction_key(thread_id=1, kind="q", payload=1, ttl=86400)
    assert await stored_keys(data / "kimaki.db") == {old.key, live.key}
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, data),
    ):
        assert await stored_keys(data / "kimaki.db") == {live.key}
