"""`/audit`: who may read the trail, its filters, and `/audit ask`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from audit_support import ensure_commands

from kimaki._audit import AuditEvent
from kimaki.discord.models import Permissions
from kimaki.errors import KimakiError
from kimaki.testing.bot import BotHarness, running_bot
from kimaki.testing.discord import InteractionRecord, open_discord_emulator
from kimaki.testing.discord._actors import Actor
from kimaki.testing.engine import FakeEngine

EPHEMERAL = 1 << 6


@attrs.define
class FakeAsker:
    answer: str = "Alice deleted two messages."
    error: str | None = None
    asked: list[tuple[str, int, int]] = attrs.field(factory=list)

    async def ask(self, question: str, *, channel_id: int, user_id: int) -> str:
        self.asked.append((question, channel_id, user_id))
        if self.error is not None:
            raise KimakiError(self.error)
        return self.answer


@pytest.fixture
def asker() -> FakeAsker:
    return FakeAsker()


@pytest.fixture
async def audited(
    fake_engine: FakeEngine, tmp_path: Path, asker: FakeAsker
) -> AsyncIterator[BotHarness]:
    async with (
        open_discord_emulator() as emulator,
        running_bot(
            emulator, fake_engine, tmp_path / "data", audit=True, audit_asker=asker
        ) as running,
    ):
        await ensure_commands(running)
        yield running


def _manager(harness: BotHarness, permission: Permissions) -> Actor:
    """A member whose only role grants `permission` (no Kimaki role)."""
    role = harness.emulator.create_role(
        harness.guild_id, f"role-{int(permission)}", permissions=int(permission)
    )
    return harness.emulator.add_user(
        f"manager{int(permission)}", guild_id=harness.guild_id, roles=[role["id"]]
    )


async def _answer(harness: BotHarness, record: InteractionRecord) -> dict[str, Any]:
    return await harness.emulator.wait_for_answer(record)


async def _audit(
    harness: BotHarness,
    subcommand: str,
    options: dict[str, Any] | None = None,
    *,
    actor: Actor | None = None,
    channel_id: str | None = None,
) -> dict[str, Any]:
    record = (actor or harness.owner).run_command(
        channel_id or harness.channel_id, "audit", options or {}, subcommand=subcommand
    )
    return await _answer(harness, record)


async def _seed(harness: BotHarness) -> None:
    assert harness.audit is not None
    channel = int(harness.channel_id)
    now = time.time()
    await harness.audit.store.write(
        [
            AuditEvent("message.created", now - 3 * 86400, channel, None, 11, {"content": "old"}),
            AuditEvent("message.created", now - 60, channel, None, 11, {"content": "hi there"}),
            AuditEvent("message.deleted", now - 50, channel, None, 12, {"message_id": 5}),
            AuditEvent("turn.ended", now - 40, channel, 99, 11, {"stop_reason": "end_turn"}),
            AuditEvent("message.created", now - 30, 424242, None, 11, {"content": "elsewhere"}),
        ]
    )


async def test_a_kimaki_member_who_is_not_a_manager_is_refused(audited: BotHarness) -> None:
    answer = await _audit(audited, "recent", actor=audited.alice)
    assert answer["flags"] & EPHEMERAL
    assert "Only the server owner" in answer["content"]
    asked = await _audit(audited, "ask", {"question": "who?"}, actor=audited.alice)
    assert "Only the server owner" in asked["content"]


@pytest.mark.parametrize("permission", [Permissions.ADMINISTRATOR, Permissions.MANAGE_GUILD])
async def test_managers_and_the_owner_read_it(audited: BotHarness, permission: Permissions) -> None:
    await _seed(audited)
    for actor in (audited.owner, _manager(audited, permission)):
        answer = await _audit(audited, "recent", actor=actor)
        assert answer["flags"] & EPHEMERAL
        lines = answer["content"].splitlines()
        # This channel's events (its threads' too), newest first; not another channel's.
        kinds = [line.split("`")[1] for line in lines if "`" in line]
        kinds = [kind for kind in kinds if not kind.startswith("command.")]  # /audit's own
        assert kinds[:4] == ["turn.ended", "message.deleted", "message.created", "message.created"]
        assert "elsewhere" not in answer["content"]


async def test_filters(audited: BotHarness) -> None:
    await _seed(audited)
    by_kind = await _audit(audited, "recent", {"kind": "message.created"})
    assert "hi there" in by_kind["content"]
    assert "old" in by_kind["content"]
    assert "turn.ended" not in by_kind["content"]
    since = await _audit(audited, "recent", {"kind": "message", "since": "1d"})
    assert "hi there" in since["content"]
    assert "content=old" not in since["content"]
    text = await _audit(audited, "recent", {"text": "HI THERE"})
    assert text["content"].count("\n") == 0
    assert "hi there" in text["content"]
    person = await _audit(audited, "recent", {"person": "12"})
    assert "message.deleted" in person["content"]
    assert "<@12>" in person["content"]
    assert "message.created" not in person["content"]
    nothing = await _audit(audited, "recent", {"text": "no such thing"})
    assert nothing["content"] == "No event matches those filters here."
    bad = await _audit(audited, "recent", {"since": "yesterday-ish"})
    assert "`since` is a span back from now" in bad["content"]
    counted = await _audit(audited, "recent", {"count": 1})
    assert counted["content"].count("\n") == 0


async def test_in_a_thread_only_the_threads_events(audited: BotHarness) -> None:
    message = audited.alice.send_message(audited.channel_id, "hello")
    thread_id = await audited.thread_of(message)
    await _seed(audited)
    assert audited.audit is not None
    await audited.audit.store.write(
        [AuditEvent("tool.called", time.time(), None, int(thread_id), None, {"tool": "grep"})]
    )
    answer = await _audit(audited, "recent", channel_id=thread_id)
    assert "`tool.called`: tool=grep" in answer["content"]
    assert "message.deleted" not in answer["content"]  # the channel's, not the thread's


async def test_ask_hands_the_question_to_the_asker(audited: BotHarness, asker: FakeAsker) -> None:
    answer = await _audit(audited, "ask", {"question": "who deleted messages?"})
    assert answer["flags"] & EPHEMERAL
    assert answer["content"] == "Alice deleted two messages."
    assert asker.asked == [
        ("who deleted messages?", int(audited.channel_id), int(audited.owner.id))
    ]
    asker.error = "the audit agent could not start"
    failed = await _audit(audited, "ask", {"question": "again?"})
    assert failed["content"] == (
        "The audit trail could not be asked: the audit agent could not start"
    )


async def test_ask_without_an_asker_is_refused(fake_engine: FakeEngine, tmp_path: Path) -> None:
    async with (
        open_discord_emulator() as emulator,
        running_bot(emulator, fake_engine, tmp_path / "data", audit=True) as harness,
    ):
        await ensure_commands(harness)
        answer = await _audit(harness, "ask", {"question": "anything?"})
        assert answer["flags"] & EPHEMERAL
        assert "not set up" in answer["content"]


async def test_without_a_trail_it_says_so(harness: BotHarness) -> None:
    await ensure_commands(harness)
    answer = await _audit(harness, "recent")
    assert answer["content"] == "The audit trail is not kept by this bot."
