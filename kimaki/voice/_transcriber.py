"""The transcriber: a voice message's audio → its text, or one line saying why not.

The checks that cost nothing come first (is a service configured, is the message too long by
its `duration_secs`, too large by its size), then the download from Discord's CDN (bounded in
size and time), then the service (bounded in time). The audio stays in memory: it never
touches the project directory, and no temporary copy is made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final, Protocol, final

import attrs
import httpx
import trio

from kimaki.discord.errors import DownloadTooLarge, RESTError
from kimaki.voice._config import (
    NOT_CONFIGURED,
    StoredKey,
    TranscriptionConfig,
    TranscriptionSettings,
    resolve_config,
)
from kimaki.voice._providers import AudioData, TranscriptionError, request_transcript

__all__ = [
    "AUDIO_SIZE_LIMIT",
    "AUDIO_SUFFIXES",
    "AudioClip",
    "AudioDownloads",
    "Transcriber",
    "TranscriptionKeys",
    "is_audio",
    "project_prompt",
]

log = logging.getLogger("kimaki.voice")

AUDIO_SIZE_LIMIT: Final = 25 * 1024 * 1024
AUDIO_SUFFIXES: Final = (".ogg", ".oga", ".opus", ".mp3", ".m4a", ".wav", ".webm", ".flac")
_MIME_BY_SUFFIX: Final[Mapping[str, str]] = {
    ".ogg": "audio/ogg",
    ".oga": "audio/ogg",
    ".opus": "audio/ogg",
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".wav": "audio/wav",
    ".webm": "audio/webm",
    ".flac": "audio/flac",
}
# The transcription prompt names at most this many of the project's files, in this many
# characters: enough for the code words of a project, well under the services' prompt limits.
_PROMPT_FILES: Final = 60
_PROMPT_CHARS: Final = 700
_SKIPPED_DIRS: Final = frozenset(
    {"node_modules", "__pycache__", "venv", "dist", "build", "target", "vendor"}
)


def is_audio(content_type: str | None, filename: str) -> bool:
    """An audio attachment: `audio/*`, or a name with one of `AUDIO_SUFFIXES`."""
    mime = (content_type or "").split(";")[0].strip().lower()
    return mime.startswith("audio/") or filename.lower().endswith(AUDIO_SUFFIXES)


@final
@attrs.frozen
class AudioClip:
    """An audio attachment as the message describes it (nothing downloaded yet)."""

    filename: str
    url: str
    size: int
    content_type: str | None = None
    duration_secs: float | None = None

    @property
    def mime(self) -> str:
        mime = (self.content_type or "").split(";")[0].strip().lower()
        if mime.startswith("audio/"):
            return mime
        suffix = os.path.splitext(self.filename.lower())[1]
        return _MIME_BY_SUFFIX.get(suffix, "audio/ogg")


class AudioDownloads(Protocol):
    """Discord's CDN, without the bot token (`kimaki.discord.rest.RESTClient` is one)."""

    async def download(self, url: str, *, limit: int) -> bytes: ...


class TranscriptionKeys(Protocol):
    """The key set with `/transcription-key` (`kimaki.store.Credentials` is one)."""

    async def get_transcription_key(self) -> tuple[str, str] | None: ...


def _minutes(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min"


def _file_names(directory: Path) -> list[str]:
    """Up to `_PROMPT_FILES` file names of the project (its top two levels, hidden and
    generated folders left out), for the transcription prompt. Runs in a worker thread."""
    names: list[str] = []
    seen: set[str] = set()
    folders = [directory]
    for depth in range(2):
        deeper: list[Path] = []
        for folder in folders:
            try:
                entries = sorted(os.scandir(folder), key=lambda e: e.name)
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or entry.name in _SKIPPED_DIRS:
                    continue
                if entry.is_dir(follow_symlinks=False):
                    if depth == 0:
                        deeper.append(Path(entry.path))
                elif entry.name not in seen:
                    seen.add(entry.name)
                    names.append(entry.name)
                if len(names) >= _PROMPT_FILES:
                    return names
        folders = deeper
    return names


async def project_prompt(directory: Path) -> str:
    """The transcription prompt: the project's folder and some of its file names, so that
    code words ("pyproject", "conftest") come out as written."""
    names = await trio.to_thread.run_sync(_file_names, directory)
    text = f"A voice message to a coding agent working on the project {directory.name}."
    if names:
        listed = ""
        for name in names:
            if len(text) + len(listed) + len(name) + 12 > _PROMPT_CHARS:
                break
            listed += (", " if listed else "") + name
        text += f" Its files include: {listed}."
    return text


@final
class Transcriber:
    """`await transcribe(clip, directory=...)`: the text, or `TranscriptionError`."""

    def __init__(
        self,
        *,
        settings: TranscriptionSettings,
        keys: TranscriptionKeys,
        downloads: AudioDownloads,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._downloads = downloads

    @property
    def settings(self) -> TranscriptionSettings:
        return self._settings

    async def config(self) -> TranscriptionConfig | None:
        """The service a voice message would go to now (None: none is configured)."""
        stored = await self._keys.get_transcription_key()
        key = None if stored is None else StoredKey(provider=stored[0], key=stored[1])
        return resolve_config(self._settings, key)

    async def transcribe(self, clip: AudioClip, *, directory: Path) -> str:
        """The transcript of `clip` (never empty), prompted with the project at `directory`."""
        settings = self._settings
        config = await self.config()
        if config is None:
            raise TranscriptionError(NOT_CONFIGURED)
        if clip.duration_secs is not None and clip.duration_secs > settings.max_seconds:
            raise TranscriptionError(
                f"it is {_minutes(clip.duration_secs)} long; voice messages of up to "
                f"{_minutes(settings.max_seconds)} are transcribed "
                "(KIMAKI_TRANSCRIPTION_MAX_SECONDS)"
            )
        if clip.size > AUDIO_SIZE_LIMIT:
            raise TranscriptionError(_too_large(clip.size))
        data = await self._download(clip)
        prompt = await project_prompt(directory)
        audio = AudioData(data=data, filename=clip.filename or "voice-message.ogg", mime=clip.mime)
        with trio.move_on_after(settings.timeout) as scope:
            async with httpx.AsyncClient(timeout=settings.timeout) as client:
                text = await request_transcript(client, config, audio, prompt)
        if scope.cancelled_caught:
            raise TranscriptionError(
                f"the {config.provider} transcription service did not answer within "
                f"{settings.timeout:g} s"
            )
        if not text:
            raise TranscriptionError("the transcript is empty: nothing was heard")
        log.info(
            "transcribed %s (%d bytes) with %s %s: %d characters",
            clip.filename,
            len(data),
            config.provider,
            config.model,
            len(text),
        )
        return text

    async def _download(self, clip: AudioClip) -> bytes:
        with trio.move_on_after(self._settings.timeout):
            try:
                return await self._downloads.download(clip.url, limit=AUDIO_SIZE_LIMIT)
            except DownloadTooLarge:
                raise TranscriptionError(_too_large(None)) from None
            except RESTError as exc:
                log.warning("could not download the audio %s: %s", clip.filename, exc)
                raise TranscriptionError("the audio could not be downloaded from Discord") from None
        raise TranscriptionError("the audio could not be downloaded from Discord in time")


def _too_large(size: int | None) -> str:
    what = f"{size / 2**20:.0f} MiB" if size is not None else "it"
    return f"{what} is over the {AUDIO_SIZE_LIMIT // 2**20} MiB limit for voice messages"
