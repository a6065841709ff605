"""Git worktrees per thread: create one on a branch of its own, and merge it back.

Names come from Discord, so nothing a person types reaches git or the filesystem as is: the
slug is derived by `worktree_slug` (`[a-z0-9-]`, at most 50 characters, never starting with
`-`, never containing `..`), branch names are built from it, user-given base branches are
checked with `git check-ref-format`, and `--` / `--end-of-options` separate options from names
wherever git allows.

Merging never rewrites shared history: the worktree branch is rebased onto the target (its own
commits only), then the target is fast-forwarded. A conflict stops the rebase where it is, so
the agent can resolve it in the worktree; uncommitted work blocks the merge. Nothing is ever
force-pushed, reset or deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import subprocess
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from typing import Final, Literal, final

import attrs
import trio

from kimaki.errors import KimakiError

__all__ = [
    "MergeResult",
    "Worktree",
    "WorktreeError",
    "create_worktree",
    "current_branch",
    "is_git_repository",
    "merge_worktree",
    "project_key",
    "read_branch",
    "run_git",
    "uncommitted_files",
    "worktree_slug",
]

log = logging.getLogger("kimaki.worktree")

MAX_SLUG: Final = 50
BRANCH_PREFIX: Final = "kimaki/"
_GIT_ENV: Final = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}


class WorktreeError(KimakiError):
    """A worktree operation that cannot go ahead; `str()` is the message for the person."""


@final
@attrs.frozen
class Worktree:
    path: Path
    branch: str
    base: str


@final
@attrs.frozen
class MergeResult:
    """How a merge ended. `conflicts` lists files when the rebase stopped on a conflict."""

    outcome: Literal["merged", "up-to-date", "conflict", "uncommitted", "target-blocked"]
    message: str
    conflicts: tuple[str, ...] = ()


def worktree_slug(name: str) -> str:
    """A safe `[a-z0-9-]` slug from whatever a person typed; WorktreeError if nothing is left."""
    ascii_only = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_only.lower())
    slug = slug.strip("-")[:MAX_SLUG].strip("-")
    if not slug:
        raise WorktreeError(
            f"{name!r} has no letters or digits to name a worktree with; use a name like fix-login"
        )
    return slug


def project_key(project_dir: Path) -> str:
    """A short stable hash of the project's path: its folder under `<data-dir>/worktrees/`."""
    return hashlib.sha256(str(project_dir.resolve()).encode()).hexdigest()[:10]


async def run_git(cwd: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, **_GIT_ENV}
    result = await trio.run_process(
        ["git", *args], cwd=cwd, capture_stdout=True, capture_stderr=True, check=False, env=env
    )
    if check and result.returncode != 0:
        detail = result.stderr.decode(errors="replace").strip().splitlines()
        raise WorktreeError(f"git {args[0]} failed: {detail[-1] if detail else result.returncode}")
    return result


def _lines(output: bytes) -> list[str]:
    return [line for line in output.decode(errors="replace").splitlines() if line]


async def is_git_repository(directory: Path) -> bool:
    result = await run_git(directory, "rev-parse", "--is-inside-work-tree", check=False)
    return result.returncode == 0 and result.stdout.strip() == b"true"


async def current_branch(directory: Path) -> str | None:
    """The checked-out branch, or None on a detached HEAD."""
    result = await run_git(directory, "symbolic-ref", "--quiet", "--short", "HEAD", check=False)
    if result.returncode != 0:
        return None
    return result.stdout.decode().strip() or None


def read_branch(directory: Path) -> str | None:
    """The checked-out branch from `.git/HEAD` without running git (None: detached HEAD or no
    repository). For the footer of every turn, where a process per turn would cost more
    than the answer; anything that acts on the repository uses git itself."""
    for folder in (directory, *directory.parents):
        dot_git = folder / ".git"
        try:
            if dot_git.is_file():
                # A worktree: `gitdir: <path>` to its own HEAD.
                pointer = dot_git.read_text(encoding="utf-8", errors="replace").strip()
                if not pointer.startswith("gitdir:"):
                    return None
                git_dir = (folder / pointer[len("gitdir:") :].strip()).resolve()
            elif dot_git.is_dir():
                git_dir = dot_git
            else:
                continue
            head = (git_dir / "HEAD").read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            return None
        prefix = "ref: refs/heads/"
        return head[len(prefix) :] or None if head.startswith(prefix) else None
    return None


async def uncommitted_files(directory: Path) -> list[str]:
    """Files with changes not committed (staged, unstaged or untracked)."""
    result = await run_git(directory, "status", "--porcelain=v1", "--untracked-files=normal")
    return [line[3:] for line in _lines(result.stdout)]


async def _check_branch_name(cwd: Path, name: str) -> None:
    if name.startswith("-"):
        raise WorktreeError(f"{name!r} is not a branch name")
    result = await run_git(cwd, "check-ref-format", "--branch", name, check=False)
    if result.returncode != 0:
        raise WorktreeError(f"{name!r} is not a valid branch name")


async def _ref_exists(cwd: Path, ref: str) -> bool:
    result = await run_git(
        cwd,
        "rev-parse",
        "--verify",
        "--quiet",
        "--end-of-options",
        f"{ref}^{{commit}}",
        check=False,
    )
    return result.returncode == 0


async def create_worktree(
    project_dir: Path, worktrees_root: Path, name: str, base_branch: str | None = None
) -> Worktree:
    """`git worktree add <root>/<project key>/<slug> -b kimaki/<slug> <base>`.

    When the slug is taken (a branch or folder of that name exists) a numeric suffix is added,
    so a second "fix login" thread gets `fix-login-2` rather than an error.
    """
    if not await is_git_repository(project_dir):
        raise WorktreeError(f"{project_dir} is not a git repository")
    slug = worktree_slug(name)
    if base_branch is None:
        base = await current_branch(project_dir)
        if base is None:
            raise WorktreeError("the project is on a detached HEAD; name a base branch")
    else:
        await _check_branch_name(project_dir, base_branch)
        base = base_branch
    if not await _ref_exists(project_dir, base):
        raise WorktreeError(f"there is no branch {base!r} in {project_dir.name}")

    parent = worktrees_root / project_key(project_dir)
    await trio.Path(parent).mkdir(mode=0o700, parents=True, exist_ok=True)
    for attempt in range(1, 100):
        candidate = slug if attempt == 1 else f"{slug[: MAX_SLUG - 4]}-{attempt}"
        branch = BRANCH_PREFIX + candidate
        path = parent / candidate
        if await trio.Path(path).exists() or await _ref_exists(project_dir, f"refs/heads/{branch}"):
            continue
        await run_git(project_dir, "worktree", "add", "-b", branch, "--", str(path), base)
        log.info("worktree %s on %s (from %s)", path, branch, base)
        return Worktree(path=path, branch=branch, base=base)
    raise WorktreeError(f"too many worktrees named {slug}")


async def merge_worktree(worktree: Path, branch: str, target: str) -> MergeResult:
    """Rebase `branch` (checked out in `worktree`) onto `target`, then fast-forward `target`."""
    await _check_branch_name(worktree, target)
    if not await _ref_exists(worktree, f"refs/heads/{target}"):
        raise WorktreeError(f"there is no branch {target!r} to merge into")
    if await _rebase_in_progress(worktree):
        return await _conflict(worktree, "a rebase is still in progress")
    dirty = await uncommitted_files(worktree)
    if dirty:
        return MergeResult(
            "uncommitted",
            f"{len(dirty)} file(s) in the worktree are not committed: {_list(dirty)}. "
            "Commit them (or ask the agent to) before merging.",
        )

    rebase = await run_git(worktree, "rebase", "--end-of-options", target, check=False)
    if rebase.returncode != 0:
        if await _rebase_in_progress(worktree):
            return await _conflict(worktree, f"rebasing {branch} onto {target} stopped")
        detail = _lines(rebase.stderr)
        raise WorktreeError(f"git rebase failed: {detail[-1] if detail else rebase.returncode}")

    ahead = await run_git(worktree, "rev-list", "--count", f"{target}..{branch}")
    if int(ahead.stdout.strip() or b"0") == 0:
        return MergeResult("up-to-date", f"{target} already has everything on {branch}")

    holder = await _worktree_with_branch(worktree, target)
    if holder is not None:
        # The target is checked out somewhere: fast-forward it there, or say what is in the way.
        result = await run_git(
            holder, "merge", "--ff-only", "--end-of-options", branch, check=False
        )
    else:
        # Not checked out: `fetch . a:b` moves b to a only when that is a fast-forward.
        result = await run_git(worktree, "fetch", "--", ".", f"{branch}:{target}", check=False)
    if result.returncode != 0:
        detail = _lines(result.stderr)
        return MergeResult(
            "target-blocked",
            f"could not fast-forward {target}: {detail[-1] if detail else 'git refused'}",
        )
    return MergeResult("merged", f"{branch} merged into {target} ({int(ahead.stdout)} commit(s))")


async def _rebase_in_progress(worktree: Path) -> bool:
    for name in ("rebase-merge", "rebase-apply"):
        result = await run_git(worktree, "rev-parse", "--git-path", name)
        path = Path(result.stdout.decode().strip())
        if not path.is_absolute():
            path = worktree / path
        if await trio.Path(path).exists():
            return True
    return False


async def _conflict(worktree: Path, what: str) -> MergeResult:
    result = await run_git(worktree, "diff", "--name-only", "--diff-filter=U")
    files = tuple(_lines(result.stdout))
    return MergeResult(
        "conflict",
        f"{what}: conflicts in {_list(files) or 'the worktree'}. Resolve them in the worktree "
        "and run `git rebase --continue`, then merge again.",
        conflicts=files,
    )


async def _worktree_with_branch(cwd: Path, branch: str) -> Path | None:
    result = await run_git(cwd, "worktree", "list", "--porcelain")
    path: Path | None = None
    for line in _lines(result.stdout):
        if line.startswith("worktree "):
            path = Path(line.removeprefix("worktree "))
        elif line == f"branch refs/heads/{branch}" and path is not None:
            return path
    return None


def _list(items: Sequence[str], limit: int = 10) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")
