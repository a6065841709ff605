"""Shared by the audit tests: waiting for a row recorded by another task."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from kimaki.audit import AuditRow, AuditTrail
from kimaki.testing.bot import BotHarness


async def wait_for_rows(
    trail: AuditTrail | None, predicate: Callable[[AuditRow], bool], **query: Any
) -> list[AuditRow]:
    """The stored rows `predicate` accepts (newest first), once there is at least one."""
    assert trail is not None, "running_bot(..., audit=True)"
    with trio.fail_after(10):
        while True:
            seen = trail.queue.accepted
            await trail.queue.settle()
            rows = [row for row in await trail.store.query(limit=1000, **query) if predicate(row)]
            if rows:
                return rows
            if trail.queue.accepted == seen:
                await trail.queue.next_arrival()


def kind(name: str) -> Callable[[AuditRow], bool]:
    return lambda row: row.kind == name


async def ensure_commands(harness: BotHarness) -> None:
    """The bot's commands registered in the workspace's guild (GUILD_CREATE registers them)."""
    await harness.emulator.wait_until(
        lambda: (
            True
            if any(
                c["name"] == "audit"
                for c in harness.emulator.state.commands.get(harness.guild_id, [])
            )
            else None
        )
    )
