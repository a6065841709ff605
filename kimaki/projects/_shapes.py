"""What crosses the lock port between the daemon and the shell: JSON shapes and the token.

`kimaki project list --json` prints the same record shape the routes send, so a script sees
one format whether or not a daemon runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, final

import attrs

from kimaki._control_client import CONTROL_TOKEN_FILE, TOKEN_HEADER
from kimaki.store import ChannelRecord

__all__ = [
    "CONTROL_TOKEN_FILE",
    "TOKEN_HEADER",
    "AddedProject",
    "added_from_json",
    "added_json",
    "record_from_json",
    "record_json",
]

# The token's file and header belong to the lock port's API (`kimaki._control_client`),
# shared by every subsystem's routes; named here too for the project routes' users.


@final
@attrs.frozen
class AddedProject:
    """The channels of a project; `created` is False when the folder was already mapped."""

    text: ChannelRecord
    voice: ChannelRecord | None
    created: bool


def record_json(record: ChannelRecord) -> dict[str, Any]:
    """A project channel as JSON; ids as strings, as Discord writes them."""
    return {
        "channel_id": str(record.channel_id),
        "channel_type": record.channel_type,
        "directory": str(record.directory),
        "guild_id": str(record.guild_id),
        "app_id": str(record.app_id),
        "engine": record.engine,
        "verbosity": record.verbosity,
        "auto_worktrees": record.auto_worktrees,
    }


def record_from_json(data: Any) -> ChannelRecord:
    """The inverse of `record_json`; `ValueError` for anything else."""
    try:
        return ChannelRecord(
            channel_id=int(data["channel_id"]),
            channel_type="voice" if data.get("channel_type") == "voice" else "text",
            directory=Path(str(data["directory"])),
            guild_id=int(data["guild_id"]),
            app_id=int(data["app_id"]),
            engine=data.get("engine"),
            verbosity=data.get("verbosity"),
            auto_worktrees=bool(data.get("auto_worktrees", False)),
        )
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"not a project record: {exc!r}") from None


def added_json(added: AddedProject) -> dict[str, Any]:
    return {
        "text": record_json(added.text),
        "voice": None if added.voice is None else record_json(added.voice),
        "created": added.created,
    }


def added_from_json(data: Any) -> AddedProject:
    """The inverse of `added_json`; `ValueError` for anything else."""
    if not isinstance(data, dict):
        raise ValueError("not a project")
    voice = data.get("voice")
    return AddedProject(
        record_from_json(data.get("text")),
        None if voice is None else record_from_json(voice),
        bool(data.get("created")),
    )
