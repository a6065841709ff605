"""The memory facet (entries in order, per channel, gone with their channel; the thread-context
switch) and the door's rules without Discord, plus the memory settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimaki._audit import AuditEvent, audit_sink
from kimaki.channel_memory import ChannelMemory, MemoryRefusedError, collapse
from kimaki.errors import ConfigError
from kimaki.settings import load_settings
from kimaki.store import ChannelRecord, MemoryEntry, Store, UnknownChannelError

CHANNEL = 1_300_000_000_000_000_001
OTHER = 1_300_000_000_000_000_002


async def _store(tmp_path: Path) -> Store:
    store = await Store.open(tmp_path / "kimaki.db")
    for channel_id in (CHANNEL, OTHER):
        await store.places.put_channel(
            ChannelRecord(channel_id=channel_id, directory=tmp_path, guild_id=1, app_id=2)
        )
    return store


def _entry(text: str, channel_id: int = CHANNEL) -> MemoryEntry:
    return MemoryEntry(
        channel_id=channel_id, text=text, author_id=7, author_name="alice", added_at=1.0
    )


async def test_entries_keep_their_order_per_channel_and_go_with_it(tmp_path: Path) -> None:
    async with await _store(tmp_path) as store:
        facet = store.memory
        first = await facet.add_memory_entry(_entry("one"))
        await facet.add_memory_entry(_entry("two"))
        await facet.add_memory_entry(_entry("elsewhere", OTHER))
        assert first.entry_id > 0
        assert first.position == 1
        assert [e.text for e in await facet.memory_entries(CHANNEL)] == ["one", "two"]
        assert await facet.remove_memory_entry(first.entry_id) is True
        assert await facet.remove_memory_entry(first.entry_id) is False
        third = await facet.add_memory_entry(_entry("three"))
        assert third.position == 3  # after the last, not in the gap
        assert [e.text for e in await facet.memory_entries(CHANNEL)] == ["two", "three"]
        assert await facet.clear_memory(CHANNEL) == 2
        assert [e.text for e in await facet.memory_entries(OTHER)] == ["elsewhere"]
        await store.places.delete_channel(OTHER)
        assert await facet.memory_entries(OTHER) == []
        with pytest.raises(UnknownChannelError):
            await facet.add_memory_entry(_entry("nowhere", 99))


async def test_the_thread_context_switch_defaults_to_on(tmp_path: Path) -> None:
    async with await _store(tmp_path) as store:
        assert await store.memory.thread_context(CHANNEL) is True
        await store.memory.set_thread_context(CHANNEL, False)
        assert await store.memory.thread_context(CHANNEL) is False
        assert await store.memory.thread_context(OTHER) is True
        await store.memory.set_thread_context(CHANNEL, True)
        assert await store.memory.thread_context(CHANNEL) is True


class _Trail:
    def __init__(self) -> None:
        self.events: list[AuditEvent] = []

    def put_nowait(self, event: AuditEvent) -> None:
        self.events.append(event)


async def test_changes_are_audited(tmp_path: Path) -> None:
    trail = _Trail()
    async with await _store(tmp_path) as store:
        door = ChannelMemory(records=store.memory)
        with audit_sink(trail):
            await door.add(CHANNEL, "memory", "Be brief.", author_id=7, author_name="alice")
            await door.add(CHANNEL, "flash", "Login page.", author_id=7, author_name="alice")
            await door.remove(CHANNEL, "memory", 1, user_id=8)
            await door.clear(CHANNEL, "flash", user_id=8)
            with pytest.raises(MemoryRefusedError):
                await door.add(CHANNEL, "memory", "x" * 1001, author_id=7, author_name="alice")
    kinds = [(e.kind, e.detail.get("memory"), e.user_id) for e in trail.events]
    assert kinds == [
        ("memory.added", "memory", 7),
        ("memory.added", "flash", 7),
        ("memory.removed", "memory", 8),
        ("memory.cleared", "flash", 8),
    ]
    assert all(e.channel_id == CHANNEL for e in trail.events)


def test_whitespace_collapses() -> None:
    assert collapse("  a\n\n b\t c ") == "a b c"


def test_an_entry_of_exactly_1000_characters_fits() -> None:
    door = ChannelMemory(records=None)  # type: ignore[arg-type]
    assert door.check("x" * 1000 + "   ") == "x" * 1000
    with pytest.raises(MemoryRefusedError, match="1001 characters long"):
        door.check("x" * 1001)
    with pytest.raises(MemoryRefusedError, match="empty"):
        door.check(" \n ")


def test_memory_settings(tmp_path: Path) -> None:
    default = load_settings(data_dir=str(tmp_path), environ={})
    assert (
        default.memory_limit_bytes,
        default.thread_context_messages,
        default.thread_context_chars,
    ) == (8192, 20, 4000)
    changed = load_settings(
        data_dir=str(tmp_path),
        environ={
            "KIMAKI_MEMORY_LIMIT_BYTES": "16K",
            "KIMAKI_THREAD_CONTEXT_MESSAGES": "0",
            "KIMAKI_THREAD_CONTEXT_CHARS": "2000",
        },
    )
    assert (
        changed.memory_limit_bytes,
        changed.thread_context_messages,
        changed.thread_context_chars,
    ) == (16384, 0, 2000)
    with pytest.raises(ConfigError, match="KIMAKI_MEMORY_LIMIT_BYTES must be a size"):
        load_settings(data_dir=str(tmp_path), environ={"KIMAKI_MEMORY_LIMIT_BYTES": "lots"})
    with pytest.raises(ConfigError, match="KIMAKI_THREAD_CONTEXT_MESSAGES must be a whole number"):
        load_settings(data_dir=str(tmp_path), environ={"KIMAKI_THREAD_CONTEXT_MESSAGES": "500"})
    with pytest.raises(ConfigError, match="KIMAKI_THREAD_CONTEXT_CHARS must be a whole number"):
        load_settings(data_dir=str(tmp_path), environ={"KIMAKI_THREAD_CONTEXT_CHARS": "many"})
