"""Worktrees: `/new-worktree`, `/merge-worktree`, `/worktrees` (with the automatic toggle).

A worktree thread's session runs in `<data-dir>/worktrees/<project key>/<slug>` on branch
`kimaki/<slug>` (its own agent server, since servers are per directory). Merging rebases that
branch onto the target and fast-forwards the target; a conflict is reported with its files
and handed to the agent to resolve. Nothing is force-pushed, reset or deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Final, Protocol, final

import attrs

from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import (
    ChannelRecords,
    CommandRegistry,
    QuietPoster,
    SpentKeys,
    ThreadLookup,
    command_prompt,
    matching,
    option,
    post_quietly,
    session_thread,
)
from kimaki.discord.models import ActionRow, Button, ButtonStyle, Channel, CommandChoice
from kimaki.store import ChannelRecord, InteractionKey, WorktreeRecord
from kimaki.threads import Prompt
from kimaki.worktrees import (
    BRANCH_PREFIX,
    MergeResult,
    Worktree,
    WorktreeError,
    create_worktree,
    current_branch,
    is_git_repository,
    merge_worktree,
    project_key,
    run_git,
)

__all__ = ["WorktreeCommands", "WorktreeThreads", "conflict_prompt", "list_worktrees"]

_TOGGLE_KIND: Final = "worktrees-auto"


class WorktreeThreads(ThreadLookup, Protocol):
    """The thread pipeline as the worktree commands use it (`kimaki.threads.Threads` is one)."""

    async def start_thread(
        self, project: ChannelRecord, *, name: str, worktree: Worktree | None = ...
    ) -> Channel: ...

    def submit(self, thread_id: int, prompt: Prompt) -> int: ...


class WorktreeRecords(ChannelRecords, Protocol):
    """Channel records and threads' worktrees (`kimaki.store.Places` is one)."""

    async def get_worktree(self, thread_id: int) -> WorktreeRecord | None: ...


@final
@attrs.frozen(kw_only=True)
class WorktreeCommands:
    """The worktree commands, with what they use."""

    _threads: WorktreeThreads
    _records: WorktreeRecords
    _keys: SpentKeys
    _rest: QuietPoster
    _worktrees_dir: Path
    _application_id: int

    def install(self, registry: CommandRegistry) -> None:
        add = registry.add_command
        add(
            SlashCommand(
                "new-worktree",
                "Start a session in a new git worktree (its own branch) of this project",
                self._new_worktree,
                options=(
                    option("name", "Names the branch kimaki/<name>", required=True, max_length=100),
                    option(
                        "base-branch",
                        "Branch to start from (default: the current one)",
                        autocomplete=True,
                    ),
                ),
                autocomplete=_branches,
            )
        )
        add(
            SlashCommand(
                "merge-worktree",
                "Rebase this thread's worktree branch onto a branch and fast-forward it",
                self._merge_worktree,
                options=(
                    option(
                        "target-branch",
                        "Branch to merge into (default: the base branch)",
                        autocomplete=True,
                    ),
                ),
                autocomplete=_branches,
            )
        )
        add(
            SlashCommand(
                "worktrees",
                "List this project's worktrees; turn automatic worktrees on or off",
                self._worktrees,
            )
        )
        registry.on_component(_TOGGLE_KIND, self._toggle)

    # ---- /new-worktree

    async def _new_worktree(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        name = ctx.text_option("name")
        base = ctx.text_option("base-branch").strip() or None
        try:
            worktree = await create_worktree(project.directory, self._worktrees_dir, name, base)
        except WorktreeError as exc:
            await ctx.reply(f"No worktree: {exc}.")
            return
        slug = worktree.branch.removeprefix(BRANCH_PREFIX)
        thread = await self._threads.start_thread(project, name=slug, worktree=worktree)
        await post_quietly(
            self._rest,
            thread.id,
            f"⎇ This thread works in `{worktree.path}` on branch `{worktree.branch}` "
            f"(from `{worktree.base}`). Write here to start; `/merge-worktree` merges it back.",
        )
        await ctx.reply(f"Created worktree `{worktree.branch}` in <#{thread.id}>.")

    # ---- /merge-worktree

    async def _merge_worktree(self, ctx: InteractionContext) -> None:
        record = await session_thread(ctx, self._threads, "merge-worktree")
        if record is None:
            return
        worktree = await self._records.get_worktree(record.thread_id)
        if worktree is None:
            await ctx.reply("This thread has no worktree: start one with `/new-worktree`.")
            return
        target = ctx.text_option("target-branch").strip() or worktree.base_branch
        if target is None:
            target = await current_branch(worktree.project_directory)
        if target is None:
            await ctx.reply("Name the branch to merge into: the project is on a detached HEAD.")
            return
        await ctx.defer(ephemeral=False)
        try:
            result = await merge_worktree(worktree.directory, worktree.branch, target)
        except WorktreeError as exc:
            await ctx.reply(f"⚠️ Not merged: {exc}.", ephemeral=False)
            return
        if result.outcome == "merged":
            await ctx.reply(f"✅ {result.message}.", ephemeral=False)
        elif result.outcome == "up-to-date":
            await ctx.reply(f"Nothing to merge: {result.message}.", ephemeral=False)
        elif result.outcome == "conflict":
            await ctx.reply(
                f"⚠️ {result.message}\nAsking the agent to resolve the conflicts.", ephemeral=False
            )
            prompt = command_prompt(ctx, conflict_prompt(result, worktree.branch, target))
            self._threads.submit(record.thread_id, attrs.evolve(prompt, thread_id=record.thread_id))
        else:  # uncommitted work, or the target could not be fast-forwarded
            await ctx.reply(f"⚠️ Not merged: {result.message}", ephemeral=False)

    # ---- /worktrees

    async def _worktrees_view(
        self, ctx: InteractionContext, project: ChannelRecord
    ) -> tuple[str, tuple[ActionRow, ...]]:
        if not await is_git_repository(project.directory):
            return f"`{project.directory}` is not a git repository: it cannot have worktrees.", ()
        worktrees = await list_worktrees(project.directory, self._worktrees_dir)
        lines = [f"Worktrees of `{project.directory}`:"]
        lines += [f"- `{branch}` in `{path}`" for path, branch in worktrees] or ["- none yet"]
        state = "on" if project.auto_worktrees else "off"
        lines.append(f"Automatic worktrees for new threads: **{state}**.")
        custom_id = await ctx.custom_id(_TOGGLE_KIND, {"channel_id": project.channel_id})
        label = "Turn automatic worktrees off" if project.auto_worktrees else "Turn them on"
        style = ButtonStyle.SECONDARY if project.auto_worktrees else ButtonStyle.PRIMARY
        return "\n".join(lines), (ActionRow((Button(style, label, custom_id),)),)

    async def _worktrees(self, ctx: InteractionContext) -> None:
        project = ctx.project
        assert project is not None
        content, components = await self._worktrees_view(ctx, project)
        await ctx.reply(content, components=components)

    async def _toggle(self, ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
        records = self._records
        channel_id = key.payload.get("channel_id") if isinstance(key.payload, dict) else None
        project = await records.get_channel(int(channel_id or 0))
        if project is None or project.app_id != self._application_id:
            await ctx.update("This channel is no longer a project.", components=())
            return
        project = attrs.evolve(project, auto_worktrees=not project.auto_worktrees)
        await records.put_channel(project)
        await self._keys.delete_interaction_key(key.key)
        content, components = await self._worktrees_view(ctx, project)
        await ctx.update(content, components=components)


async def _branches(ctx: InteractionContext) -> Sequence[CommandChoice]:
    project = ctx.project
    assert project is not None
    _, typed = ctx.focused()
    if not await is_git_repository(project.directory):
        return ()
    result = await run_git(
        project.directory, "for-each-ref", "--format=%(refname:short)", "refs/heads", check=False
    )
    names = [line for line in result.stdout.decode(errors="replace").splitlines() if line]
    return matching([CommandChoice(name, name) for name in names if len(name) <= 100], typed)


def conflict_prompt(result: MergeResult, branch: str, target: str) -> str:
    """What the agent is asked when a merge stops on conflicts."""
    files = "\n".join(f"- {name}" for name in result.conflicts) or "- (see `git status`)"
    return (
        f"Merging `{branch}` into `{target}` stopped: rebasing onto `{target}` hit conflicts "
        f"in these files:\n{files}\n\n"
        "Resolve the conflicts in this worktree, `git add` the files and run "
        "`git rebase --continue` until the rebase is done. Do not force-push, reset or "
        "discard anyone's work. Tell me when it is done, then I will merge again."
    )


async def list_worktrees(project_dir: Path, worktrees_root: Path) -> list[tuple[Path, str]]:
    """(path, branch) of the worktrees kimaki made for the project, from `git worktree list`."""
    result = await run_git(project_dir, "worktree", "list", "--porcelain", check=False)
    ours = worktrees_root / project_key(project_dir)
    found: list[tuple[Path, str]] = []
    path: Path | None = None
    for line in result.stdout.decode(errors="replace").splitlines():
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line.startswith("branch refs/heads/") and path is not None and path.parent == ours:
            found.append((path, line.removeprefix("branch refs/heads/")))
    return found
