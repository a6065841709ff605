"""What an engine leaves running across an in-place restart of the daemon.

The agent layer owns this record (an engine makes it in `handover()` and takes it back in
`adopt`); the store only persists it between the two process images, so it imports it from
here rather than the other way round.
"""

from __future__ import annotations

from pathlib import Path
from typing import final

import attrs

__all__ = ["AgentServerHandover"]


@final
@attrs.frozen
class AgentServerHandover:
    """An agent server left running across an in-place restart, for the next process to adopt.

    After `os.execv` the server is still a child of the same pid. `stdout_fd`/`stderr_fd` are
    the read ends of its output pipes, kept open (inheritable) through the exec so the server
    never writes into a closed pipe; None when the engine does not hand them over.
    """

    engine: str
    directory: Path = attrs.field(converter=Path)
    pid: int
    port: int
    password: str = attrs.field(repr=False)
    started_at: float
    stdout_fd: int | None = None
    stderr_fd: int | None = None
