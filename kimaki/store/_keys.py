"""What the custom ids of buttons and menus stand for: random keys bound to one thread."""

from __future__ import annotations

import json
import secrets
import time
from typing import Any, final

import attrs

from kimaki.store._database import Database
from kimaki.store._records import InteractionKey

__all__ = ["InteractionKeys"]


@final
@attrs.frozen
class InteractionKeys:
    """The interaction keys: created when a component is posted, read when it is pressed,
    swept when they expire."""

    _db: Database = attrs.field(alias="db")

    async def create_interaction_key(
        self, *, thread_id: int, kind: str, payload: Any, ttl: float
    ) -> InteractionKey:
        """A fresh random key (for a custom id) bound to `thread_id`, valid for `ttl` seconds."""
        record = InteractionKey(
            key=secrets.token_urlsafe(12),
            thread_id=thread_id,
            kind=kind,
            payload=payload,
            expires_at=time.time() + ttl,
        )
        row = {
            "key": record.key,
            "thread_id": thread_id,
            "kind": kind,
            "payload": json.dumps(payload),
            "expires_at": record.expires_at,
        }
        await self._db.run(self._db.upsert, "interaction_keys", row, "key")
        return record

    async def get_interaction_key(self, key: str, *, thread_id: int) -> InteractionKey | None:
        """The key's record if it exists, has not expired and belongs to `thread_id`."""
        row = await self._db.run(self._db.get, "interaction_keys", key)
        if row is None or row["thread_id"] != thread_id or row["expires_at"] < time.time():
            return None
        return InteractionKey(
            key=row["key"],
            thread_id=row["thread_id"],
            kind=row["kind"],
            payload=json.loads(row["payload"]),
            expires_at=row["expires_at"],
        )

    async def delete_interaction_key(self, key: str) -> bool:
        return await self._db.run(self._db.delete, "interaction_keys", "key = ?", [key]) > 0

    async def delete_expired_interaction_keys(self) -> int:
        now = time.time()
        return await self._db.run(self._db.delete, "interaction_keys", "expires_at < ?", [now])
