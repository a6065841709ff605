"""Every exit obeys the egress policy: `send_file` (the tool alone, and through the bot into a
thread of the emulator) and `/diff`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from commands_support import (
    command,
    commands_bot,
    ephemeral,
    git,
    git_identity,
    make_repository,
)
from egress_support import PNG, RecordingSink, elf, pdf

from kimaki._audit import audit_sink
from kimaki._redact import register_secret
from kimaki.bot.commands._maintenance import working_tree_diff
from kimaki.testing.bot import BotHarness, said
from kimaki.testing.engine import FakeEngine, RunningTurn, open_fake_engine
from kimaki.testing.script import Say
from kimaki.testing.tools import RecordingToolContext
from kimaki.tools import BUILTIN_TOOLS, ToolBox, ToolResult

__all__ = ["git_identity"]

Json = dict[str, Any]
SECRET = "s3cr3t-value-for-egress-tests"


@pytest.fixture(autouse=True)
def secret() -> None:
    register_secret(SECRET, "SERVICE_PASSWORD")


# ---- send_file, the tool alone


async def test_send_file_tells_the_model_and_the_thread_why_a_file_stays(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "notes.txt").write_bytes(elf())
    ctx = RecordingToolContext(directory=project, data_dir=tmp_path / "data")
    sink = RecordingSink()
    with audit_sink(sink):
        result = await ToolBox(BUILTIN_TOOLS).call(ctx, "send_file", {"path": "notes.txt"})
    reason = (
        "notes.txt is an ELF executable, not text; "
        "only text, PNG/JPEG/GIF/WebP images and PDFs are sent"
    )
    assert result.is_error
    assert reason in result.text
    assert [post.content for post in ctx.posts] == [f"-# 📎 File not sent: {reason}"]
    assert ctx.uploads == []
    [event] = sink.events
    assert (event.kind, event.thread_id, event.channel_id) == (
        "egress.refused",
        ctx.thread_id,
        ctx.channel_id,
    )
    assert event.detail["reason"] == reason


async def test_send_file_sends_redacted_text_and_pdfs_as_text(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "log.txt").write_text(f"connecting with {SECRET}\n")
    (project / "spec.pdf").write_bytes(pdf("Design", f"password: {SECRET}"))
    ctx = RecordingToolContext(directory=project, data_dir=tmp_path / "data")
    box = ToolBox(BUILTIN_TOOLS)
    sink = RecordingSink()
    with audit_sink(sink):
        text = await box.call(ctx, "send_file", {"path": "log.txt"})
        converted = await box.call(ctx, "send_file", {"path": "spec.pdf", "content": "the spec"})
    assert not text.is_error
    assert "secrets redacted" in text.text
    assert ctx.uploads[0].data == b"connecting with [REDACTED:SERVICE_PASSWORD]\n"
    assert ctx.uploads[0].path == (project / "log.txt").resolve()
    assert converted == ToolResult(
        f"uploaded spec.pdf.txt ({len(ctx.uploads[1].data)} bytes; the text of 2 PDF page(s), "
        f"secrets redacted) (message {ctx.uploads[1].message_id})"
    )
    assert ctx.uploads[1].path.name == "spec.pdf.txt"
    assert SECRET not in ctx.uploads[1].data.decode()
    assert sink.kinds() == ["egress.sent", "egress.sent"]
    assert ctx.posts == []


# ---- send_file, through the bot


def _bot_messages(harness: BotHarness, channel_id: str) -> list[Json]:
    bot_id = harness.emulator.bot_user["id"]
    return sorted(
        (
            m
            for m in harness.emulator.state.messages.get(channel_id, {}).values()
            if m["author"]["id"] == bot_id
        ),
        key=lambda m: int(m["id"]),
    )


async def test_send_file_in_a_thread_obeys_the_policy(
    harness: BotHarness, fake_engine: FakeEngine, tmp_path: Path
) -> None:
    project_dir = tmp_path / "app"
    project_dir.mkdir()
    (project_dir / "notes.txt").write_bytes(PNG)  # a PNG posing as text
    (project_dir / "shot.png").write_bytes(PNG)
    (project_dir / ".env").write_text("DEBUG=1\n")
    (project_dir / "out.log").write_text(f"token={SECRET}\nok\n")
    project = await harness.map_channel("app", project_dir)
    box = ToolBox(BUILTIN_TOOLS)
    results: list[ToolResult] = []

    async def responder(turn: RunningTurn) -> None:
        tools = harness.bot.threads.tool_context(turn.session.session_id)
        assert tools is not None
        for path in ("notes.txt", ".env", "shot.png", "out.log"):
            results.append(await box.call(tools, "send_file", {"path": path}))
        await turn.play(Say("Done."))

    fake_engine.responder = responder
    message = harness.alice.send_message(str(project.channel_id), "share the files")
    thread_id = await harness.thread_of(message)
    await harness.emulator.wait_for_message(thread_id, said("Done."))
    assert [result.is_error for result in results] == [True, True, False, False], results
    messages = _bot_messages(harness, thread_id)
    lines = [m["content"] for m in messages if "File not sent" in m["content"]]
    assert lines == [
        "-# 📎 File not sent: notes.txt holds a PNG image under another name; not sent",
        "-# 📎 File not sent: .env is never sent: it is an environment file (.env*), which "
        "holds secrets",
    ]
    files = {
        a["filename"]: harness.emulator.state.files[a["id"]].data
        for m in messages
        for a in m["attachments"]
    }
    assert files == {"shot.png": PNG, "out.log": b"token=[REDACTED:SERVICE_PASSWORD]\nok\n"}


# ---- /diff


@pytest.mark.usefixtures("git_identity")
async def test_diff_leaves_out_secrets_and_redacts_the_rest(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project, {"app.py": "print('hello')\n", "config.key": "old key\n"})
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        (project / "app.py").write_text(f"PASSWORD = '{SECRET}'\n")
        (project / "config.key").write_text("new key material\n")
        (project / ".env").write_text("API_TOKEN=abc\n")
        (project / "logo.png").write_bytes(PNG)
        reply = await command(harness, "diff")
    assert not ephemeral(reply)
    assert "2 file(s)" in reply["content"]
    assert (
        "Left out (never sent: secrets or kimaki's data): `config.key`, `.env`."
        in (reply["content"])
    )
    [attachment] = reply["attachments"]
    data = harness.emulator.state.files[attachment["id"]].data.decode()
    assert SECRET not in data
    assert "+PASSWORD = '[REDACTED:SERVICE_PASSWORD]'" in data
    assert "key material" not in data
    assert "API_TOKEN" not in data
    # A binary change shows as such: its bytes do not leave inside the patch.
    assert "Binary files /dev/null and b/logo.png differ" in data


@pytest.mark.usefixtures("git_identity")
async def test_diff_of_only_secrets_shows_nothing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    make_repository(project)
    async with open_fake_engine() as engine, commands_bot(tmp_path, engine) as harness:
        (project / ".env.local").write_text("X=1\n")
        reply = await command(harness, "diff")
    assert reply["content"] == (
        f"No uncommitted changes in `{project}`.\n"
        "-# Left out (never sent: secrets or kimaki's data): `.env.local`."
    )
    assert reply["attachments"] == []


@pytest.mark.usefixtures("git_identity")
async def test_diff_never_shows_the_data_dir(tmp_path: Path) -> None:
    project = tmp_path / "home"
    make_repository(project)
    data_dir = project / ".kimaki"
    data_dir.mkdir()
    (data_dir / "kimaki.log").write_text("the log\n")
    (project / "README.md").write_text("changed\n")
    git(project, "add", "README.md")
    diff = await working_tree_diff(project, data_dir=data_dir)
    assert diff.files == 1
    assert "the log" not in diff.patch
    assert diff.left_out == ((".kimaki/kimaki.log", "it is inside kimaki's data directory"),)
    # A worktree inside the data dir is the session's own folder: its changes show.
    worktree = data_dir / "worktrees" / "feature"
    make_repository(worktree)
    (worktree / "new.txt").write_text("new\n")
    inside = await working_tree_diff(worktree, data_dir=data_dir)
    assert "+new" in inside.patch
    assert inside.left_out == ()
