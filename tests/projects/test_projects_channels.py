"""Project channels on the emulator: categories, names, the store mapping, removal."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kimaki.discord.rest import RESTClient
from kimaki.projects import (
    GuildChoiceError,
    InvalidProjectError,
    ProjectNotFoundError,
    Projects,
    channel_name,
    record_from_json,
    record_json,
)
from kimaki.store import ChannelRecord, Store
from kimaki.testing.discord import DiscordEmulator, open_discord_emulator

Json = dict[str, Any]


@asynccontextmanager
async def projects_on(
    tmp_path: Path, *, guilds: int = 1
) -> AsyncIterator[tuple[DiscordEmulator, Projects, list[str]]]:
    async with open_discord_emulator() as emulator:
        space = emulator.create_workspace(category_name="Other")
        guild_ids = [space.guild["id"]]
        for n in range(1, guilds):
            guild_ids.append(emulator.create_guild(f"second {n}", owner=space.owner)["id"])
        async with (
            await Store.open(tmp_path / "kimaki.db") as store,
            RESTClient(emulator.token, base_url=emulator.api_url) as rest,
        ):
            application = await rest.get_current_application()
            known = tuple(int(g) for g in guild_ids)
            yield (
                emulator,
                Projects(
                    rest=rest,
                    store=store.places,
                    app_id=application.id,
                    data_dir=tmp_path / "data",
                    projects_dir=tmp_path / "data" / "projects",
                    guild_ids=lambda: known,
                ),
                guild_ids,
            )


def channels_named(emulator: DiscordEmulator, name: str) -> list[Json]:
    return [c for c in emulator.state.channels.values() if c.get("name") == name]


@given(st.text(max_size=300))
def test_channel_names_are_always_valid(folder: str) -> None:
    name = channel_name(folder)
    assert re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name)
    assert len(name) <= 100


@pytest.mark.parametrize(
    ("folder", "name"),
    [("My App", "my-app"), ("crème_brûlée", "creme-brulee"), ("日本", "project"), ("-rf", "rf")],
)
def test_channel_name_from_folder(folder: str, name: str) -> None:
    assert channel_name(folder) == name


async def test_add_creates_both_categories_and_channels(tmp_path: Path) -> None:
    folder = tmp_path / "My Web-App"
    folder.mkdir()
    async with projects_on(tmp_path) as (emulator, projects, [guild]):
        added = await projects.add(folder)
        assert added.created
        [text_category] = channels_named(emulator, "Kimaki")
        [voice_category] = channels_named(emulator, "Kimaki Audio")
        assert text_category["type"] == voice_category["type"] == 4
        text = emulator.state.channels[str(added.text.channel_id)]
        assert added.voice is not None
        voice = emulator.state.channels[str(added.voice.channel_id)]
        assert (text["name"], text["type"], text["parent_id"]) == (
            "my-web-app",
            0,
            text_category["id"],
        )
        assert (voice["name"], voice["type"], voice["parent_id"]) == (
            "my-web-app",
            2,
            voice_category["id"],
        )
        assert text.get("topic") is None  # the mapping is in the store, not in the topic
        stored = await projects.store.get_channel(added.text.channel_id)
        assert stored == added.text
        assert stored.directory == folder.resolve()
        assert stored.guild_id == int(guild)
        assert stored.app_id == projects.app_id

        # A second project reuses both categories.
        other = tmp_path / "api"
        other.mkdir()
        await projects.add(other)
        assert len(channels_named(emulator, "Kimaki")) == 1
        assert len(channels_named(emulator, "Kimaki Audio")) == 1


async def test_adding_again_keeps_the_channel_unless_it_was_deleted(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    async with projects_on(tmp_path) as (emulator, projects, _):
        first = await projects.add(folder)
        again = await projects.add(folder)
        assert not again.created
        assert again.text == first.text
        emulator.state.delete_channel(str(first.text.channel_id))
        third = await projects.add(folder)
        assert third.created
        assert third.text.channel_id != first.text.channel_id
        assert await projects.store.get_channel(first.text.channel_id) is None


async def test_folders_that_cannot_be_projects(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    async with projects_on(tmp_path) as (_, projects, _):
        with pytest.raises(InvalidProjectError, match="does not exist"):
            await projects.add(tmp_path / "missing")
        with pytest.raises(InvalidProjectError, match="not a directory"):
            await projects.add(tmp_path / "file.txt")
        with pytest.raises(InvalidProjectError, match="cannot be used: File name too long") as bad:
            await projects.add(tmp_path / ("x" * 300))
        assert len(str(bad.value)) < 300  # the path is elided in the middle
        projects.data_dir.mkdir()
        # The data dir holds the database with the bot token: neither it nor a folder
        # containing it may be given to an agent.
        for holder in (projects.data_dir, tmp_path, Path("/")):
            with pytest.raises(InvalidProjectError, match="data dir"):
                await projects.add(holder)
        (projects.data_dir / "attachments").mkdir()
        with pytest.raises(InvalidProjectError, match="inside kimaki's data dir"):
            await projects.add(projects.data_dir / "attachments")


async def test_relative_names_are_folders_of_the_projects_dir(tmp_path: Path) -> None:
    async with projects_on(tmp_path) as (_, projects, _):
        (projects.projects_dir / "site").mkdir(parents=True)
        added = await projects.add(Path("site"))
        assert added.text.directory == (projects.projects_dir / "site").resolve()


async def test_guild_must_be_named_when_the_bot_is_in_several(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    async with projects_on(tmp_path, guilds=2) as (_, projects, guilds):
        with pytest.raises(GuildChoiceError, match="several servers"):
            await projects.add(folder)
        added = await projects.add(folder, guild_id=int(guilds[1]))
        assert added.text.guild_id == int(guilds[1])


async def test_create_makes_a_git_repository_in_the_projects_dir(tmp_path: Path) -> None:
    async with projects_on(tmp_path) as (_, projects, _):
        added = await projects.create("Hello World!")
        folder = projects.projects_dir / "hello-world"
        assert added.text.directory == folder.resolve()
        assert (folder / ".git").is_dir()
        with pytest.raises(InvalidProjectError, match="already exists"):
            await projects.create("hello world")
        # Whatever is typed becomes one folder of the projects dir, or nothing.
        confined = await projects.create("../../etc")
        assert confined.text.directory == (projects.projects_dir / "etc").resolve()
        assert not (tmp_path / "etc").exists()
        for hostile in ("..", "/", "日本"):
            with pytest.raises(InvalidProjectError, match="letters or digits"):
                await projects.create(hostile)


async def test_remove_unmaps_and_deletes_channels_only_when_asked(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    async with projects_on(tmp_path) as (emulator, projects, _):
        added = await projects.add(folder)
        removed = await projects.remove(added.text.channel_id)
        assert {r.channel_type for r in removed} == {"text", "voice"}
        assert await projects.list_projects() == []
        assert str(added.text.channel_id) in emulator.state.channels
        assert (folder / "keep.txt").read_text() == "mine"
        with pytest.raises(ProjectNotFoundError):
            await projects.remove(added.text.channel_id)

        added = await projects.add(folder)
        await projects.remove(added.text.channel_id, delete_channels=True)
        assert str(added.text.channel_id) not in emulator.state.channels
        assert added.voice is not None
        assert str(added.voice.channel_id) not in emulator.state.channels
        assert (folder / "keep.txt").read_text() == "mine"


async def test_channels_of_another_bot_are_not_ours(tmp_path: Path) -> None:
    folder = tmp_path / "app"
    folder.mkdir()
    async with projects_on(tmp_path) as (_, projects, _):
        added = await projects.add(folder)
        theirs = attrs.evolve(added.text, channel_id=42, app_id=projects.app_id + 1)
        await projects.store.put_channel(theirs)
        assert 42 not in {r.channel_id for r in await projects.list_projects()}
        with pytest.raises(ProjectNotFoundError):
            await projects.remove(42)


def test_record_json_round_trips(tmp_path: Path) -> None:
    record = ChannelRecord(
        channel_id=1,
        directory=tmp_path,
        guild_id=2,
        app_id=3,
        channel_type="voice",
        engine="opencode",
        verbosity="text",
        auto_worktrees=True,
    )
    assert record_from_json(record_json(record)) == record
    with pytest.raises(ValueError, match="not a project record"):
        record_from_json({"channel_id": "1"})
