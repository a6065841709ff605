"""The transcription settings from the environment: validated at start-up, keys never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from kimaki.errors import ConfigError
from kimaki.settings import load_settings
from kimaki.voice import TranscriptionSettings, resolve_config


def test_transcription_settings_from_the_environment(tmp_path: Path) -> None:
    settings = load_settings(
        environ={
            "KIMAKI_DATA_DIR": str(tmp_path),
            "KIMAKI_TRANSCRIPTION_PROVIDER": "Groq",
            "KIMAKI_TRANSCRIPTION_MODEL": "whisper-large-v3",
            "KIMAKI_TRANSCRIPTION_MAX_SECONDS": "5m",
            "KIMAKI_TRANSCRIPTION_LANGUAGE": "fr",
            "GROQ_API_KEY": "gsk-from-the-environment-0123",
            "OPENAI_API_KEY": "sk-openai-from-the-environment",
        }
    )
    assert settings.transcription_provider == "groq"
    assert settings.transcription_max_seconds == 300
    assert "gsk-from" not in repr(settings)
    config = resolve_config(TranscriptionSettings.from_settings(settings), None)
    assert config is not None
    assert (config.provider, config.model, config.key_source, config.language) == (
        "groq",
        "whisper-large-v3",
        "GROQ_API_KEY",
        "fr",
    )
    defaults = load_settings(environ={"KIMAKI_DATA_DIR": str(tmp_path)})
    assert defaults.transcription_max_seconds == 600
    assert resolve_config(TranscriptionSettings.from_settings(defaults), None) is None


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("KIMAKI_TRANSCRIPTION_PROVIDER", "whisperx", "must be one of openai, groq, gemini"),
        ("KIMAKI_TRANSCRIPTION_BASE_URL", "localhost:8000", r"must be an http\(s\) URL"),
        ("KIMAKI_TRANSCRIPTION_MAX_SECONDS", "forever", "KIMAKI_TRANSCRIPTION_MAX_SECONDS"),
    ],
)
def test_bad_transcription_settings_are_refused_at_start(
    tmp_path: Path, variable: str, value: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(environ={"KIMAKI_DATA_DIR": str(tmp_path), variable: value})
