"""Model and agent choices by scope (session, channel, global), asked at every turn."""

from __future__ import annotations

from typing import final

import attrs

from kimaki.store._database import Database, to_row
from kimaki.store._records import Preference, PreferenceScope

__all__ = ["Preferences"]


@final
@attrs.frozen
class Preferences:
    """The preference records, answered from the write-through cache after the first read."""

    _db: Database = attrs.field(alias="db")

    async def set_preference(self, preference: Preference) -> None:
        """Store `preference`; a preference with neither model nor agent clears the scope."""
        key = (preference.scope, preference.scope_id)
        recent = self._db.recent_preferences
        recent.forget(key)
        if preference.model is None and preference.agent is None:
            where = "scope = ? AND scope_id = ?"
            await self._db.run(self._db.delete, "preferences", where, list(key))
            recent.put(key, None)
            return
        await self._db.run(
            self._db.upsert, "preferences", to_row(preference), ("scope", "scope_id")
        )
        recent.put(key, preference)

    async def get_preference(self, scope: PreferenceScope, scope_id: str = "") -> Preference | None:
        return await self._db.get_recent(
            self._db.recent_preferences, "preferences", (scope, scope_id), Preference
        )

    async def effective_preference(
        self, *, session_id: str | None, channel_id: int | None
    ) -> Preference:
        """Model and agent after precedence: session > channel > global (None = engine default).

        Each field resolves on its own, so a session that overrides only the agent keeps the
        channel's model. Asked at every turn, so answered from memory after the first time.
        """
        scopes: list[tuple[PreferenceScope, str]] = []
        if session_id is not None:
            scopes.append(("session", session_id))
        if channel_id is not None:
            scopes.append(("channel", str(channel_id)))
        scopes.append(("global", ""))
        model: str | None = None
        agent: str | None = None
        for scope, scope_id in scopes:
            found = await self.get_preference(scope, scope_id)
            if found is None:
                continue
            model = model if model is not None else found.model
            agent = agent if agent is not None else found.agent
        return Preference(scope="session", scope_id=session_id or "", model=model, agent=agent)
