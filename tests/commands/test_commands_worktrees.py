"""`/new-worktree`, `/merge-worktree`, `/worktrees` on real git repositories."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from commands_support import (
    buttons,
    command,
    commands_bot,
    ephemeral,
    git,
    git_identity,
    make_repository,
    updated,
)

from kimaki.store import WorktreeRecord
from kimaki.testing.bot import BotHarness
from kimaki.testing.engine import open_fake_engine
from kimaki.worktrees import project_key

__all__ = ["git_identity"]

pytestmark = pytest.mark.usefixtures("git_identity")


def commit(directory: Path, name: str, text: str, message: str) -> None:
    (directory / name).write_text(text)
    git(directory, "add", "--", name)
    git(directory, "commit", "--quiet", "-m", message)


async def new_worktree(
    harness: BotHarness, name: str, **options: str
) -> tuple[str, WorktreeRecord]:
    """Run /new-worktree; the new thread's id and its worktree record."""
    before = set(harness.emulator.state.channels)
    reply = await command(harness, "new-worktree", {"name": name, **options})
    assert "Created worktree" in reply["content"], reply["content"]
    [thread_id] = [
        c
        for c in harness.emulator.state.channels
        if c not in before and harness.emulator.state.channels[c]["type"] == 11
    ]
    record = await harness.store.places.get_worktree(int(thread_id))
    assert record is not None
    return thread_id, record


async def test_new_worktree_runs_the_session_there(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        thread_id, record = await new_worktree(harness, "Fix Login")
        root = tmp_path / "worktrees" / project_key(project)
        assert record.directory == root / "fix-login"
        assert record.branch == "kimaki/fix-login"
        assert record.base_branch == "main"
        assert (record.directory / "README.md").is_file()
        assert git(record.directory, "branch", "--show-current").strip() == "kimaki/fix-login"
        thread = harness.emulator.state.channels[thread_id]
        assert thread["name"] == "⎇ fix-login"
        assert thread["parent_id"] == harness.channel_id
        note = await harness.emulator.wait_for_message(thread_id)
        assert "kimaki/fix-login" in note["content"]

        harness.alice.send_message(thread_id, "fix it")
        [prompt] = await engine.wait_for_prompts(1)
        assert prompt.directory == record.directory

        # The same name again gets its own branch instead of an error.
        _, again = await new_worktree(harness, "fix login")
        assert again.branch == "kimaki/fix-login-2"


@pytest.mark.parametrize(
    ("name", "slug"),
    [("../x", "x"), ("-rf", "rf"), ("Crème brûlée", "creme-brulee"), ("a" * 300, "a" * 50)],
)
async def test_hostile_names_stay_inside_the_worktrees_dir(
    tmp_path: Path, name: str, slug: str
) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        _, record = await new_worktree(harness, name)
        assert record.directory == tmp_path / "worktrees" / project_key(project) / slug
        assert record.branch == f"kimaki/{slug}"
        made = [path.name for path in await trio.Path(tmp_path).iterdir()]
        assert sorted(made) == [
            "kimaki.db",
            "kimaki.db-shm",
            "kimaki.db-wal",
            "project",
            "worktrees",
        ]


async def test_names_and_bases_that_are_refused(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        threads_before = len(harness.emulator.state.channels)
        for options in (
            {"name": "日本語"},
            {"name": "!!!"},
            {"name": "ok", "base-branch": "no-such-branch"},
            {"name": "ok", "base-branch": "--upload-pack=touch /tmp/x"},
            {"name": "ok", "base-branch": "../../etc"},
        ):
            reply = await command(harness, "new-worktree", options)
            assert ephemeral(reply), options
            assert reply["content"].startswith("No worktree:"), reply["content"]
        assert len(harness.emulator.state.channels) == threads_before
        assert not (tmp_path / "worktrees" / project_key(project) / "ok").exists()


async def test_not_a_git_project(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "new-worktree", {"name": "x"})
        assert "not a git repository" in reply["content"]
        reply = await command(harness, "worktrees")
        assert "not a git repository" in reply["content"]
        assert buttons(reply) == {}


async def test_merge_fast_forwards_the_base(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        thread_id, record = await new_worktree(harness, "feature")
        commit(record.directory, "feature.txt", "new\n", "add feature")
        commit(project, "other.txt", "meanwhile\n", "work on main")
        reply = await command(harness, "merge-worktree", channel_id=thread_id)
        assert not ephemeral(reply)
        assert reply["content"].startswith("✅")
        log = git(project, "log", "--format=%s", "main")
        assert log.splitlines()[:2] == ["add feature", "work on main"]
        assert (project / "feature.txt").read_text() == "new\n"  # main's checkout moved too

        reply = await command(harness, "merge-worktree", channel_id=thread_id)
        assert reply["content"].startswith("Nothing to merge")


async def test_uncommitted_work_blocks_the_merge(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        thread_id, record = await new_worktree(harness, "feature")
        commit(record.directory, "feature.txt", "new\n", "add feature")
        (record.directory / "README.md").write_text("half done\n")
        head = git(project, "rev-parse", "main")
        reply = await command(harness, "merge-worktree", channel_id=thread_id)
        assert "not committed" in reply["content"]
        assert "README.md" in reply["content"]
        assert git(project, "rev-parse", "main") == head
        assert (record.directory / "README.md").read_text() == "half done\n"


async def test_a_conflict_is_reported_and_handed_to_the_agent(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project, {"app.py": "value = 1\n"})
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        thread_id, record = await new_worktree(harness, "change value")
        commit(record.directory, "app.py", "value = 2\n", "two")
        commit(project, "app.py", "value = 3\n", "three")
        head = git(project, "rev-parse", "main")
        reply = await command(harness, "merge-worktree", channel_id=thread_id)
        assert not ephemeral(reply)
        assert "conflicts in app.py" in reply["content"]
        [prompt] = await engine.wait_for_prompts(1)
        assert prompt.directory == record.directory
        assert "- app.py" in prompt.text
        assert "git rebase --continue" in prompt.text
        # Nothing was forced: main is where it was, the worktree is mid-rebase for the agent.
        assert git(project, "rev-parse", "main") == head
        assert "<<<<<<<" in (record.directory / "app.py").read_text()


async def test_merge_outside_a_worktree_thread(tmp_path: Path) -> None:
    make_repository(tmp_path / "project")
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "merge-worktree")
        assert "session thread" in reply["content"]
        message = harness.alice.send_message(harness.channel_id, "plain thread")
        thread_id = await harness.thread_of(message)
        reply = await command(harness, "merge-worktree", channel_id=thread_id)
        assert ephemeral(reply)
        assert "no worktree" in reply["content"]


async def test_worktrees_lists_and_toggles_automatic_worktrees(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        await new_worktree(harness, "listed")
        reply = await command(harness, "worktrees")
        assert ephemeral(reply)
        assert "`kimaki/listed`" in reply["content"]
        assert "**off**" in reply["content"]
        after = await updated(
            harness.emulator, harness.alice.click_button(reply, buttons(reply)["Turn them on"])
        )
        assert "**on**" in after["content"]
        channel = await harness.store.places.get_channel(harness.project.channel_id)
        assert channel is not None
        assert channel.auto_worktrees

        # Every new thread of the channel now gets a worktree of its own.
        message = harness.alice.send_message(harness.channel_id, "automatic one")
        thread_id = await harness.thread_of(message)
        [prompt] = await engine.wait_for_prompts(1)
        automatic = await harness.store.places.get_worktree(int(thread_id))
        assert automatic is not None
        assert prompt.directory == automatic.directory

        reply = await command(harness, "worktrees")
        off = await updated(
            harness.emulator,
            harness.alice.click_button(reply, buttons(reply)["Turn automatic worktrees off"]),
        )
        assert "**off**" in off["content"]
        channel = await harness.store.places.get_channel(harness.project.channel_id)
        assert channel is not None
        assert not channel.auto_worktrees
