from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from kimaki.discord.gateway import GatewaySession
from kimaki.store import (
    LATEST_VERSION,
    ChannelRecord,
    Preference,
    ScheduledTask,
    Store,
    StoreClosedError,
    ThreadRecord,
    WorktreeRecord,
)
from kimaki.store._schema import MIGRATIONS, migrate, schema_version


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


CHANNEL = ChannelRecord(
    channel_id=1001, directory="/srv/app", guild_id=42, app_id=7, channel_type="text"
)


async def test_new_database_is_private_wal_and_at_latest_version(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    async with await Store.open(path) as store:
        await store.credentials.set_bot_token("secret-token-value-xyz")
        assert _mode(path) == 0o600
        assert _mode(Path(f"{path}-wal")) == 0o600  # holds the token until checkpointed
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert schema_version(conn) == LATEST_VERSION
    finally:
        conn.close()


def _database_at(path: Path, version: int) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        migrate(conn, target=version)
        assert schema_version(conn) == version
    finally:
        conn.close()


@pytest.mark.parametrize("version", range(LATEST_VERSION))
async def test_migrates_from_every_earlier_version(tmp_path: Path, version: int) -> None:
    path = tmp_path / "db.sqlite"
    _database_at(path, version)
    if version >= 1:
        conn = sqlite3.connect(path)
        with conn:
            conn.execute(
                "INSERT INTO channels (channel_id, directory, guild_id, app_id) VALUES (?,?,?,?)",
                (5, "/p", 1, 2),
            )
        conn.close()
    async with await Store.open(path) as store:
        await store.places.put_channel(CHANNEL)
        assert await store.places.get_channel(CHANNEL.channel_id) == CHANNEL
        if version >= 1:
            kept = await store.places.get_channel(5)
            assert kept is not None
            assert kept.directory == Path("/p")
    conn = sqlite3.connect(path)
    assert schema_version(conn) == LATEST_VERSION == len(MIGRATIONS)
    conn.close()


async def test_database_newer_than_the_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    conn.close()
    with pytest.raises(ValueError, match="newer than this kimaki knows"):
        await Store.open(path)


async def test_channel_round_trip_and_listing(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        voice = ChannelRecord(
            channel_id=1002,
            directory="/srv/app",
            guild_id=42,
            app_id=7,
            channel_type="voice",
            engine="opencode",
            verbosity="text-only",
            auto_worktrees=True,
        )
        other_bot = ChannelRecord(channel_id=2001, directory="/x", guild_id=42, app_id=8)
        for record in (CHANNEL, voice, other_bot):
            await store.places.put_channel(record)
        assert await store.places.get_channel(1002) == voice
        assert await store.places.list_channels(app_id=7) == [CHANNEL, voice]
        assert await store.places.list_channels(guild_id=42) == [CHANNEL, voice, other_bot]
        assert await store.places.get_channel(999) is None
        assert await store.places.delete_channel(1002)
        assert not await store.places.delete_channel(1002)
        assert await store.places.list_channels(app_id=7) == [CHANNEL]


async def test_thread_and_worktree_round_trip(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.places.put_channel(CHANNEL)
        thread = ThreadRecord(
            thread_id=5,
            session_id="ses_1",
            engine="opencode",
            directory="/srv/app",
            channel_id=1001,
        )
        await store.places.put_thread(thread)
        assert await store.places.get_thread(5) == thread
        moved = ThreadRecord(
            thread_id=5, session_id="ses_2", engine="acp:kiro", directory="/w", channel_id=1001
        )
        await store.places.put_thread(moved)
        assert await store.places.get_thread(5) == moved

        worktree = WorktreeRecord(
            thread_id=5,
            project_directory="/srv/app",
            directory="/data/worktrees/ab12/fix-login",
            branch="kimaki/fix-login",
            base_branch="main",
        )
        await store.places.put_worktree(worktree)
        assert await store.places.get_worktree(5) == worktree
        assert await store.places.get_worktree(6) is None

        # Unmapping a channel keeps its threads (they still know their session), unlinked.
        await store.places.delete_channel(1001)
        unlinked = await store.places.get_thread(5)
        assert unlinked is not None
        assert unlinked.channel_id is None
        assert unlinked.session_id == "ses_2"


async def test_preferences_resolve_session_then_channel_then_global(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        effective = await store.preferences.effective_preference(session_id="s", channel_id=1)
        assert (effective.model, effective.agent) == (None, None)

        await store.preferences.set_preference(
            Preference("global", "", model="p/global", agent="build")
        )
        await store.preferences.set_preference(Preference("channel", "1", model="p/channel"))
        effective = await store.preferences.effective_preference(session_id="s", channel_id=1)
        assert (effective.model, effective.agent) == ("p/channel", "build")

        await store.preferences.set_preference(Preference("session", "s", agent="plan"))
        effective = await store.preferences.effective_preference(session_id="s", channel_id=1)
        assert (effective.model, effective.agent) == ("p/channel", "plan")

        other = await store.preferences.effective_preference(session_id="t", channel_id=2)
        assert (other.model, other.agent) == ("p/global", "build")

        assert await store.preferences.get_preference("channel", "1") == Preference(
            "channel", "1", model="p/channel"
        )
        # A preference with nothing in it is a "clear override".
        await store.preferences.set_preference(Preference("channel", "1"))
        assert await store.preferences.get_preference("channel", "1") is None
        effective = await store.preferences.effective_preference(session_id="s", channel_id=1)
        assert (effective.model, effective.agent) == ("p/global", "plan")


async def test_scheduled_tasks(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.places.put_channel(CHANNEL)
        daily = await store.schedules.add_scheduled_task(
            ScheduledTask(
                channel_id=1001,
                prompt="run the tests",
                next_run_at=200.0,
                created_by=9,
                schedule="0 9 * * *",
            )
        )
        once = await store.schedules.add_scheduled_task(
            ScheduledTask(
                channel_id=1001, thread_id=5, prompt="remind", next_run_at=100.0, created_by=9
            )
        )
        assert daily.task_id is not None
        assert once.task_id is not None
        assert daily.task_id != once.task_id
        assert await store.schedules.due_scheduled_tasks(150.0) == [once]
        assert await store.schedules.list_scheduled_tasks(channel_id=1001) == [once, daily]

        await store.schedules.reschedule_task(once.task_id, None)
        await store.schedules.reschedule_task(daily.task_id, 300.0)
        assert await store.schedules.due_scheduled_tasks(250.0) == []
        assert [t.next_run_at for t in await store.schedules.due_scheduled_tasks(300.0)] == [300.0]

        # Tasks belong to their channel: unmapping it removes them.
        await store.places.delete_channel(1001)
        assert await store.schedules.list_scheduled_tasks() == []


async def test_bot_token_and_gateway_session(tmp_path: Path) -> None:
    path = tmp_path / "db"
    async with await Store.open(path) as store:
        assert await store.credentials.get_bot_token() is None
        await store.credentials.set_bot_token("first-token-abcdefghijkl")
        await store.credentials.set_bot_token("second-token-abcdefghijkl")
        assert await store.gateway.load_gateway_session() is None
        await store.gateway.save_gateway_session(
            GatewaySession(session_id="abc", sequence=41, resume_url="wss://resume")
        )
    # A new process (a restart) sees what the last one saved.
    async with await Store.open(path) as store:
        assert await store.credentials.get_bot_token() == "second-token-abcdefghijkl"
        assert await store.gateway.load_gateway_session() == GatewaySession(
            "abc", 41, "wss://resume"
        )
        await store.gateway.save_gateway_session(None)
        assert await store.gateway.load_gateway_session() is None
        assert await store.credentials.clear_bot_token()
        assert await store.credentials.get_bot_token() is None


async def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "db")
    await store.aclose()
    with pytest.raises(StoreClosedError):
        await store.places.get_channel(1)


async def test_interaction_keys_are_bound_to_their_thread_and_expire(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        record = await store.keys.create_interaction_key(
            thread_id=5, kind="permission", payload={"request": "per_1", "tool": "bash"}, ttl=600
        )
        assert len(record.key) >= 16
        other = await store.keys.create_interaction_key(
            thread_id=5, kind="permission", payload={}, ttl=600
        )
        assert other.key != record.key

        found = await store.keys.get_interaction_key(record.key, thread_id=5)
        assert found == record
        assert found is not None
        assert found.payload == {"request": "per_1", "tool": "bash"}
        # The same custom id pressed in another thread (forged or copied) means nothing there.
        assert await store.keys.get_interaction_key(record.key, thread_id=6) is None
        assert await store.keys.get_interaction_key("made-up", thread_id=5) is None

        expired = await store.keys.create_interaction_key(thread_id=5, kind="q", payload=1, ttl=-1)
        assert await store.keys.get_interaction_key(expired.key, thread_id=5) is None
        assert await store.keys.delete_expired_interaction_keys() == 1
        assert await store.keys.delete_interaction_key(record.key)
        assert await store.keys.get_interaction_key(record.key, thread_id=5) is None


async def test_thread_of_a_session(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "db") as store:
        await store.places.put_channel(CHANNEL)
        assert await store.places.thread_of_session("ses_x") is None
        first = ThreadRecord(thread_id=1, session_id="ses_x", engine="opencode", directory="/a")
        await store.places.put_thread(first)
        assert await store.places.thread_of_session("ses_x") == first
        assert await store.places.thread_of_session("ses_y") is None
        assert await store.places.thread_of_session("") is None  # a thread not started yet


async def test_the_channel_of_a_directory_its_worktrees_and_its_symlinks(tmp_path: Path) -> None:
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    worktree = tmp_path / "worktrees" / "fix"
    for directory in (project, elsewhere, worktree):
        directory.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(project)
    async with await Store.open(tmp_path / "db") as store:
        await store.places.put_channel(ChannelRecord(10, link, guild_id=1, app_id=2))
        await store.places.put_thread(ThreadRecord(11, "ses", "opencode", worktree, channel_id=10))
        assert await store.places.channel_of_directory(link) == 10
        assert await store.places.channel_of_directory(project) == 10  # as an engine sees it
        assert await store.places.channel_of_directory(worktree) == 10
        assert await store.places.channel_of_directory(elsewhere) is None
