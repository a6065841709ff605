"""The transcription services' wires: OpenAI-compatible `audio/transcriptions` and Gemini's
`generateContent` with the audio inline. Each answers the transcript or raises
`TranscriptionError` with one line that names the service and its status."""

from __future__ import annotations

import base64
import json
from http import HTTPStatus
from typing import Any, Final, final

import attrs
import httpx

from kimaki._redact import redact
from kimaki.errors import KimakiError
from kimaki.voice._config import TranscriptionConfig

__all__ = ["AudioData", "TranscriptionError", "request_transcript"]

_REASON_LIMIT: Final = 200
_GEMINI_INSTRUCTION: Final = (
    "Transcribe this voice message word for word, in its own language. Answer with the "
    "transcript only: no preamble, no quotes, no description of the audio."
)


class TranscriptionError(KimakiError):
    """A voice message could not be transcribed; `str()` is the one line a thread shows."""


@final
@attrs.frozen
class AudioData:
    """The audio in memory (never in the project directory), with its name and type."""

    data: bytes = attrs.field(repr=False)
    filename: str
    mime: str


def _reason(response: httpx.Response) -> str:
    """The service's own message about a failure, short and without secrets."""
    text = response.text
    try:
        body: Any = json.loads(text)
    except ValueError:
        body = None
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            text = error["message"]
        elif isinstance(error, str):
            text = error
    text = " ".join(text.split())
    if len(text) > _REASON_LIMIT:
        text = text[: _REASON_LIMIT - 1] + "…"
    return redact(text)


def _refused(config: TranscriptionConfig, response: httpx.Response) -> TranscriptionError:
    reason = _reason(response)
    try:
        phrase = response.reason_phrase or HTTPStatus(response.status_code).phrase
    except ValueError:
        phrase = ""
    detail = f"{response.status_code} {phrase}".strip()
    return TranscriptionError(
        f"the {config.provider} transcription service refused it ({detail}"
        + (f": {reason})" if reason else ")")
    )


async def request_transcript(
    client: httpx.AsyncClient, config: TranscriptionConfig, audio: AudioData, prompt: str
) -> str:
    """Ask the configured service for the transcript of `audio` (stripped; may be empty)."""
    try:
        if config.provider == "gemini":
            return await _gemini(client, config, audio, prompt)
        return await _openai_compatible(client, config, audio, prompt)
    except httpx.TimeoutException:
        raise TranscriptionError(
            f"the {config.provider} transcription service did not answer in time"
        ) from None
    except httpx.TransportError as exc:
        raise TranscriptionError(
            f"could not reach the {config.provider} transcription service ({type(exc).__name__})"
        ) from None


async def _openai_compatible(
    client: httpx.AsyncClient, config: TranscriptionConfig, audio: AudioData, prompt: str
) -> str:
    fields = {"model": config.model, "response_format": "json", "prompt": prompt}
    if config.language:
        fields["language"] = config.language
    headers = {"Authorization": f"Bearer {config.api_key}"} if config.api_key else {}
    response = await client.post(
        f"{config.base_url}/audio/transcriptions",
        headers=headers,
        data=fields,
        files={"file": (audio.filename, audio.data, audio.mime)},
    )
    if response.status_code >= 400:
        raise _refused(config, response)
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("text"), str):
        return str(body["text"]).strip()
    raise TranscriptionError(
        f"the {config.provider} transcription service answered without a transcript"
    )


async def _gemini(
    client: httpx.AsyncClient, config: TranscriptionConfig, audio: AudioData, prompt: str
) -> str:
    instruction = f"{_GEMINI_INSTRUCTION}\n{prompt}"
    if config.language:
        instruction += f"\nThe speaker's language: {config.language}."
    body = {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {"text": instruction},
                    {
                        "inline_data": {
                            "mime_type": audio.mime,
                            "data": base64.b64encode(audio.data).decode("ascii"),
                        }
                    },
                ],
            }
        ],
        "generationConfig": {"temperature": 0},
    }
    headers = {"x-goog-api-key": config.api_key} if config.api_key else {}
    response = await client.post(
        f"{config.base_url}/models/{config.model}:generateContent", headers=headers, json=body
    )
    if response.status_code >= 400:
        raise _refused(config, response)
    answer: Any = None
    try:
        answer = response.json()
        parts = answer["candidates"][0]["content"]["parts"]
        return "".join(str(part.get("text", "")) for part in parts).strip()
    except (ValueError, KeyError, IndexError, TypeError):
        if isinstance(answer, dict) and answer.get("candidates") == []:
            return ""
        raise TranscriptionError(
            "the gemini transcription service answered without a transcript"
        ) from None
