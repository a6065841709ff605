"""kimaki: drive AI coding agents from Discord, one thread per session, on this machine."""

from __future__ import annotations

from kimaki._version import __version__

__all__ = ["__version__"]
