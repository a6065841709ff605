"""`/add-project`, `/create-new-project`, `/remove-project` through the emulator."""

from __future__ import annotations

from pathlib import Path

from commands_support import (
    buttons,
    choices,
    command,
    commands_bot,
    ephemeral,
    opencode_engine,
    updated,
)

from kimaki.testing.bot import said
from kimaki.testing.engine import open_fake_engine


async def test_add_project_with_autocomplete(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    for name in ("website", "api", ".hidden"):
        (projects / name).mkdir(parents=True)
    (projects / "notes.txt").write_text("not a folder")
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        offered = await choices(harness, "add-project", "project", "")
        assert [c["value"] for c in offered] == ["api", "website"]
        offered = await choices(harness, "add-project", "project", "WEB")
        assert [c["value"] for c in offered] == ["website"]

        reply = await command(harness, "add-project", {"project": "website"})
        assert ephemeral(reply)
        assert "Added" in reply["content"]
        mapped = [
            r
            for r in await harness.store.places.list_channels()
            if r.directory == (projects / "website").resolve()
        ]
        assert {r.channel_type for r in mapped} == {"text", "voice"}
        text = next(r for r in mapped if r.channel_type == "text")
        channel = harness.emulator.state.channels[str(text.channel_id)]
        category = harness.emulator.state.channels[channel["parent_id"]]
        assert (channel["name"], category["name"]) == ("website", "Kimaki")
        voice = next(r for r in mapped if r.channel_type == "voice")
        voice_channel = harness.emulator.state.channels[str(voice.channel_id)]
        assert harness.emulator.state.channels[voice_channel["parent_id"]]["name"] == (
            "Kimaki Audio"
        )

        # A mapped folder is not offered again; adding it again points at its channel.
        offered = await choices(harness, "add-project", "project", "")
        assert [c["value"] for c in offered] == ["api"]
        reply = await command(harness, "add-project", {"project": "website"})
        assert f"<#{text.channel_id}>" in reply["content"]
        assert "already" in reply["content"]


async def test_add_project_errors_are_ephemeral_and_change_nothing(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        before = await harness.store.places.list_channels()
        for typed in ("missing", "../../..", str(tmp_path)):
            reply = await command(harness, "add-project", {"project": typed})
            assert ephemeral(reply)
            assert reply["content"].startswith("Cannot add")
        assert await harness.store.places.list_channels() == before


async def test_add_project_refuses_paths_too_long_for_the_filesystem(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        before = await harness.store.places.list_channels()
        too_long_a_name = str(tmp_path / ("x" * 300))  # one name past the filesystem's 255
        too_long_a_path = "/" + "/".join(["d" * 200] * 25)  # 5000 characters, past PATH_MAX
        for typed in (too_long_a_name, too_long_a_path):
            reply = await command(harness, "add-project", {"project": typed})
            assert ephemeral(reply)
            assert reply["content"].startswith("Cannot add")
            assert "File name too long" in reply["content"]
        # Short enough for the filesystem, too long to quote whole in a reply.
        missing = "/missing/" + "/".join(["d" * 100] * 15)
        reply = await command(harness, "add-project", {"project": missing})
        assert reply["content"].startswith("Cannot add")
        assert reply["content"].endswith("does not exist")
        assert await harness.store.places.list_channels() == before


async def test_create_new_project(tmp_path: Path) -> None:
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        reply = await command(harness, "create-new-project", {"name": "Shiny Tool"})
        folder = tmp_path / "projects" / "shiny-tool"
        assert (folder / ".git").is_dir()
        assert "Added" in reply["content"]
        reply = await command(harness, "create-new-project", {"name": "shiny tool"})
        assert ephemeral(reply)
        assert "already exists" in reply["content"]
        reply = await command(harness, "create-new-project", {"name": "../.."})
        assert "letters or digits" in reply["content"]


async def test_remove_project_asks_before_deleting_the_channel(tmp_path: Path) -> None:
    (tmp_path / "projects" / "one").mkdir(parents=True)
    (tmp_path / "projects" / "two").mkdir(parents=True)
    (tmp_path / "projects" / "one" / "file.txt").write_text("kept")
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        await command(harness, "add-project", {"project": "one"})
        await command(harness, "add-project", {"project": "two"})
        records = await harness.store.places.list_channels()
        one = next(r for r in records if r.directory.name == "one" and r.channel_type == "text")
        two = next(r for r in records if r.directory.name == "two" and r.channel_type == "text")

        offered = await choices(harness, "remove-project", "project", "one")
        assert [c["value"] for c in offered] == [str(one.channel_id)]
        assert offered[0]["name"].startswith("#one")

        # Keep: unmapped, the channel stays.
        reply = await command(harness, "remove-project", {"project": str(one.channel_id)})
        assert ephemeral(reply)
        assert "Unmapped" in reply["content"]
        assert await harness.store.places.get_channel(one.channel_id) is None
        press = harness.alice.click_button(reply, buttons(reply)["Keep them"])
        after = await updated(harness.emulator, press)
        assert "Kept" in after["content"]
        assert str(one.channel_id) in harness.emulator.state.channels
        assert (tmp_path / "projects" / "one" / "file.txt").read_text() == "kept"

        # Delete: run in the project's own channel, without naming it.
        reply = await command(harness, "remove-project", channel_id=str(two.channel_id))
        press = harness.alice.click_button(reply, buttons(reply)["Delete the channels"])
        await harness.emulator.wait_until(
            lambda: True if str(two.channel_id) not in harness.emulator.state.channels else None
        )
        assert (tmp_path / "projects" / "two").is_dir()

        # Not a project any more: the command refuses it.
        reply = await command(harness, "remove-project", {"project": str(one.channel_id)})
        assert "not a project" in reply["content"]


async def test_add_project_offers_projects_the_engine_knows(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    async with (
        opencode_engine(elsewhere) as (_, engine),
        commands_bot(tmp_path / "data", engine) as harness,
    ):
        # Only a server already running is asked: nothing is started for autocomplete.
        assert await choices(harness, "add-project", "project", "") == []
        message = harness.alice.send_message(harness.channel_id, "start the server")
        thread_id = await harness.thread_of(message)
        await harness.emulator.wait_for_message(thread_id, said("ok"))
        offered = await choices(harness, "add-project", "project", "elsewhere")
        assert [c["value"] for c in offered] == [str(elsewhere.resolve())]
        reply = await command(harness, "add-project", {"project": offered[0]["value"]})
        assert "Added" in reply["content"]
