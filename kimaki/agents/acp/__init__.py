"""The ACP engine: Agent Client Protocol agents over stdio."""

from __future__ import annotations
