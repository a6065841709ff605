"""The handled-events record: the ids of messages and interactions the bot acted on, kept so a
replayed gateway event is recognised, and swept by age."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kimaki.store import LATEST_VERSION, Store
from kimaki.store._schema import migrate, schema_version
from kimaki.threads import Prompt


@pytest.mark.parametrize("version", range(LATEST_VERSION))
async def test_every_earlier_version_gains_the_handled_events(tmp_path: Path, version: int) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=version)
    conn.close()
    async with await Store.open(path) as store:
        await store.handled.record_handled([(101, "message"), (102, "message")], at=1000.0)
        assert await store.handled.handled_events() == {101: 1000.0, 102: 1000.0}
    conn = sqlite3.connect(path)
    assert schema_version(conn) == LATEST_VERSION
    conn.close()


async def test_handled_events_are_kept_once_and_forgotten_by_age(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db.sqlite") as store:
        await store.handled.record_handled([(1, "message"), (2, "message")], at=100.0)
        await store.handled.record_handled(
            [(2, "interaction"), (3, "interaction")], at=200.0
        )  # 2: kept
        assert await store.handled.handled_events() == {1: 100.0, 2: 100.0, 3: 200.0}
        assert await store.handled.forget_handled_before(150.0) == 2
    async with await Store.open(tmp_path / "db.sqlite") as store:  # the next process
        assert await store.handled.handled_events() == {3: 200.0}


async def test_a_saved_queue_marks_its_messages_handled_in_the_same_write(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db.sqlite") as store:
        prompt = Prompt(text="later", author_id=1, author_name="alice", message_id=55)
        await store.handover.save_queued_prompts(9, [prompt.to_json()], message_ids=[55])
        assert set(await store.handled.handled_events()) == {55}
        [queued] = await store.handover.take_queued_prompts()
        assert Prompt.from_json(queued.payload) == prompt
