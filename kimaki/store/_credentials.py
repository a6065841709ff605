"""The bot token, kept in the database (mode 0600) by `kimaki token set` or the first run;
the transcription service's key, kept there by `/transcription-key`."""

from __future__ import annotations

import time
from typing import final

import attrs

from kimaki.store._database import Database

__all__ = ["Credentials"]


@final
@attrs.frozen
class Credentials:
    """The stored bot token (at most one), and the transcription key (at most one)."""

    _db: Database = attrs.field(alias="db")

    async def get_bot_token(self) -> str | None:
        row = await self._db.run(self._db.get, "bot_credentials", 1)
        return None if row is None else str(row["token"])

    async def set_bot_token(self, token: str) -> None:
        row = {"id": 1, "token": token, "updated_at": time.time()}
        await self._db.run(self._db.upsert, "bot_credentials", row, "id")

    async def clear_bot_token(self) -> bool:
        return await self._db.run(self._db.delete, "bot_credentials", "id = 1", []) > 0

    async def get_transcription_key(self) -> tuple[str, str] | None:
        """`(provider, key)` set with `/transcription-key`, or None."""
        row = await self._db.run(self._db.get, "transcription_credentials", 1)
        return None if row is None else (str(row["provider"]), str(row["api_key"]))

    async def set_transcription_key(self, provider: str, key: str) -> None:
        row = {"id": 1, "provider": provider, "api_key": key, "updated_at": time.time()}
        await self._db.run(self._db.upsert, "transcription_credentials", row, "id")

    async def clear_transcription_key(self) -> bool:
        deleted = await self._db.run(self._db.delete, "transcription_credentials", "id = 1", [])
        return deleted > 0
