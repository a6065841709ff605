"""Worktrees: `/new-worktree`, `/merge-worktree`, `/worktrees` (with the automatic toggle).

A worktree thread's session runs in `<data-dir>/worktrees/<project key>/<slug>` on branch
`kimaki/<slug>` (its own agent server, since servers are per directory). Merging rebases that
branch onto the target and fast-forwards the target; a conflict is reported with its files
and handed to the agent to resolve. Nothing is force-pushed, reset or deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final

import attrs

from kimaki.bot._interactions import InteractionContext, SlashCommand
from kimaki.bot.commands._common import (
    command_prompt,
    matching,
    option,
    post_quietly,
    session_thread,
)
from kimaki.discord.models import ActionRow, Button, ButtonStyle, CommandChoice
from kimaki.store import ChannelRecord, InteractionKey
from kimaki.worktrees import (
    BRANCH_PREFIX,
    MergeResult,
    WorktreeError,
    create_worktree,
    current_branch,
    is_git_repository,
    merge_worktree,
    project_key,
    run_git,
)

if TYPE_CHECKING:
    from kimaki.bot._bot import Bot

__all__ = ["conflict_prompt", "install", "list_worktrees"]

_TOGGLE_KIND: Final = "worktrees-auto"


def install(bot: Bot) -> None:
    add = bot.interactions.add_command
    add(
        SlashCommand(
            "new-worktree",
            "Start a session in a new git worktree (its own branch) of this project",
            _new_worktree,
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
            _merge_worktree,
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
            _worktrees,
        )
    )
    bot.interactions.on_component(_TOGGLE_KIND, _toggle)


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


# ---- /new-worktree


async def _new_worktree(ctx: InteractionContext) -> None:
    bot = ctx.bot
    project = ctx.project
    assert project is not None
    name = ctx.text_option("name")
    base = ctx.text_option("base-branch").strip() or None
    try:
        worktree = await create_worktree(project.directory, bot.config.worktrees_dir, name, base)
    except WorktreeError as exc:
        await ctx.reply(f"No worktree: {exc}.")
        return
    slug = worktree.branch.removeprefix(BRANCH_PREFIX)
    thread = await bot.threads.start_thread(project, name=slug, worktree=worktree)
    await post_quietly(
        bot,
        thread.id,
        f"⎇ This thread works in `{worktree.path}` on branch `{worktree.branch}` "
        f"(from `{worktree.base}`). Write here to start; `/merge-worktree` merges it back.",
    )
    await ctx.reply(f"Created worktree `{worktree.branch}` in <#{thread.id}>.")


# ---- /merge-worktree


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


async def _merge_worktree(ctx: InteractionContext) -> None:
    bot = ctx.bot
    record = await session_thread(ctx, "merge-worktree")
    if record is None:
        return
    worktree = await bot.store.get_worktree(record.thread_id)
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
        bot.threads.submit(record.thread_id, attrs.evolve(prompt, thread_id=record.thread_id))
    else:  # uncommitted work, or the target could not be fast-forwarded
        await ctx.reply(f"⚠️ Not merged: {result.message}", ephemeral=False)


# ---- /worktrees


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


async def _worktrees_view(
    ctx: InteractionContext, project: ChannelRecord
) -> tuple[str, tuple[ActionRow, ...]]:
    if not await is_git_repository(project.directory):
        return f"`{project.directory}` is not a git repository: it cannot have worktrees.", ()
    worktrees = await list_worktrees(project.directory, ctx.bot.config.worktrees_dir)
    lines = [f"Worktrees of `{project.directory}`:"]
    lines += [f"- `{branch}` in `{path}`" for path, branch in worktrees] or ["- none yet"]
    state = "on" if project.auto_worktrees else "off"
    lines.append(f"Automatic worktrees for new threads: **{state}**.")
    custom_id = await ctx.custom_id(_TOGGLE_KIND, {"channel_id": project.channel_id})
    label = "Turn automatic worktrees off" if project.auto_worktrees else "Turn them on"
    style = ButtonStyle.SECONDARY if project.auto_worktrees else ButtonStyle.PRIMARY
    return "\n".join(lines), (ActionRow((Button(style, label, custom_id),)),)


async def _worktrees(ctx: InteractionContext) -> None:
    project = ctx.project
    assert project is not None
    content, components = await _worktrees_view(ctx, project)
    await ctx.reply(content, components=components)


async def _toggle(ctx: InteractionContext, key: InteractionKey, suffix: str) -> None:
    bot = ctx.bot
    channel_id = key.payload.get("channel_id") if isinstance(key.payload, dict) else None
    project = await bot.store.get_channel(int(channel_id or 0))
    if project is None or project.app_id != bot.application_id:
        await ctx.update("This channel is no longer a project.", components=())
        return
    project = attrs.evolve(project, auto_worktrees=not project.auto_worktrees)
    await bot.store.put_channel(project)
    await bot.store.delete_interaction_key(key.key)
    content, components = await _worktrees_view(ctx, project)
    await ctx.update(content, components=components)
