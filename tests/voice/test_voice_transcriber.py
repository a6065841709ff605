"""The transcriber on its own: both services' request shapes, the prompt naming the project,
the checks before and after the download, and where the configuration comes from."""

from __future__ import annotations

import base64
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from kimaki._redact import redact
from kimaki.discord.errors import DownloadTooLarge
from kimaki.testing.transcription import Transcript, TranscriptionServer, ogg_opus
from kimaki.voice import (
    AUDIO_SIZE_LIMIT,
    NOT_CONFIGURED,
    AudioClip,
    StoredKey,
    Transcriber,
    TranscriptionError,
    TranscriptionSettings,
    is_audio,
    resolve_config,
)

KEY = "sk-transcriber-test-0123456789"
AUDIO = ogg_opus(1.5)
CLIP = AudioClip(
    filename="voice-message.ogg",
    url="https://cdn.example/attachments/1/2/voice-message.ogg",
    size=len(AUDIO),
    content_type="audio/ogg",
    duration_secs=1.5,
)


class Downloads:
    def __init__(self, data: bytes = AUDIO, *, too_large: bool = False) -> None:
        self.data = data
        self.too_large = too_large
        self.urls: list[str] = []

    async def download(self, url: str, *, limit: int) -> bytes:
        self.urls.append(url)
        if self.too_large:
            raise DownloadTooLarge(f"over {limit} bytes")
        return self.data


class Keys:
    def __init__(self, stored: tuple[str, str] | None = None) -> None:
        self.stored = stored

    async def get_transcription_key(self) -> tuple[str, str] | None:
        return self.stored


@pytest.fixture
async def server() -> AsyncIterator[TranscriptionServer]:
    server = TranscriptionServer(default_text="run the tests")
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    directory = tmp_path / "shopfront"
    (directory / "src").mkdir(parents=True)
    (directory / "pyproject.toml").write_text("")
    (directory / "src" / "checkout_flow.py").write_text("")
    (directory / ".env").write_text("SECRET=1")
    return directory


def transcriber(settings: TranscriptionSettings, downloads: Downloads | None = None) -> Transcriber:
    return Transcriber(settings=settings, keys=Keys(), downloads=downloads or Downloads())


async def test_openai_compatible_request_shape(server: TranscriptionServer, project: Path) -> None:
    settings = TranscriptionSettings(
        provider="openai", base_url=server.openai_url, model="whisper-1", api_key=KEY, language="en"
    )
    text = await transcriber(settings).transcribe(CLIP, directory=project)
    assert text == "run the tests"
    [request] = server.requests
    assert request.wire == "openai"
    assert request.path == "/v1/audio/transcriptions"
    assert request.key == KEY
    assert request.audio == AUDIO
    assert (request.filename, request.mime) == ("voice-message.ogg", "audio/ogg")
    assert request.fields["model"] == "whisper-1"
    assert request.fields["response_format"] == "json"
    assert request.fields["language"] == "en"
    # The prompt names the project and its files (not hidden ones), so code words come out.
    assert "shopfront" in request.prompt
    assert "pyproject.toml" in request.prompt
    assert "checkout_flow.py" in request.prompt
    assert ".env" not in request.prompt


async def test_gemini_request_shape(server: TranscriptionServer, project: Path) -> None:
    settings = TranscriptionSettings(
        provider="gemini", base_url=server.gemini_url, model="gemini-2.5-flash", api_key=KEY
    )
    assert await transcriber(settings).transcribe(CLIP, directory=project) == "run the tests"
    [request] = server.requests
    assert request.wire == "gemini"
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.key == KEY
    assert request.audio == AUDIO
    assert request.mime == "audio/ogg"
    assert "shopfront" in request.prompt
    inline = request.body["contents"][0]["parts"][1]["inline_data"]
    assert base64.b64decode(inline["data"]) == AUDIO


async def test_a_local_server_needs_no_key(server: TranscriptionServer, project: Path) -> None:
    settings = TranscriptionSettings(base_url=server.openai_url)
    assert await transcriber(settings).transcribe(CLIP, directory=project) == "run the tests"
    [request] = server.requests
    assert request.key is None
    assert request.fields["model"] == "gpt-4o-mini-transcribe"


async def test_failures_are_one_line_with_the_status(
    server: TranscriptionServer, project: Path
) -> None:
    settings = TranscriptionSettings(base_url=server.openai_url, api_key=KEY, timeout=0.5)
    server.add(Transcript.failure(401, f"Incorrect API key provided: {KEY}"), Transcript(""))
    with pytest.raises(TranscriptionError) as refused:
        await transcriber(settings).transcribe(CLIP, directory=project)
    line = str(refused.value)
    assert "\n" not in line
    assert "401" in line
    assert KEY not in redact(line)
    with pytest.raises(TranscriptionError, match="empty"):
        await transcriber(settings).transcribe(CLIP, directory=project)
    held = trio.Event()
    server.add(Transcript.held(held))
    with pytest.raises(TranscriptionError, match=r"did not answer within 0\.5 s"):
        await transcriber(settings).transcribe(CLIP, directory=project)
    held.set()


async def test_checks_before_the_download(server: TranscriptionServer, project: Path) -> None:
    downloads = Downloads()
    settings = TranscriptionSettings(base_url=server.openai_url, max_seconds=60)
    voice = transcriber(settings, downloads)
    with pytest.raises(TranscriptionError, match="it is 2 min long; voice messages of up to 60 s"):
        await voice.transcribe(
            AudioClip("long.ogg", "https://cdn.example/long.ogg", 1000, "audio/ogg", 120.0),
            directory=project,
        )
    with pytest.raises(TranscriptionError, match="over the 25 MiB limit"):
        await voice.transcribe(
            AudioClip("big.wav", "https://cdn.example/big.wav", AUDIO_SIZE_LIMIT + 1, "audio/wav"),
            directory=project,
        )
    assert downloads.urls == []  # refused without downloading
    with pytest.raises(TranscriptionError, match="over the 25 MiB limit"):
        await transcriber(settings, Downloads(too_large=True)).transcribe(CLIP, directory=project)
    with pytest.raises(TranscriptionError, match="/transcription-key"):
        await transcriber(TranscriptionSettings()).transcribe(CLIP, directory=project)
    assert server.requests == []


def test_configuration_order() -> None:
    fallbacks = {"gemini": "gemini-env-key-0123456789", "groq": "groq-env-key-0123456789"}
    assert resolve_config(TranscriptionSettings(), None) is None
    # The vendors' own keys, OpenAI first, then Gemini, then Groq.
    config = resolve_config(TranscriptionSettings(fallback_keys=fallbacks), None)
    assert config is not None
    assert (config.provider, config.key_source) == ("gemini", "GEMINI_API_KEY")
    # KIMAKI_TRANSCRIPTION_PROVIDER picks among them; its own key comes first.
    config = resolve_config(TranscriptionSettings(provider="groq", fallback_keys=fallbacks), None)
    assert config is not None
    assert (config.provider, config.model, config.key_source) == (
        "groq",
        "whisper-large-v3-turbo",
        "GROQ_API_KEY",
    )
    assert config.base_url == "https://api.groq.com/openai/v1"
    # The key stored with /transcription-key wins over the environment.
    stored = StoredKey(provider="openai", key="sk-stored-0123456789")
    config = resolve_config(
        TranscriptionSettings(provider="groq", api_key="env-key-0123456789", model="x"), stored
    )
    assert config is not None
    assert (config.provider, config.model, config.key_source) == (
        "openai",
        "gpt-4o-mini-transcribe",
        "/transcription-key",
    )
    assert "sk-stored" not in repr(config)
    assert NOT_CONFIGURED.count("\n") == 0


def test_audio_is_told_by_type_or_name() -> None:
    assert is_audio("audio/ogg", "voice-message.ogg")
    assert is_audio("audio/x-m4a", "memo")
    assert is_audio(None, "Memo.M4A")
    assert is_audio("application/octet-stream", "take.flac")
    assert not is_audio("image/png", "screen.png")
    assert not is_audio("text/plain", "notes.md")


def test_the_test_audio_is_a_real_ogg_opus_stream() -> None:
    data = ogg_opus(2.0)
    offset, pages, last_granule = 0, [], 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS"
        granule = struct.unpack_from("<q", data, offset + 6)[0]
        segments = data[offset + 26]
        body = sum(data[offset + 27 : offset + 27 + segments])
        pages.append(data[offset + 27 + segments : offset + 27 + segments + body])
        last_granule = granule
        offset += 27 + segments + body
    assert pages[0].startswith(b"OpusHead")
    assert pages[1].startswith(b"OpusTags")
    assert last_granule - 312 == 2 * 48000  # two seconds at 48 kHz, after the pre-skip
