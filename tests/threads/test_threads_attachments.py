from __future__ import annotations

from pathlib import Path

import pytest

from kimaki.threads import AttachmentInfo, prepare_attachments
from kimaki.threads._attachments import INLINE_TEXT_LIMIT, safe_filename

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


def attachment(
    filename: str, data: bytes, content_type: str | None, attachment_id: int = 9
) -> tuple[AttachmentInfo, bytes]:
    url = f"https://cdn.example/attachments/{attachment_id}/{filename}"
    return AttachmentInfo(attachment_id, filename, url, len(data), content_type), data


async def prepare(tmp_path: Path, *items: tuple[AttachmentInfo, bytes]):  # type: ignore[no-untyped-def]
    contents = {info.url: data for info, data in items}
    fetched: list[str] = []

    async def fetch(url: str) -> bytes:
        fetched.append(url)
        if url not in contents:
            raise OSError("404")
        return contents[url]

    prepared = await prepare_attachments(
        [info for info, _ in items], fetch=fetch, save_dir=tmp_path / "attachments"
    )
    return prepared, fetched


async def test_images_become_file_parts(tmp_path: Path) -> None:
    prepared, _ = await prepare(tmp_path, attachment("screen.png", PNG, "image/png"))
    assert [(f.filename, f.mime, f.data) for f in prepared.files] == [
        ("screen.png", "image/png", PNG)
    ]
    assert prepared.text == ""
    assert prepared.refused == ()


async def test_small_text_is_inlined_with_its_name(tmp_path: Path) -> None:
    prepared, _ = await prepare(
        tmp_path,
        attachment("app.py", b"print('hi')\n", "text/x-python; charset=utf-8"),
        attachment("notes", b"plain", "text/plain", attachment_id=10),
        attachment("config.toml", b"a = 1", None, attachment_id=11),  # known by its suffix
    )
    assert "Attached file app.py:\n```\nprint('hi')\n\n```" in prepared.text
    assert "Attached file notes:" in prepared.text
    assert "Attached file config.toml:" in prepared.text
    assert prepared.files == ()


async def test_large_text_is_saved_and_referenced_by_path(tmp_path: Path) -> None:
    big = b"line\n" * (INLINE_TEXT_LIMIT // 5 + 10)
    prepared, _ = await prepare(tmp_path, attachment("../../etc/server.log", big, "text/plain"))
    saved = tmp_path / "attachments" / "9-server.log"
    assert saved.read_bytes() == big
    assert f"is saved at {saved}" in prepared.text
    assert "line\nline" not in prepared.text


async def test_other_types_are_refused_with_a_reason(tmp_path: Path) -> None:
    prepared, fetched = await prepare(
        tmp_path,
        attachment("tool.exe", b"MZ", "application/x-msdownload"),
        attachment("blob.txt", b"\x00\x01binary", "text/plain", attachment_id=2),
        attachment("latin1.txt", "café".encode("latin-1"), "text/plain", attachment_id=3),
    )
    assert prepared.files == ()
    assert prepared.text == ""
    assert prepared.refused[0].startswith(
        "tool.exe: not an image or a text file (application/x-msdownload)"
    )
    assert prepared.refused[1] == "blob.txt: not UTF-8 text, so the agent cannot read it"
    assert prepared.refused[2].startswith("latin1.txt: not UTF-8 text")
    assert all("tool.exe" not in url for url in fetched)  # refused before downloading


async def test_audio_is_left_to_transcription_not_refused(tmp_path: Path) -> None:
    """Audio becomes the prompt's text before the turn (kimaki.voice): the attachment step
    neither refuses it nor sends its bytes to the agent."""
    prepared, fetched = await prepare(tmp_path, attachment("song.mp3", b"ID3", "audio/mpeg"))
    assert prepared.refused == ()
    assert prepared.files == ()
    assert prepared.text == ""
    assert fetched == []


async def test_download_failure_is_reported_not_raised(tmp_path: Path) -> None:
    info = AttachmentInfo(1, "gone.png", "https://cdn.example/gone", 10, "image/png")

    async def fetch(url: str) -> bytes:
        raise OSError("connection reset")

    prepared = await prepare_attachments([info], fetch=fetch, save_dir=tmp_path)
    assert prepared.refused == ("gone.png: could not be downloaded from Discord",)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("report.txt", "5-report.txt"),
        ("../../.bashrc", "5-bashrc"),
        (".hidden", "5-hidden"),
        ("a b/c;rm -rf.txt", "5-c_rm_-rf.txt"),
        ("..", "5-attachment"),
        ("x" * 300, "5-" + "x" * 100),
    ],
)
def test_safe_filename(name: str, safe: str) -> None:
    assert safe_filename(5, name) == safe
