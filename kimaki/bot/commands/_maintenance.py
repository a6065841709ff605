"""Upkeep of a session and its files: `/undo`, `/redo`, `/compact`, `/diff`,
`/restart-agent-server`.

Results the whole thread should see (what was undone, the diff) are posted publicly; the
checks before them (not a thread, an engine without the capability) answer only the person.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Final, Protocol, final

import attrs

from kimaki.agents import (
    Engine,
    EngineError,
    ModelRef,
    ServerRestart,
    SessionCompaction,
    SessionUndo,
)
from kimaki.bot._engines import Engines
from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import (
    CommandRegistry,
    ThreadLookup,
    engine_name,
    get_engine,
    say_engine_error,
    session_thread,
    thread_here,
    unsupported,
)
from kimaki.discord.rest import File
from kimaki.store import Preference, ThreadRecord

# One git runner for the project (its environment and error handling live there).
from kimaki.worktrees import WorktreeError, is_git_repository, run_git, worktree_slug

__all__ = ["MAX_DIFF_BYTES", "MaintenanceCommands", "MaintenanceThreads", "working_tree_diff"]

log = logging.getLogger("kimaki.commands")

MAX_DIFF_BYTES: Final = 8 * 1024 * 1024
"""The largest diff attached (Discord takes 10 MiB per file from bots)."""
_MAX_UNTRACKED: Final = 200


class MaintenanceThreads(ThreadLookup, Protocol):
    """The thread pipeline as the upkeep commands use it (`kimaki.threads.Threads` is one)."""

    def interrupt(self, thread_id: int) -> bool: ...


class EffectivePreferences(Protocol):
    """The model in effect for a session (`kimaki.store.Preferences` is one)."""

    async def effective_preference(
        self, *, session_id: str | None, channel_id: int | None
    ) -> Preference: ...


@final
@attrs.frozen(kw_only=True)
class MaintenanceCommands:
    """The upkeep commands, with what they use."""

    _threads: MaintenanceThreads
    _engines: Engines
    _preferences: EffectivePreferences

    def install(self, registry: CommandRegistry) -> None:
        add = registry.add_command
        add(
            SlashCommand(
                "undo", "Take back the agent's last turn (messages and file edits)", self._undo
            )
        )
        add(SlashCommand("redo", "Bring back what /undo took back", self._redo))
        add(
            SlashCommand(
                "compact", "Summarise this session's history to free the context", self._compact
            )
        )
        add(
            SlashCommand(
                "diff", "The uncommitted changes of this thread's folder, as a file", self._diff
            )
        )
        add(
            SlashCommand(
                "restart-agent-server",
                "Restart the agent server of this project (or this thread's worktree)",
                self._restart,
            )
        )

    async def _session(
        self, ctx: InteractionContext, command: str
    ) -> tuple[Engine, ThreadRecord] | None:
        """The engine and record of the session thread the command ran in."""
        record = await session_thread(ctx, self._threads, command)
        if record is None:
            return None
        engine = await get_engine(ctx, self._engines, record.engine)
        if engine is None:
            return None
        if not record.session_id:
            await ctx.reply("This thread has no session yet: nothing to do.")
            return None
        return engine, record

    async def _undo(self, ctx: InteractionContext) -> None:
        found = await self._session(ctx, "undo")
        if found is None:
            return
        engine, record = found
        if not isinstance(engine, SessionUndo):
            await unsupported(ctx, engine, "undo")
            return
        self._threads.interrupt(record.thread_id)
        await ctx.defer(ephemeral=False)
        try:
            result = await engine.undo(record.directory, record.session_id)
        except EngineError as exc:
            await say_engine_error(ctx, "undo", exc)
            return
        if not result.changed:
            await ctx.reply("Nothing to undo in this session.", ephemeral=False)
            return
        quoted = f" (“{_short(result.prompt)}” and what followed)" if result.prompt else ""
        await ctx.reply(
            f"↩️ Undid the last turn{quoted}: its messages and file edits are taken back. "
            "`/redo` brings them back until the next message.",
            ephemeral=False,
        )

    async def _redo(self, ctx: InteractionContext) -> None:
        found = await self._session(ctx, "redo")
        if found is None:
            return
        engine, record = found
        if not isinstance(engine, SessionUndo):
            await unsupported(ctx, engine, "redo")
            return
        await ctx.defer(ephemeral=False)
        try:
            result = await engine.redo(record.directory, record.session_id)
        except EngineError as exc:
            await say_engine_error(ctx, "redo", exc)
            return
        if not result.changed:
            await ctx.reply(
                "Nothing to redo: nothing was undone since the last message.", ephemeral=False
            )
            return
        await ctx.reply("↪️ Brought back the undone turn.", ephemeral=False)

    async def _compact(self, ctx: InteractionContext) -> None:
        found = await self._session(ctx, "compact")
        if found is None:
            return
        engine, record = found
        if not isinstance(engine, SessionCompaction):
            await unsupported(ctx, engine, "compact")
            return
        preference = await self._preferences.effective_preference(
            session_id=record.session_id, channel_id=record.channel_id
        )
        try:
            model = ModelRef.parse(preference.model) if preference.model else None
        except ValueError:
            model = None
        await ctx.defer(ephemeral=False)
        try:
            await engine.compact(record.directory, record.session_id, model=model)
        except EngineError as exc:
            await say_engine_error(ctx, "compact the session", exc)
            return
        await ctx.reply("🗜️ Compacted the session: its history is now a summary.", ephemeral=False)

    async def _restart(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        thread = await thread_here(ctx, self._threads)
        engine = await get_engine(ctx, self._engines, engine_name(ctx, thread))
        if engine is None:
            return
        if not isinstance(engine, ServerRestart):
            await unsupported(ctx, engine, "restart-agent-server")
            return
        directory = thread.directory if thread is not None else project.directory
        try:
            await engine.restart_server(directory)
        except EngineError as exc:
            await say_engine_error(ctx, "restart the agent server", exc)
            return
        await ctx.reply(f"Restarted the agent server of `{directory}`.")

    async def _diff(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        thread = await thread_here(ctx, self._threads)
        directory = thread.directory if thread is not None else project.directory
        if not await is_git_repository(directory):
            await ctx.reply(f"`{directory}` is not a git repository: there is no diff to show.")
            return
        await ctx.defer(ephemeral=False)
        diff = await working_tree_diff(directory)
        if not diff.strip():
            await ctx.reply(f"No uncommitted changes in `{directory}`.", ephemeral=False)
            return
        files = len(re.findall(rb"^diff --git ", diff, flags=re.MULTILINE))
        note = ""
        if len(diff) > MAX_DIFF_BYTES:
            diff = diff[:MAX_DIFF_BYTES]
            note = f" (cut at {MAX_DIFF_BYTES // (1024 * 1024)} MB)"
        try:
            name = worktree_slug(directory.name)
        except WorktreeError:
            name = "changes"
        await ctx.reply(
            f"Uncommitted changes in `{directory}`: {files} file(s){note}.",
            ephemeral=False,
            files=(File(f"{name}.diff", diff, content_type="text/x-diff"),),
        )


# ---- /diff


async def working_tree_diff(directory: Path) -> bytes:
    """What `git diff HEAD` shows, plus files git does not track yet (as new files)."""
    head = await run_git(directory, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    if head.returncode == 0:
        base = "HEAD"
    else:  # no commit yet: compare with the empty tree
        empty = await run_git(directory, "hash-object", "-t", "tree", "/dev/null")
        base = empty.stdout.decode().strip()
    tracked = await run_git(directory, "diff", "--binary", "--end-of-options", base, "--")
    parts = [tracked.stdout]
    untracked = await run_git(directory, "ls-files", "--others", "--exclude-standard", "-z")
    names = [name for name in untracked.stdout.decode(errors="replace").split("\0") if name]
    for name in names[:_MAX_UNTRACKED]:
        new = await run_git(
            directory, "diff", "--binary", "--no-index", "--", "/dev/null", name, check=False
        )
        parts.append(new.stdout)
    if len(names) > _MAX_UNTRACKED:
        parts.append(f"# … and {len(names) - _MAX_UNTRACKED} more new files\n".encode())
    return b"".join(parts)


def _short(text: str, limit: int = 80) -> str:
    """The first line of a prompt (the rest is often context the bot added), shortened."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
