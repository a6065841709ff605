"""Fake transcription services for the voice tests, and a real (tiny) Ogg/Opus file.

`TranscriptionServer` answers both wires kimaki speaks, on 127.0.0.1 (port 0):

- OpenAI-compatible: `POST {base}/audio/transcriptions` (multipart `file`, `model`,
  `response_format`, `prompt`, `language`), base `http://127.0.0.1:<port>/v1`;
- Gemini: `POST {base}/models/<model>:generateContent` with the audio inline, base
  `http://127.0.0.1:<port>/v1beta`.

Every request is recorded (`requests`), with the key it carried, its fields and the audio it
brought. What it answers is scripted in order (`script`), `default_text` after that:
a text, a failure with a status, an empty transcript, or a hold until an event is set (never:
a timeout test). A request of the wrong shape is answered 400 and recorded with its problem.

```
server = TranscriptionServer(["fix the tests", Transcript.failure(401, "bad key")])
port = await nursery.start(server.serve)
```
"""

from __future__ import annotations

import base64
import email.parser
import email.policy
import functools
import struct
from collections.abc import Iterable
from typing import Any, Final, final

import attrs
import trio

from kimaki._http import Request, Response, serve_http

__all__ = [
    "OPUS_SILENCE_FRAME",
    "Transcript",
    "TranscriptionRequest",
    "TranscriptionServer",
    "ogg_opus",
]

# A 20 ms Opus frame of silence (CELT, fullband, mono): TOC 0xF8, then the silence code.
OPUS_SILENCE_FRAME: Final = b"\xf8\xff\xfe"
_OGG_CRC_POLY: Final = 0x04C11DB7


def _crc_table() -> list[int]:
    table = []
    for i in range(256):
        r = i << 24
        for _ in range(8):
            r = ((r << 1) ^ _OGG_CRC_POLY) if r & 0x80000000 else (r << 1)
        table.append(r & 0xFFFFFFFF)
    return table


_CRC_TABLE: Final = _crc_table()


def _ogg_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _CRC_TABLE[((crc >> 24) & 0xFF) ^ byte]
    return crc


def _ogg_page(
    packets: list[bytes], *, granule: int, serial: int, sequence: int, flags: int
) -> bytes:
    lacing = bytearray()
    for packet in packets:
        lacing += b"\xff" * (len(packet) // 255) + bytes([len(packet) % 255])
    header = (
        b"OggS"
        + struct.pack("<BBqIII", 0, flags, granule, serial, sequence, 0)
        + bytes([len(lacing)])
        + bytes(lacing)
    )
    page = bytearray(header + b"".join(packets))
    page[22:26] = struct.pack("<I", _ogg_crc(bytes(page)))
    return bytes(page)


def ogg_opus(seconds: float = 1.0, *, serial: int = 0x4B494D41) -> bytes:
    """A valid Ogg/Opus stream of `seconds` of silence (what Discord's voice messages are):
    the OpusHead and OpusTags pages, then pages of 20 ms silent frames (48 kHz granules)."""
    head = b"OpusHead" + struct.pack("<BBHIhB", 1, 1, 312, 48000, 0, 0)
    vendor = b"kimaki tests"
    tags = b"OpusTags" + struct.pack("<I", len(vendor)) + vendor + struct.pack("<I", 0)
    pages = [
        _ogg_page([head], granule=0, serial=serial, sequence=0, flags=0x02),
        _ogg_page([tags], granule=0, serial=serial, sequence=1, flags=0),
    ]
    frames = max(1, round(seconds / 0.02))
    sequence, granule, done = 2, 0, 0
    while done < frames:
        batch = min(50, frames - done)  # one second a page
        done += batch
        granule += batch * 960
        last = done == frames
        pages.append(
            _ogg_page(
                [OPUS_SILENCE_FRAME] * batch,
                granule=granule + 312,
                serial=serial,
                sequence=sequence,
                flags=0x04 if last else 0,
            )
        )
        sequence += 1
    return b"".join(pages)


@final
@attrs.frozen
class Transcript:
    """One scripted answer: `text`, or a failure `status`, or held until `hold` is set."""

    text: str = ""
    status: int = 200
    message: str = ""
    hold: trio.Event | None = attrs.field(default=None, eq=False)

    @classmethod
    def failure(cls, status: int, message: str = "scripted failure") -> Transcript:
        return cls(status=status, message=message)

    @classmethod
    def held(cls, event: trio.Event, text: str = "") -> Transcript:
        return cls(text=text, hold=event)


@final
@attrs.frozen
class TranscriptionRequest:
    """A request as received: which wire, the key, the form fields (OpenAI) or the JSON body
    (Gemini), the audio and its type; `problem` when its shape was refused."""

    wire: str  # "openai" or "gemini"
    path: str
    key: str | None
    fields: dict[str, str]
    audio: bytes
    filename: str
    mime: str
    body: Any = None
    problem: str | None = None

    @property
    def prompt(self) -> str:
        """The transcription prompt the service was given."""
        if self.wire == "openai":
            return self.fields.get("prompt", "")
        try:
            return str(self.body["contents"][0]["parts"][0]["text"])
        except (KeyError, IndexError, TypeError):
            return ""


def _form(request: Request) -> tuple[dict[str, str], bytes, str, str]:
    """The multipart fields, and the `file` part's bytes, name and type."""
    content_type = request.header("content-type") or ""
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + request.body
    )
    fields: dict[str, str] = {}
    audio, filename, mime = b"", "", ""
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "file":
            audio = data
            filename = str(part.get_filename() or "")
            mime = part.get_content_type()
        elif isinstance(name, str):
            fields[name] = data.decode()
    return fields, audio, filename, mime


@final
class TranscriptionServer:
    """See the module docstring. `await nursery.start(server.serve)` returns the port."""

    def __init__(self, script: Iterable[str | Transcript] = (), *, default_text: str = "") -> None:
        self._script = [t if isinstance(t, Transcript) else Transcript(t) for t in script]
        self.default_text = default_text
        self.requests: list[TranscriptionRequest] = []
        self.port = 0
        self._arrived = trio.Event()

    def add(self, *answers: str | Transcript) -> None:
        self._script.extend(t if isinstance(t, Transcript) else Transcript(t) for t in answers)

    @property
    def openai_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def gemini_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1beta"

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.port = await nursery.start(
                functools.partial(serve_http, self._handle, name="transcription")
            )
            task_status.started(self.port)

    async def wait_for_requests(self, count: int) -> list[TranscriptionRequest]:
        """Once `count` requests have arrived (in order)."""
        while len(self.requests) < count:
            self._arrived = trio.Event()
            await self._arrived.wait()
        return self.requests[:count]

    async def _handle(self, request: Request) -> Response:
        if request.method != "POST":
            return Response.json({"error": {"message": "method not allowed"}}, 405)
        if request.path.endswith("/audio/transcriptions"):
            recorded = self._openai(request)
        elif request.path.endswith(":generateContent"):
            recorded = self._gemini(request)
        else:
            return Response.json({"error": {"message": f"no route {request.path}"}}, 404)
        self.requests.append(recorded)
        self._arrived.set()
        if recorded.problem is not None:
            return Response.json({"error": {"message": recorded.problem}}, 400)
        answer = self._script.pop(0) if self._script else Transcript(self.default_text)
        if answer.hold is not None:
            await answer.hold.wait()
        if answer.status >= 400:
            return Response.json({"error": {"message": answer.message}}, answer.status)
        if recorded.wire == "openai":
            return Response.json({"text": answer.text})
        return Response.json(
            {"candidates": [{"content": {"role": "model", "parts": [{"text": answer.text}]}}]}
        )

    def _openai(self, request: Request) -> TranscriptionRequest:
        fields, audio, filename, mime = _form(request)
        problem = None
        if not audio:
            problem = "no file"
        elif not fields.get("model"):
            problem = "no model"
        return TranscriptionRequest(
            wire="openai",
            path=request.path,
            key=request.bearer_token,
            fields=fields,
            audio=audio,
            filename=filename,
            mime=mime,
            problem=problem,
        )

    def _gemini(self, request: Request) -> TranscriptionRequest:
        audio, mime, problem = b"", "", None
        try:
            body = request.json()
            parts = body["contents"][0]["parts"]
            inline = next(p["inline_data"] for p in parts if "inline_data" in p)
            audio = base64.b64decode(inline["data"], validate=True)
            mime = str(inline["mime_type"])
        except (ValueError, KeyError, IndexError, TypeError, StopIteration):
            body, problem = None, "no inline audio"
        return TranscriptionRequest(
            wire="gemini",
            path=request.path,
            key=request.header("x-goog-api-key"),
            fields={},
            audio=audio,
            filename="",
            mime=mime,
            body=body,
            problem=problem,
        )
