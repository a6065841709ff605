"""Voice messages become prompts: the audio of a message, transcribed by an OpenAI-compatible
service (OpenAI, Groq, a local whisper server) or Gemini.

`Transcriber` is the door: the router hands it an `AudioClip` (an attachment, not yet
downloaded) and the project directory, and gets the text or a `TranscriptionError` whose
`str()` is the one line the thread shows. `resolve_config` says which service is in use
(`/transcription`), `is_audio` which attachments are audio.
"""

from __future__ import annotations

from kimaki.voice._config import (
    DEFAULT_BASE_URLS,
    DEFAULT_MODELS,
    FALLBACK_KEY_NAMES,
    KEY_SECRET_NAME,
    NOT_CONFIGURED,
    StoredKey,
    TranscriptionConfig,
    TranscriptionSettings,
    resolve_config,
)
from kimaki.voice._providers import AudioData, TranscriptionError, request_transcript
from kimaki.voice._transcriber import (
    AUDIO_SIZE_LIMIT,
    AUDIO_SUFFIXES,
    AudioClip,
    AudioDownloads,
    Transcriber,
    TranscriptionKeys,
    is_audio,
    project_prompt,
)

__all__ = [
    "AUDIO_SIZE_LIMIT",
    "AUDIO_SUFFIXES",
    "DEFAULT_BASE_URLS",
    "DEFAULT_MODELS",
    "FALLBACK_KEY_NAMES",
    "KEY_SECRET_NAME",
    "NOT_CONFIGURED",
    "AudioClip",
    "AudioData",
    "AudioDownloads",
    "StoredKey",
    "Transcriber",
    "TranscriptionConfig",
    "TranscriptionError",
    "TranscriptionKeys",
    "TranscriptionSettings",
    "is_audio",
    "project_prompt",
    "request_transcript",
    "resolve_config",
]
