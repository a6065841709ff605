"""Worktrees on real git repositories in temporary folders, hostile names included."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kimaki.worktrees import (
    MAX_SLUG,
    WorktreeError,
    create_worktree,
    current_branch,
    merge_worktree,
    project_key,
    read_branch,
    uncommitted_files,
    worktree_slug,
)


@pytest.fixture(autouse=True)
def git_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "Kimaki Test")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "test@example.invalid")
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def commit(cwd: Path, name: str, text: str, message: str) -> None:
    (cwd / name).write_text(text)
    git(cwd, "add", "--", name)
    git(cwd, "commit", "-q", "-m", message)


@pytest.fixture
def project(tmp_path: Path) -> Path:
    repo = tmp_path / "app"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    commit(repo, "README.md", "hello\n", "initial")
    return repo


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Fix login bug", "fix-login-bug"),
        ("../x", "x"),
        ("-rf", "rf"),
        ("--upload-pack=evil", "upload-pack-evil"),
        ("Crème brûlée!", "creme-brulee"),
        ("a..b", "a-b"),
        ("x" * 300, "x" * MAX_SLUG),
        ("feature/" + "y" * 60, "feature-" + "y" * (MAX_SLUG - 8)),
    ],
)
def test_slugs(name: str, slug: str) -> None:
    assert worktree_slug(name) == slug


@pytest.mark.parametrize("name", ["", "---", "../..", "日本語", "🙂"])
def test_names_that_sanitise_to_nothing_are_refused(name: str) -> None:
    with pytest.raises(WorktreeError, match="no letters or digits"):
        worktree_slug(name)


@given(st.text(max_size=400))
def test_every_slug_is_safe(name: str) -> None:
    try:
        slug = worktree_slug(name)
    except WorktreeError:
        return
    assert 0 < len(slug) <= MAX_SLUG
    assert all(c in "abcdefghijklmnopqrstuvwxyz0123456789-" for c in slug)
    assert not slug.startswith("-")
    assert not slug.endswith("-")
    assert ".." not in slug


async def test_create_worktree_on_its_own_branch(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "data" / "worktrees"
    worktree = await create_worktree(project, root, "Fix login")
    assert worktree.path == root / project_key(project) / "fix-login"
    assert worktree.branch == "kimaki/fix-login"
    assert worktree.base == "main"
    assert (worktree.path / "README.md").read_text() == "hello\n"
    assert git(worktree.path, "branch", "--show-current") == "kimaki/fix-login"

    again = await create_worktree(project, root, "fix login")
    assert again.branch == "kimaki/fix-login-2"
    assert again.path.name == "fix-login-2"


@pytest.mark.parametrize("hostile", ["../x", "-rf", "../../etc/passwd", "x" * 300, "ünïcödé"])
async def test_hostile_names_stay_inside_the_worktrees_folder(
    project: Path, tmp_path: Path, hostile: str
) -> None:
    root = tmp_path / "worktrees"
    worktree = await create_worktree(project, root, hostile)
    assert worktree.path.resolve().is_relative_to(root.resolve())
    assert worktree.branch.startswith("kimaki/")
    assert not worktree.path.name.startswith("-")
    assert len(worktree.path.name) <= MAX_SLUG
    assert not (tmp_path / "x").exists()


async def test_base_branch_is_checked(project: Path, tmp_path: Path) -> None:
    git(project, "branch", "develop")
    worktree = await create_worktree(project, tmp_path / "w", "feat", base_branch="develop")
    assert worktree.base == "develop"
    for bad, message in [
        ("--orphan", "not a branch name"),
        ("no such", "not a valid branch name"),
        ("missing", "there is no branch 'missing'"),
    ]:
        with pytest.raises(WorktreeError, match=message):
            await create_worktree(project, tmp_path / "w", "feat", base_branch=bad)


async def test_not_a_repository(tmp_path: Path) -> None:
    with pytest.raises(WorktreeError, match="is not a git repository"):
        await create_worktree(tmp_path, tmp_path / "w", "x")


async def test_merge_rebases_then_fast_forwards(project: Path, tmp_path: Path) -> None:
    worktree = await create_worktree(project, tmp_path / "w", "feature")
    commit(worktree.path, "feature.txt", "new\n", "add feature")
    commit(project, "other.txt", "meanwhile\n", "work on main")  # main moved on

    result = await merge_worktree(worktree.path, worktree.branch, "main")
    assert result.outcome == "merged", result.message
    assert (project / "feature.txt").read_text() == "new\n"  # main's checkout moved forward
    log = git(project, "log", "--format=%s", "main")
    assert log.splitlines() == ["add feature", "work on main", "initial"]  # linear, no merge

    again = await merge_worktree(worktree.path, worktree.branch, "main")
    assert again.outcome == "up-to-date"


async def test_merge_into_a_branch_not_checked_out(project: Path, tmp_path: Path) -> None:
    git(project, "branch", "release")
    worktree = await create_worktree(project, tmp_path / "w", "fix", base_branch="release")
    commit(worktree.path, "fix.txt", "fixed\n", "fix")
    result = await merge_worktree(worktree.path, worktree.branch, "release")
    assert result.outcome == "merged", result.message
    assert git(project, "log", "--format=%s", "-1", "release") == "fix"
    assert git(project, "branch", "--show-current") == "main"


async def test_uncommitted_work_blocks_the_merge(project: Path, tmp_path: Path) -> None:
    worktree = await create_worktree(project, tmp_path / "w", "wip")
    (worktree.path / "draft.txt").write_text("not yet")
    assert await uncommitted_files(worktree.path) == ["draft.txt"]
    result = await merge_worktree(worktree.path, worktree.branch, "main")
    assert result.outcome == "uncommitted"
    assert "draft.txt" in result.message
    assert not (project / "draft.txt").exists()


async def test_conflict_stops_and_lists_files_without_losing_work(
    project: Path, tmp_path: Path
) -> None:
    worktree = await create_worktree(project, tmp_path / "w", "clash")
    commit(worktree.path, "README.md", "from the thread\n", "thread edit")
    commit(project, "README.md", "from main\n", "main edit")
    main_before = git(project, "rev-parse", "main")

    result = await merge_worktree(worktree.path, worktree.branch, "main")
    assert result.outcome == "conflict"
    assert result.conflicts == ("README.md",)
    assert "README.md" in result.message
    assert git(project, "rev-parse", "main") == main_before  # the target did not move
    # The rebase waits in the worktree for the agent to resolve it; a second merge says so.
    again = await merge_worktree(worktree.path, worktree.branch, "main")
    assert again.outcome == "conflict"
    assert "in progress" in again.message

    # Resolved as the agent would: edit, add, continue; then the merge goes through.
    (worktree.path / "README.md").write_text("from both\n")
    git(worktree.path, "add", "README.md")
    git(worktree.path, "-c", "core.editor=true", "rebase", "--continue")
    final = await merge_worktree(worktree.path, worktree.branch, "main")
    assert final.outcome == "merged", final.message
    assert (project / "README.md").read_text() == "from both\n"


async def test_target_with_local_changes_in_the_way(project: Path, tmp_path: Path) -> None:
    worktree = await create_worktree(project, tmp_path / "w", "touch")
    commit(worktree.path, "README.md", "changed\n", "change readme")
    (project / "README.md").write_text("someone is editing this\n")
    result = await merge_worktree(worktree.path, worktree.branch, "main")
    assert result.outcome == "target-blocked"
    assert (project / "README.md").read_text() == "someone is editing this\n"


async def test_read_branch_agrees_with_git(project: Path, tmp_path: Path) -> None:
    assert read_branch(project) == "main" == await current_branch(project)
    assert read_branch(project / "sub" / "dir") == "main"  # from inside the tree
    worktree = await create_worktree(project, tmp_path / "worktrees", "Fix login")
    assert read_branch(worktree.path) == worktree.branch == await current_branch(worktree.path)
    git(project, "checkout", "-q", "--detach")
    assert read_branch(project) is None
    assert read_branch(tmp_path / "elsewhere") is None
