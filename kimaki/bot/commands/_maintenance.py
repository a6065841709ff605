"""Upkeep of a session and its files: `/undo`, `/redo`, `/compact`, `/diff`,
`/restart-agent-server`.

Results the whole thread should see (what was undone, the diff) are posted publicly; the
checks before them (not a thread, an engine without the capability) answer only the person.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs
import trio

from kimaki import egress
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

__all__ = [
    "MAX_DIFF_BYTES",
    "MaintenanceCommands",
    "MaintenanceThreads",
    "WorkingTreeDiff",
    "working_tree_diff",
]

log = logging.getLogger("kimaki.commands")

MAX_DIFF_BYTES: Final = egress.TEXT_LIMIT
"""The largest diff attached: the egress policy's limit for text."""
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
    _data_dir: Path | None = None
    """The daemon's data dir: nothing in it goes out in a diff."""

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
        diff = await working_tree_diff(directory, data_dir=self._data_dir)
        left_out = _left_out_text(diff.left_out)
        if not diff.patch.strip():
            await ctx.reply(f"No uncommitted changes in `{directory}`.{left_out}", ephemeral=False)
            return
        patch, note = diff.patch, ""
        if len(patch.encode()) > MAX_DIFF_BYTES:
            patch = _cut(patch, MAX_DIFF_BYTES)
            note = f" (cut at {MAX_DIFF_BYTES // (1024 * 1024)} MiB)"
        try:
            name = worktree_slug(directory.name)
        except WorktreeError:
            name = "changes"
        # The diff leaves as a file: the egress policy redacts it (and records it).
        origin = egress.Origin(
            "diff",
            channel_id=project.channel_id,
            thread_id=thread.thread_id if thread is not None else None,
            user_id=ctx.user.id,
        )
        try:
            outgoing = await egress.prepare_text(f"{name}.diff", patch, origin)
        except egress.EgressRefused as exc:
            await ctx.reply(egress.refusal_line(exc.reason), ephemeral=False)
            return
        await ctx.reply(
            f"Uncommitted changes in `{directory}`: {diff.files} file(s){note}.{left_out}",
            ephemeral=False,
            files=(File(outgoing.name, outgoing.data, content_type="text/x-diff"),),
        )


# ---- /diff


@final
@attrs.frozen
class WorkingTreeDiff:
    """The uncommitted changes of a folder, as they may leave: `left_out` names the changed
    files kept out of `patch` and why (secrets by name, the data dir)."""

    patch: str
    files: int
    left_out: tuple[tuple[str, str], ...] = ()


async def working_tree_diff(directory: Path, *, data_dir: Path | None = None) -> WorkingTreeDiff:
    """What `git diff HEAD` shows, plus files git does not track yet (as new files).

    Files the egress policy never lets out (`.env*`, keys, credentials, the data dir) are left
    out by name, and binary changes show as "Binary files … differ" (their bytes would leave
    inside the patch otherwise).
    """
    head = await run_git(directory, "rev-parse", "--verify", "--quiet", "HEAD", check=False)
    if head.returncode == 0:
        base = "HEAD"
    else:  # no commit yet: compare with the empty tree
        empty = await run_git(directory, "hash-object", "-t", "tree", "/dev/null")
        base = empty.stdout.decode().strip()
    top = await run_git(directory, "rev-parse", "--show-toplevel")
    root = Path(top.stdout.decode().strip())
    left_out: list[tuple[str, str]] = []

    async def keep(names: list[str], base_dir: Path) -> list[str]:
        kept, out = await trio.to_thread.run_sync(
            _screen_names, names, base_dir, directory, data_dir
        )
        left_out.extend(out)
        return kept

    changed = await run_git(
        directory, "diff", "--name-only", "-z", "--no-renames", "--end-of-options", base, "--"
    )
    names = _names(changed.stdout)
    kept = set(await keep(names, root))
    excluded = [f":(top,exclude,literal){name}" for name in names if name not in kept]
    tracked = await run_git(
        directory, "diff", "--no-renames", "--end-of-options", base, "--", *excluded
    )
    parts = [tracked.stdout]
    untracked = await run_git(directory, "ls-files", "--others", "--exclude-standard", "-z")
    new_names = await keep(_names(untracked.stdout), directory)
    for name in new_names[:_MAX_UNTRACKED]:
        new = await run_git(directory, "diff", "--no-index", "--", "/dev/null", name, check=False)
        parts.append(new.stdout)
    if len(new_names) > _MAX_UNTRACKED:
        parts.append(f"# … and {len(new_names) - _MAX_UNTRACKED} more new files\n".encode())
    patch = b"".join(parts).decode("utf-8", errors="replace")
    files = len(re.findall(r"^diff --git ", patch, flags=re.MULTILINE))
    return WorkingTreeDiff(patch, files, tuple(left_out))


def _names(output: bytes) -> list[str]:
    return [name for name in output.decode(errors="replace").split("\0") if name]


def _screen_names(
    names: list[str], base_dir: Path, directory: Path, data_dir: Path | None
) -> tuple[list[str], list[tuple[str, str]]]:
    """`names` (relative to `base_dir`) split into those a diff may show and those left out
    (with why): sensitive by name, or in the data dir (unless the folder is a worktree there)."""
    data = data_dir.resolve() if data_dir is not None else None
    if data is not None and egress.in_data_dir(directory.resolve(), data):
        data = None
    kept: list[str] = []
    left_out: list[tuple[str, str]] = []
    for name in names:
        why = egress.sensitive_reason(name)
        if why is None and data is not None:
            path = Path(os.path.normpath(base_dir / name))
            if path.is_relative_to(data) or path.resolve().is_relative_to(data):
                why = "it is inside kimaki's data directory"
        if why is None:
            kept.append(name)
        else:
            left_out.append((name, why))
    return kept, left_out


def _left_out_text(left_out: Sequence[tuple[str, str]]) -> str:
    if not left_out:
        return ""
    shown = ", ".join(f"`{name}`" for name, _ in left_out[:5])
    more = f" and {len(left_out) - 5} more" if len(left_out) > 5 else ""
    return f"\n-# Left out (never sent: secrets or kimaki's data): {shown}{more}."


def _cut(text: str, limit: int) -> str:
    """`text` cut to at most `limit` bytes of UTF-8, at the end of a line where there is one."""
    head = text.encode()[:limit].decode("utf-8", errors="ignore")
    end = head.rfind("\n")
    return head[: end + 1] if end > 0 else head


def _short(text: str, limit: int = 80) -> str:
    """The first line of a prompt (the rest is often context the bot added), shortened."""
    line = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"
