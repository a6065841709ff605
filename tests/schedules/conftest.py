"""The store for the scheduling tests: real SQLite, its calls run inline on the event loop.

Under trio's autojump clock a call in a worker thread looks idle, and the clock would jump past
it; so here the store's SQL runs on the event loop (the real SQL; only the thread hop is
skipped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from schedules_harness import CHANNEL

from kimaki.store import ChannelRecord
from kimaki.store._database import Database
from kimaki.store._places import Places


async def _inline(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    await trio.lowlevel.checkpoint()
    return fn(*args, **kwargs)


@pytest.fixture
async def store_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Database]:
    db = await Database.open(tmp_path / "kimaki.sqlite")
    monkeypatch.setattr(db, "run", _inline)
    await Places(db).put_channel(
        ChannelRecord(channel_id=CHANNEL, directory="/srv/app", guild_id=1, app_id=2)
    )
    try:
        yield db
    finally:
        db.conn.close()
