"""What an in-place restart hands from one process to the next through the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from kimaki.agents import AgentServerHandover
from kimaki.store import LATEST_VERSION, QueuedPrompt, RunningTurn, Store
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
        await store.handover.save_agent_servers([SERVER])
        await store.handled.begin_turn(RunningTurn(5, "ses_1", "msg_1", 10.0, 77), [])
        await store.handover.record_posted_parts(5, [("prt_1", 88)])
        assert await store.handover.take_agent_servers() == [SERVER]
        assert await store.handover.running_turns() == [RunningTurn(5, "ses_1", "msg_1", 10.0, 77)]
        assert await store.handover.posted_parts(5) == {"prt_1"}
    conn = sqlite3.connect(path)
    assert schema_version(conn) == LATEST_VERSION
    conn.close()


async def test_agent_servers_are_taken_once_by_the_next_process(tmp_path: Path) -> None:
    path = tmp_path / "db"
    other = AgentServerHandover("opencode", "/srv/other", 4343, 41001, "pw-2-abcdefghijk", 2.0)
    async with await Store.open(path) as store:
        await store.handover.save_agent_servers([SERVER])
        await store.handover.save_agent_servers([SERVER, other])  # replaces, does not add
    async with await Store.open(path) as store:  # the process after the exec
        taken = await store.handover.take_agent_servers()
        assert taken == [SERVER, other]  # by engine, then directory
        assert taken[0].directory == Path("/srv/app")
        assert taken[1].stdout_fd is None
        # A later cold start must not adopt what is no longer true.
        assert await store.handover.take_agent_servers() == []
        await store.handover.save_agent_servers([])
        assert await store.handover.take_agent_servers() == []
    assert "pw-abcdefghijklmnop" not in repr(SERVER)


async def test_running_turns_are_saved_cleared_and_read_until_cleared(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.handled.begin_turn(RunningTurn(6, "ses_b", "msg_b", 20.0), [])
        await store.handled.begin_turn(RunningTurn(5, "ses_a", "msg_a", 10.0, 100), [])
        await store.handled.begin_turn(RunningTurn(7, "ses_c", "msg_c", 30.0), [])
        # A thread has at most one running turn: the next one replaces it.
        await store.handled.begin_turn(RunningTurn(7, "ses_c", "msg_c2", 31.0), [])
        await store.handover.record_posted_parts(6, [("prt_1", 1), ("prt_2", 2)])
        await store.handover.record_posted_parts(5, [("prt_3", 3)])
        await store.handover.clear_running_turn(6)
        assert await store.handover.posted_parts(6) == set()  # the turn's posted parts go with it
        assert await store.handover.posted_parts(5) == {"prt_3"}
        await store.handover.clear_running_turn(6)  # nothing left to clear: a no-op
        expected = [
            RunningTurn(5, "ses_a", "msg_a", 10.0, 100),
            RunningTurn(7, "ses_c", "msg_c2", 31.0),
        ]
        assert await store.handover.running_turns() == expected
    async with await Store.open(tmp_path / "db") as store:
        # Read again by a process that starts before the turns are over (not taken).
        assert await store.handover.running_turns() == expected
        await store.handover.clear_running_turn(5)
        await store.handover.clear_running_turn(7)
        assert await store.handover.running_turns() == []


async def test_a_turn_begins_with_its_messages_handled_in_one_write(tmp_path: Path) -> None:
    turn = RunningTurn(5, "ses_a", "msg_a", 10.0, 100, prompt='{"text": "hi", "files": []}')
    async with await Store.open(tmp_path / "db") as store:
        await store.handled.begin_turn(turn, [100, 101])
    async with await Store.open(tmp_path / "db") as store:
        assert await store.handover.running_turns() == [turn]
        assert set(await store.handled.handled_events()) == {100, 101}
        # A newer prompt for the thread replaces the record (a withdrawn prompt's).
        newer = attrs.evolve(turn, turn_id="msg_b", prompt=None)
        await store.handled.begin_turn(newer, [102])
        assert await store.handover.running_turns() == [newer]
        # Handing the queue over with no turn started drops the record in the same write.
        await store.handover.save_queued_prompts(5, [{"text": "hi"}], clear_running_turn=True)
        assert await store.handover.running_turns() == []
        assert [q.payload for q in await store.handover.take_queued_prompts()] == [{"text": "hi"}]


async def test_queued_prompts_keep_their_order_per_thread(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.handover.save_queued_prompts(9, [{"text": "first"}, {"text": "second"}])
        await store.handover.save_queued_prompts(3, [{"text": "only", "files": ["a.png"]}])
        await store.handover.save_queued_prompts(9, [{"text": "second"}, {"text": "third"}])
        await store.handover.save_queued_prompts(4, [{"text": "x"}])
        await store.handover.save_queued_prompts(4, [])  # an emptied queue
        assert await store.handover.take_queued_prompts() == [
            QueuedPrompt(3, 0, {"text": "only", "files": ["a.png"]}),
            QueuedPrompt(9, 0, {"text": "second"}),
            QueuedPrompt(9, 1, {"text": "third"}),
        ]
        assert await store.handover.take_queued_prompts() == []


async def test_posted_parts_per_thread(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with await Store.open(path) as store:
        assert await store.handover.posted_parts(5) == set()
        await store.handover.record_posted_parts(5, [("prt_1", 1001)])
        await store.handover.record_posted_parts(
            5, [("prt_2", None)]
        )  # posted inside another message
        await store.handover.record_posted_parts(
            5, [("prt_1", 1002)]
        )  # edited into a new message: still one
        await store.handover.record_posted_parts(6, [("prt_9", 2001), ("prt_10", 2002)])
        await store.handover.record_posted_parts(6, [])
    async with await Store.open(path) as store:
        assert await store.handover.posted_parts(5) == {"prt_1", "prt_2"}
        assert await store.handover.posted_parts(6) == {"prt_9", "prt_10"}
        # Nothing else forgets them: a thread's posted parts go when its turn is cleared.
        await store.handover.clear_running_turn(5)  # thread 5 had no running turn
        assert await store.handover.posted_parts(5) == set()
        assert await store.handover.posted_parts(6) == {"prt_9", "prt_10"}
