"""Which transcription service a voice message goes to, with which model and key.

Resolved at each transcription (so `/transcription-key` takes effect at once), in this order:
the key stored with `/transcription-key` (and its provider); the environment's
`KIMAKI_TRANSCRIPTION_PROVIDER` / `_BASE_URL` / `_MODEL` / `_API_KEY`; then the vendors' own
`OPENAI_API_KEY`, `GEMINI_API_KEY`, `GROQ_API_KEY`. An OpenAI-compatible server of one's own
(`KIMAKI_TRANSCRIPTION_BASE_URL`) needs no key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final, final

import attrs

from kimaki._redact import register_secret
from kimaki.settings import TRANSCRIPTION_PROVIDERS, Settings

__all__ = [
    "DEFAULT_BASE_URLS",
    "DEFAULT_MODELS",
    "FALLBACK_KEY_NAMES",
    "KEY_SECRET_NAME",
    "NOT_CONFIGURED",
    "StoredKey",
    "TranscriptionConfig",
    "TranscriptionSettings",
    "resolve_config",
]

KEY_SECRET_NAME: Final = "TRANSCRIPTION_API_KEY"
DEFAULT_BASE_URLS: Final[Mapping[str, str]] = {
    "openai": "https://api.openai.com/v1",
    "groq": "https://api.groq.com/openai/v1",
    "gemini": "https://generativelanguage.googleapis.com/v1beta",
}
DEFAULT_MODELS: Final[Mapping[str, str]] = {
    "openai": "gpt-4o-mini-transcribe",
    "groq": "whisper-large-v3-turbo",
    "gemini": "gemini-2.5-flash",
}
FALLBACK_KEY_NAMES: Final[Mapping[str, str]] = {
    "openai": "OPENAI_API_KEY",
    "gemini": "GEMINI_API_KEY",
    "groq": "GROQ_API_KEY",
}
NOT_CONFIGURED: Final = (
    "voice messages are not set up here: an owner or server manager can run "
    "`/transcription-key`, or set KIMAKI_TRANSCRIPTION_API_KEY (or OPENAI_API_KEY, "
    "GEMINI_API_KEY, GROQ_API_KEY) where the bot runs"
)
assert set(DEFAULT_MODELS) == set(TRANSCRIPTION_PROVIDERS)


@final
@attrs.frozen
class TranscriptionSettings:
    """What the environment says about transcription (a part of `kimaki.settings.Settings`)."""

    provider: str | None = None
    base_url: str | None = None
    model: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)
    # The vendors' own variables, by provider ("openai": OPENAI_API_KEY's value...).
    fallback_keys: Mapping[str, str] = attrs.field(factory=dict, repr=False)
    max_seconds: float = 600.0
    timeout: float = 120.0
    language: str | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> TranscriptionSettings:
        return cls(
            provider=settings.transcription_provider,
            base_url=settings.transcription_base_url,
            model=settings.transcription_model,
            api_key=settings.transcription_api_key,
            fallback_keys=dict(settings.transcription_fallback_keys),
            max_seconds=settings.transcription_max_seconds,
            timeout=settings.transcription_timeout,
            language=settings.transcription_language,
        )


@final
@attrs.frozen
class StoredKey:
    """The key set with `/transcription-key`."""

    provider: str
    key: str = attrs.field(repr=False)


@final
@attrs.frozen
class TranscriptionConfig:
    """One service to ask: `key_source` says where the key came from (never the key)."""

    provider: str
    base_url: str
    model: str
    api_key: str | None = attrs.field(repr=False)
    key_source: str
    language: str | None = None


def resolve_config(
    settings: TranscriptionSettings, stored: StoredKey | None
) -> TranscriptionConfig | None:
    """The service to use, or None when nothing is configured (see the module docstring)."""
    provider: str | None
    key: str | None
    if stored is not None:
        provider, key, source = stored.provider, stored.key, "/transcription-key"
    elif settings.provider is not None or settings.api_key is not None:
        provider = settings.provider or "openai"
        key, source = settings.api_key, "KIMAKI_TRANSCRIPTION_API_KEY"
        if key is None and provider in settings.fallback_keys:
            key, source = settings.fallback_keys[provider], FALLBACK_KEY_NAMES[provider]
    elif settings.base_url is not None:
        provider, key, source = "openai", None, "none"
    else:
        provider = next((p for p in FALLBACK_KEY_NAMES if p in settings.fallback_keys), None)
        if provider is None:
            return None
        key, source = settings.fallback_keys[provider], FALLBACK_KEY_NAMES[provider]
    # The environment's base URL and model apply to its own provider (or to any, unnamed).
    own = settings.provider is None or settings.provider == provider
    base_url = (settings.base_url if own else None) or DEFAULT_BASE_URLS[provider]
    if key is None:
        if base_url == DEFAULT_BASE_URLS[provider]:
            return None  # a public service without a key: nothing to ask
        source = "none"
    register_secret(key, KEY_SECRET_NAME)
    return TranscriptionConfig(
        provider=provider,
        base_url=base_url.rstrip("/"),
        model=(settings.model if own else None) or DEFAULT_MODELS[provider],
        api_key=key,
        key_source=source,
        language=settings.language,
    )
