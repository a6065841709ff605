"""The file egress policy on its own: what may leave by content, which paths are never read,
and that every decision is an audit event."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from pathlib import Path

import pypdf
import pytest
from egress_support import PNG, RecordingSink, elf, gif, jpeg, pdf, webp

from kimaki import egress
from kimaki._audit import audit_sink
from kimaki._redact import register_secret

MIB = egress.MIB
SECRET = "hunter2-correct-horse-battery"


@pytest.fixture(autouse=True)
def secret() -> None:
    register_secret(SECRET, "DEPLOY_TOKEN")


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    recording = RecordingSink()
    with audit_sink(recording):
        yield recording


def refusal(name: str, data: bytes) -> str:
    with pytest.raises(egress.EgressRefused) as caught:
        egress.screen(name, data)
    return caught.value.reason


# ---- by content


def test_text_leaves_as_a_redacted_copy() -> None:
    out = egress.screen("notes.md", f"deploy with {SECRET}\napi_key = abcdefgh12345\n".encode())
    assert out.kind == "text"
    assert out.name == "notes.md"
    assert out.content_type == "text/plain; charset=utf-8"
    assert out.redacted
    text = out.data.decode()
    assert SECRET not in text
    assert "[REDACTED:DEPLOY_TOKEN]" in text
    assert "abcdefgh12345" not in text
    plain = egress.screen("plain.txt", "nothing to hide, ünïcode too\n".encode())
    assert plain.data == "nothing to hide, ünïcode too\n".encode()
    assert not plain.redacted


def test_text_with_a_nul_or_not_utf8_is_refused() -> None:
    assert refusal("data.txt", b"abc\0def") == (
        "data.txt is binary data, not text; only text, PNG/JPEG/GIF/WebP images and PDFs are sent"
    )
    assert refusal("latin.txt", "café".encode("latin-1")).startswith("latin.txt is not UTF-8 text")


def test_a_renamed_binary_posing_as_text_is_refused() -> None:
    assert refusal("notes.txt", elf()).startswith("notes.txt is an ELF executable, not text")
    assert refusal("notes.txt", PNG) == "notes.txt holds a PNG image under another name; not sent"
    assert refusal("report.md", pdf("hello")) == (
        "report.md holds a PDF under another name; not sent"
    )
    assert "an SQLite database" in refusal("state.txt", b"SQLite format 3\x00" + b"x" * 100)
    # Text that happens to start like a binary format is still text.
    assert egress.screen("cars.txt", b"BMW and MZ motorcycles\n").kind == "text"


@pytest.mark.parametrize(
    ("name", "data", "content_type"),
    [
        ("shot.png", PNG, "image/png"),
        ("photo.jpg", jpeg(), "image/jpeg"),
        ("photo.JPEG", jpeg(), "image/jpeg"),
        ("anim.gif", gif(), "image/gif"),
        ("pic.webp", webp(), "image/webp"),
    ],
)
def test_images_whose_content_is_their_type_leave_as_they_are(
    name: str, data: bytes, content_type: str
) -> None:
    out = egress.screen(name, data)
    assert (out.kind, out.name, out.data, out.content_type) == ("image", name, data, content_type)


def test_an_image_whose_content_does_not_match_its_name_is_refused() -> None:
    assert (
        refusal("photo.jpg", PNG)
        == "photo.jpg is named as a JPEG image but holds a PNG image; not sent"
    )
    assert refusal("shot.png", b"just text\n") == (
        "shot.png is named as a PNG image but holds binary data; not sent"
    )
    assert refusal("shot.png", elf()) == (
        "shot.png is named as a PNG image but holds an ELF executable; not sent"
    )


def test_size_limits() -> None:
    big_image = PNG + b"\0" * (egress.IMAGE_LIMIT + 1 - len(PNG))
    assert refusal("huge.png", big_image) == (
        "huge.png is 26,214,401 bytes; images are sent up to 25 MiB"
    )
    assert egress.screen("limit.png", big_image[:-1]).kind == "image"
    assert refusal("huge.log", b"x" * (egress.TEXT_LIMIT + 1)) == (
        "huge.log is 5,242,881 bytes of text; text is sent up to 5 MiB"
    )
    assert egress.screen("limit.log", b"x" * egress.TEXT_LIMIT).kind == "text"


def test_a_pdf_leaves_as_its_redacted_text() -> None:
    data = pdf("Quarterly report", f"token {SECRET}")
    out = egress.screen("report.pdf", data)
    assert (out.kind, out.name, out.pages, out.source_size) == (
        "pdf",
        "report.pdf.txt",
        2,
        len(data),
    )
    assert out.content_type.startswith("text/plain")
    text = out.data.decode()
    assert "Quarterly report" in text
    assert SECRET not in text
    assert "[REDACTED:DEPLOY_TOKEN]" in text
    assert out.describe() == "the text of 2 PDF page(s), secrets redacted"


def test_a_pdf_without_text_or_unreadable_or_encrypted_is_refused() -> None:
    assert refusal("scan.pdf", pdf("")) == (
        "scan.pdf is a PDF with no text to extract (scanned?); not sent"
    )
    assert refusal("broken.pdf", b"%PDF-1.4\nthis is not really a pdf\n") == (
        "broken.pdf cannot be read as a PDF; not sent"
    )
    assert (
        refusal("fake.pdf", b"hello")
        == "fake.pdf is named as a PDF but holds binary data; not sent"
    )
    writer = pypdf.PdfWriter()
    writer.append(pypdf.PdfReader(io.BytesIO(pdf("secret plans"))))
    writer.encrypt("pw")
    locked = io.BytesIO()
    writer.write(locked)
    assert refusal("locked.pdf", locked.getvalue()) == (
        "locked.pdf is an encrypted PDF; its text cannot be read"
    )


# ---- by name


@pytest.mark.parametrize(
    "name",
    [
        ".env",
        ".env.local",
        "config/.env.production",
        ".envrc",
        "certs/server.pem",
        "tls.KEY",
        "id_rsa",
        "id_rsa.pub",
        "backup/id_ed25519",
        "id_ecdsa",
        ".ssh/config",
        ".ssh/known_hosts",
        ".aws/config",
        ".aws/credentials",
        "credentials",
        "deploy/credentials.json",
        ".netrc",
        ".npmrc",
        ".pypirc",
        ".git-credentials",
        ".local/share/opencode/auth.json",
        ".claude/.credentials.json",
        ".gemini/oauth_creds.json",
        "agent-runtime/claude/.claude/settings.json",
        "omp-agent-runtime/sessions/1.json",
    ],
)
def test_sensitive_names(name: str) -> None:
    assert egress.sensitive_reason(name) is not None


@pytest.mark.parametrize(
    "name",
    ["README.md", "src/environment.py", "keys.txt", "docs/ssh.md", "monkey.py", "key/notes.md"],
)
def test_ordinary_names(name: str) -> None:
    assert egress.sensitive_reason(name) is None


# ---- paths


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "project"
    directory.mkdir()
    return directory


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    directory.mkdir()
    return directory


ORIGIN = egress.Origin("send_file", channel_id=11, thread_id=22)


async def send(asked: str, project: Path, data_dir: Path) -> egress.Outgoing:
    return await egress.prepare_path(asked, directory=project, data_dir=data_dir, origin=ORIGIN)


async def refused_path(asked: str, project: Path, data_dir: Path) -> str:
    with pytest.raises(egress.EgressRefused) as caught:
        await send(asked, project, data_dir)
    return caught.value.reason


async def test_a_sent_file_is_an_audit_event(
    project: Path, data_dir: Path, sink: RecordingSink
) -> None:
    (project / "notes.md").write_text(f"the token is {SECRET}\n")
    out = await send("notes.md", project, data_dir)
    assert out.source == (project / "notes.md").resolve()
    assert SECRET not in out.data.decode()
    [event] = sink.events
    assert (event.kind, event.channel_id, event.thread_id) == ("egress.sent", 11, 22)
    assert event.detail == {
        "via": "send_file",
        "name": "notes.md",
        "sent_as": "text",
        "size": len(f"the token is {SECRET}\n"),
        "sent_size": len(out.data),
        "redacted": True,
    }


async def test_a_refused_file_is_an_audit_event_with_the_reason(
    project: Path, data_dir: Path, sink: RecordingSink
) -> None:
    (project / "tool").write_bytes(elf())
    reason = await refused_path("tool", project, data_dir)
    assert reason.startswith("tool is an ELF executable, not text")
    [event] = sink.events
    assert event.kind == "egress.refused"
    assert event.detail["reason"] == reason
    assert event.detail["name"] == "tool"
    assert event.detail["via"] == "send_file"
    assert event.detail["size"] == len(elf())


async def test_symlinks_cannot_escape_the_project(
    project: Path, data_dir: Path, tmp_path: Path, sink: RecordingSink
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_text("not yours")
    (project / "innocent.txt").symlink_to(outside)
    (project / "sub").mkdir()
    (project / "sub" / "up").symlink_to(tmp_path)
    for asked in ("innocent.txt", "sub/up/outside.txt", "../outside.txt", str(outside)):
        reason = await refused_path(asked, project, data_dir)
        assert reason.startswith(f"{asked} is outside the project directory"), reason
    assert sink.kinds() == ["egress.refused"] * 4


async def test_a_link_to_a_secret_or_a_link_named_like_one_is_refused(
    project: Path, data_dir: Path
) -> None:
    (project / ".env").write_text("HARMLESS=1\n")
    (project / "notes.txt").write_text("notes\n")
    (project / "env-copy.txt").symlink_to(project / ".env")
    (project / ".env.link").symlink_to(project / "notes.txt")
    assert await refused_path(".env", project, data_dir) == (
        ".env is never sent: it is an environment file (.env*), which holds secrets"
    )
    assert (await refused_path("env-copy.txt", project, data_dir)).startswith(
        "env-copy.txt is never sent: it is an environment file"
    )
    assert (await refused_path(".env.link", project, data_dir)).startswith(
        ".env.link is never sent"
    )
    (project / ".ssh").mkdir()
    (project / ".ssh" / "notes.md").write_text("hello\n")
    assert (await refused_path(".ssh/notes.md", project, data_dir)) == (
        ".ssh/notes.md is never sent: it is inside .ssh/ (SSH keys and configuration)"
    )


async def test_the_data_dir_is_never_read_even_inside_the_project(tmp_path: Path) -> None:
    project = tmp_path / "home"
    data_dir = project / ".kimaki"
    data_dir.mkdir(parents=True)
    (data_dir / "notes.txt").write_text("records\n")
    assert await refused_path(".kimaki/notes.txt", project, data_dir) == (
        ".kimaki/notes.txt is inside kimaki's data directory, which tools cannot read"
    )


async def test_the_data_dir_as_a_project_sends_nothing_of_it(data_dir: Path) -> None:
    (data_dir / "kimaki.log").write_text("log\n")
    assert await refused_path("kimaki.log", data_dir, data_dir) == (
        "kimaki.log is inside kimaki's data directory, which tools cannot read"
    )


async def test_a_worktree_in_the_data_dir_sends_its_own_files(data_dir: Path) -> None:
    worktree = data_dir / "worktrees" / "feature"
    worktree.mkdir(parents=True)
    (worktree / "out.txt").write_text("result\n")
    (data_dir / "kimaki.log").write_text("log\n")
    out = await send("out.txt", worktree, data_dir)
    assert out.data == b"result\n"
    assert (await refused_path("../../kimaki.log", worktree, data_dir)).startswith(
        "../../kimaki.log is outside the project directory"
    )


async def test_what_is_not_a_regular_readable_file(project: Path, data_dir: Path) -> None:
    (project / "src").mkdir()
    os.mkfifo(project / "pipe")
    (project / "loop").symlink_to("loop")
    assert await refused_path("nope.txt", project, data_dir) == "there is no file at nope.txt"
    assert await refused_path("src", project, data_dir) == (
        "src is a directory; only a regular file is sent"
    )
    assert await refused_path("pipe", project, data_dir) == (
        "pipe is not a regular file; only a regular file is sent"
    )
    assert await refused_path("loop", project, data_dir) == (
        "loop cannot be resolved (a symlink loop?)"
    )
    assert await refused_path("a\0b", project, data_dir) == "the path contains a NUL character"


def _sparse(path: Path, size: int) -> None:
    path.touch()
    os.truncate(path, size)


async def test_sizes_are_refused_before_reading(project: Path, data_dir: Path) -> None:
    _sparse(project / "big.log", 5 * MIB + 1)
    _sparse(project / "big.png", int(25.5 * MIB))
    assert await refused_path("big.log", project, data_dir) == (
        "big.log is 5,242,881 bytes; text files are sent up to 5 MiB"
    )
    assert await refused_path("big.png", project, data_dir) == (
        "big.png is 25.5 MiB; images and PDFs are sent up to 25 MiB"
    )


async def test_a_pdf_file_is_sent_as_text(project: Path, data_dir: Path) -> None:
    (project / "docs").mkdir()
    (project / "docs" / "spec.pdf").write_bytes(pdf("The spec"))
    out = await send("docs/spec.pdf", project, data_dir)
    assert out.name == "spec.pdf.txt"
    assert out.data == b"The spec\n"


async def test_bot_made_text_is_redacted_and_recorded(sink: RecordingSink) -> None:
    origin = egress.Origin("diff", channel_id=1, thread_id=2, user_id=3)
    out = await egress.prepare_text("x.diff", f"+TOKEN={SECRET}\n", origin)
    assert SECRET not in out.data.decode()
    [event] = sink.events
    assert (event.kind, event.user_id, event.detail["via"]) == ("egress.sent", 3, "diff")
