"""Fakes and harnesses the tests, benchmarks and offline runs share.

- `kimaki.testing.discord`: a Discord-compatible emulator (REST, gateway, actors, waiters).
- `kimaki.testing.opencode`: a fake `opencode serve` (also runnable as a process).
- `kimaki.testing.model_server`: a fake OpenAI-compatible model server for the real OpenCode.
- `kimaki.testing.daemon`: runs the real daemon as a child process.
"""

from __future__ import annotations
