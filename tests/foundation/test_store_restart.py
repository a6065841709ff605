"""What an in-place restart hands from one process to the next through the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from kimaki.store import (
    LATEST_VERSION,
    AgentServerHandover,
    QueuedPrompt,
    RunningTurn,
    Store,
)
from kimaki.store._schema import migrate, schema_version

SERVER = AgentServerHandover(
    engine="opencode",
    directory="/srv/app",
    pid=4242,
    port=41000,
    password="pw-abcdefghijklmnop",
    started_at=1700000000.5,
    stdout_fd=7,
    stderr_fd=9,
)


@pytest.mark.parametrize("version", range(LATEST_VERSION))
async def test_every_earlier_version_gains_the_restart_tables(tmp_path: Path, version: int) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=version)
    conn.close()
    async with await Store.open(path) as store:
        await store.save_agent_servers([SERVER])
        await store.save_running_turn(RunningTurn(5, "ses_1", "msg_1", 10.0, 77))
        await store.record_posted_part(5, "prt_1", 88)
        assert await store.take_agent_servers() == [SERVER]
        assert await store.take_running_turns() == [RunningTurn(5, "ses_1", "msg_1", 10.0, 77)]
        assert await store.posted_parts(5) == {"prt_1"}
    conn = sqlite3.connect(path)
    assert schema_version(conn) == LATEST_VERSION
    conn.close()


async def test_agent_servers_are_taken_once_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "db"
    other = AgentServerHandover("opencode", "/srv/other", 4343, 41001, "pw-2-abcdefghijk", 2.0)
    async with await Store.open(path) as store:
        await store.save_agent_servers([SERVER])
        await store.save_agent_servers([SERVER, other])  # replaces, does not add
    async with await Store.open(path) as store:  # the process after the exec
        taken = await store.take_agent_servers()
        assert taken == [SERVER, other]  # by engine, then directory
        assert taken[0].directory == Path("/srv/app")
        assert taken[1].stdout_fd is None
        # A later cold start must not adopt what is no longer true.
        assert await store.take_agent_servers() == []
        await store.save_agent_servers([])
        assert await store.take_agent_servers() == []
    assert "pw-abcdefghijklmnop" not in repr(SERVER)


async def test_running_turns_are_saved_cleared_and_taken(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.save_running_turn(RunningTurn(6, "ses_b", "msg_b", 20.0))
        await store.save_running_turn(RunningTurn(5, "ses_a", "msg_a", 10.0, 100))
        await store.save_running_turn(RunningTurn(7, "ses_c", "msg_c", 30.0))
        # A thread has at most one running turn: the next one replaces it.
        await store.save_running_turn(RunningTurn(7, "ses_c", "msg_c2", 31.0))
        await store.record_posted_parts(6, [("prt_1", 1), ("prt_2", 2)])
        await store.record_posted_parts(5, [("prt_3", 3)])
        assert await store.clear_running_turn(6)
        assert await store.posted_parts(6) == set()  # the turn's posted parts go with it
        assert await store.posted_parts(5) == {"prt_3"}
        assert not await store.clear_running_turn(6)
        assert await store.take_running_turns() == [
            RunningTurn(5, "ses_a", "msg_a", 10.0, 100),
            RunningTurn(7, "ses_c", "msg_c2", 31.0),
        ]
        assert await store.take_running_turns() == []


async def test_queued_prompts_keep_their_order_per_thread(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.save_queued_prompts(9, [{"text": "first"}, {"text": "second"}])
        await store.save_queued_prompts(3, [{"text": "only", "files": ["a.png"]}])
        await store.save_queued_prompts(9, [{"text": "second"}, {"text": "third"}])
        await store.save_queued_prompts(4, [{"text": "x"}])
        await store.save_queued_prompts(4, [])  # an emptied queue
        assert await store.take_queued_prompts() == [
            QueuedPrompt(3, 0, {"text": "only", "files": ["a.png"]}),
            QueuedPrompt(9, 0, {"text": "second"}),
            QueuedPrompt(9, 1, {"text": "third"}),
        ]
        assert await store.take_queued_prompts() == []


async def test_posted_parts_per_thread(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with await Store.open(path) as store:
        assert await store.posted_parts(5) == set()
        await store.record_posted_part(5, "prt_1", 1001)
        await store.record_posted_part(5, "prt_2", None)  # posted inside another message
        await store.record_posted_part(5, "prt_1", 1002)  # edited into a new message: still one
        await store.record_posted_parts(6, [("prt_9", 2001), ("prt_10", 2002)])
        await store.record_posted_parts(6, [])
    async with await Store.open(path) as store:
        assert await store.posted_parts(5) == {"prt_1", "prt_2"}
        assert await store.posted_parts(6) == {"prt_9", "prt_10"}
        assert await store.forget_posted_parts(5) == 2
        assert await store.posted_parts(5) == set()
        assert await store.posted_parts(6) == {"prt_9", "prt_10"}
