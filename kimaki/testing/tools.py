"""A fake `ToolContext` and fake `ToolPlaces`, for fast tests of the agent tools.

`RecordingToolContext` is one thread as a tool sees it, without Discord: it records what tools
post, upload, offer as buttons and ask; answers to `ask` and the history a tool reads are
scripted by the test.

```python
ctx = RecordingToolContext(directory=tmp_path / "project", data_dir=tmp_path / "data")
ctx.answers.append([["Yes"]])
result = await ToolBox(BUILTIN_TOOLS).call(ctx, "ask", {"question": "Ship it?"})
assert result.text == "Yes" and ctx.asked[0][0].question == "Ship it?"
```
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, final

import anyio
import attrs
import trio
from mcp import ClientSession
from mcp.shared.message import SessionMessage

from kimaki.agents import Question
from kimaki.tools import ButtonChoice, HistoryEntry, ToolContext, Where, serve_relay

__all__ = [
    "ButtonsPosted",
    "FakeToolPlaces",
    "HistoryRead",
    "Posted",
    "RecordingToolContext",
    "Uploaded",
    "relay_session",
]


@final
@attrs.frozen
class Posted:
    content: str
    where: Where
    message_id: int


@final
@attrs.frozen
class Uploaded:
    path: Path
    data: bytes
    content: str | None
    message_id: int


@final
@attrs.frozen
class ButtonsPosted:
    prompt: str
    buttons: tuple[ButtonChoice, ...]
    message_id: int


@final
@attrs.frozen
class HistoryRead:
    where: Where
    limit: int
    before: int | None


def _ids() -> Iterator[int]:
    return itertools.count(1_300_000_000_000_000_001)


@final
@attrs.define(eq=False)
class RecordingToolContext:
    """One thread for tools, in memory. `answers` are what `ask` returns, in order (None: the
    question was dismissed), once `answer_gate` is set when there is one (a person taking
    their time); `thread_history` and `channel_history` are newest first."""

    directory: Path
    data_dir: Path
    thread_id: int = 1_200_000_000_000_000_002
    channel_id: int = 1_200_000_000_000_000_001
    answers: list[Sequence[Sequence[str]] | None] = attrs.Factory(list)
    answer_gate: trio.Event | None = None
    thread_history: list[HistoryEntry] = attrs.Factory(list)
    channel_history: list[HistoryEntry] = attrs.Factory(list)
    posts: list[Posted] = attrs.Factory(list)
    uploads: list[Uploaded] = attrs.Factory(list)
    button_posts: list[ButtonsPosted] = attrs.Factory(list)
    asked: list[tuple[Question, ...]] = attrs.Factory(list)
    history_reads: list[HistoryRead] = attrs.Factory(list)
    _ids: Iterator[int] = attrs.field(factory=_ids, init=False)

    async def post(self, content: str, *, where: Where = "thread") -> int:
        message_id = next(self._ids)
        self.posts.append(Posted(content, where, message_id))
        return message_id

    async def upload(self, path: Path, data: bytes, content: str | None) -> int:
        message_id = next(self._ids)
        self.uploads.append(Uploaded(path, data, content, message_id))
        return message_id

    async def buttons(self, prompt: str, buttons: Sequence[ButtonChoice]) -> int:
        message_id = next(self._ids)
        self.button_posts.append(ButtonsPosted(prompt, tuple(buttons), message_id))
        return message_id

    async def ask(self, questions: Sequence[Question]) -> Sequence[Sequence[str]] | None:
        self.asked.append(tuple(questions))
        if self.answer_gate is not None:
            await self.answer_gate.wait()
        if not self.answers:
            raise AssertionError("a tool asked, and the test scripted no answer")
        return self.answers.pop(0)

    async def history(
        self, *, where: Where, limit: int, before: int | None
    ) -> Sequence[HistoryEntry]:
        self.history_reads.append(HistoryRead(where, limit, before))
        entries = self.thread_history if where == "thread" else self.channel_history
        if before is not None:
            entries = [entry for entry in entries if entry.message_id < before]
        return entries[:limit]


@final
class FakeToolPlaces:
    """`ToolPlaces` over a fixed table of tokens; `revoke` ends one, as a session's end does."""

    def __init__(self, contexts: Mapping[str, ToolContext] | None = None) -> None:
        self.contexts: dict[str, ToolContext] = dict(contexts or {})
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def revoke(self, token: str) -> None:
        self.contexts.pop(token, None)

    def knows(self, token: str) -> bool:
        return token in self.contexts

    async def context_for(
        self, token: str, tool: str, arguments: Mapping[str, Any]
    ) -> ToolContext | None:
        self.calls.append((token, tool, dict(arguments)))
        return self.contexts.get(token)


@asynccontextmanager
async def relay_session(control_url: str, token: str) -> AsyncIterator[ClientSession]:
    """kimaki's tool relay over memory streams, with the MCP SDK's client session on the other
    end, initialized: an agent's view of `kimaki mcp-tools`, without a process."""
    to_relay, relay_reads = anyio.create_memory_object_stream[SessionMessage | Exception](1)
    relay_writes, from_relay = anyio.create_memory_object_stream[SessionMessage | Exception](1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve_relay, control_url, token, relay_reads, relay_writes)
        async with ClientSession(from_relay, to_relay) as session:
            await session.initialize()
            yield session
        # The client going away (stdin's end, for the real one) ends the relay.
        await to_relay.aclose()
        with trio.fail_after(5):
            await from_relay.aclose()
