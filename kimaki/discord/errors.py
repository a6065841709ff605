"""What can go wrong talking to Discord over REST, and when parsing what Discord sent.

```
KimakiError
├── RESTError ................. a REST call did not succeed
│   ├── HTTPError ............. Discord answered with a non-2xx status (`status`, `code`, ...)
│   │   ├── BadRequest ........ 400: our payload was wrong (`errors` says which field)
│   │   ├── Unauthorized ...... 401: the bot token is not (or no longer) valid
│   │   ├── Forbidden ......... 403: the bot lacks a permission or access
│   │   ├── NotFound .......... 404: the channel, message, interaction, ... is gone
│   │   ├── RateLimited ....... 429 still, after the client's bounded retries
│   │   └── ServerError ....... 5xx still, after the client's bounded retries
│   ├── NetworkError .......... no answer at all (connect, read, protocol), after retries
│   └── DownloadTooLarge ...... an attachment bigger than the caller allows
├── ModelError ................ a payload does not have the shape of the model asked for
└── ContentTooLong ............ content over 2000 characters, refused before sending (also a
                                ValueError: the caller passed a value it must split first)
```

Statuses without a class of their own (405, 409, 413, ...) are raised as plain `HTTPError`.
Translation from a response to one of these happens in one place, `error_from_response`, so a
caller can rely on `code` (Discord's JSON error code, e.g. 10008 Unknown Message) and on the
class (e.g. `except NotFound` for a deleted thread) everywhere.

`ModelError` is separate from `RESTError` because it is also raised for gateway payloads: the
dispatcher logs and skips the event instead of crashing.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

from kimaki.errors import KimakiError

__all__ = [
    "BadRequest",
    "ContentTooLong",
    "DownloadTooLarge",
    "Forbidden",
    "HTTPError",
    "ModelError",
    "NetworkError",
    "NotFound",
    "RESTError",
    "RateLimited",
    "ServerError",
    "Unauthorized",
    "error_from_response",
]


class RESTError(KimakiError):
    """A REST call to Discord did not succeed."""


class HTTPError(RESTError):
    """Discord answered with an error status.

    `code` and `message` come from Discord's JSON error body (`code` is 0 when the body had
    none, e.g. an HTML page from a proxy); `errors` is the nested per-field detail Discord gives
    for a 400, kept as parsed JSON.
    """

    status_for_class: ClassVar[int | None] = None

    def __init__(
        self,
        status: int,
        *,
        method: str,
        path: str,
        code: int = 0,
        message: str = "",
        errors: Any = None,
    ) -> None:
        self.status = status
        self.method = method
        self.path = path
        self.code = code
        self.message = message
        self.errors = errors
        detail = f" {json.dumps(errors, separators=(',', ':'))[:500]}" if errors else ""
        super().__init__(
            f"{method} {path} failed: {status} (code {code}) {message or '(no message)'}{detail}"
        )


class BadRequest(HTTPError):
    """400: Discord refused the payload; `errors` names the field."""

    status_for_class = 400


class Unauthorized(HTTPError):
    """401: the bot token was rejected; nothing will work until it is replaced."""

    status_for_class = 401


class Forbidden(HTTPError):
    """403: the bot lacks a permission (or cannot see the channel)."""

    status_for_class = 403


class NotFound(HTTPError):
    """404: the resource does not exist (any more)."""

    status_for_class = 404


class RateLimited(HTTPError):
    """429 after the client stopped retrying; `retry_after` is Discord's last wait, in seconds."""

    status_for_class = 429

    def __init__(
        self,
        status: int,
        *,
        method: str,
        path: str,
        code: int = 0,
        message: str = "",
        errors: Any = None,
        retry_after: float = 0.0,
    ) -> None:
        super().__init__(
            status, method=method, path=path, code=code, message=message, errors=errors
        )
        self.retry_after = retry_after


class ServerError(HTTPError):
    """5xx after the client's retries: Discord (or Cloudflare in front of it) is unwell."""


class NetworkError(RESTError):
    """No HTTP answer at all (DNS, connect, read, protocol), after the client's retries."""

    def __init__(self, method: str, path: str, cause: BaseException) -> None:
        self.method = method
        self.path = path
        super().__init__(f"{method} {path} failed: {type(cause).__name__}: {cause}")


class ModelError(KimakiError):
    """A payload cannot be turned into the model asked for (missing field, wrong type)."""


_BY_STATUS: dict[int, type[HTTPError]] = {
    cls.status_for_class: cls
    for cls in (BadRequest, Unauthorized, Forbidden, NotFound, RateLimited)
    if cls.status_for_class is not None
}


def error_from_response(
    status: int, body: bytes, *, method: str, path: str, retry_after: float = 0.0
) -> HTTPError:
    """Build the one exception that describes an error response.

    Discord's error body is `{"code": int, "message": str, "errors": {...}}`; anything else
    (HTML from Cloudflare, an empty body) leaves `code` 0 and puts a short excerpt in `message`.
    """
    code = 0
    message = ""
    errors: Any = None
    try:
        data = json.loads(body) if body else None
    except ValueError:
        data = None
    if isinstance(data, dict):
        raw_code = data.get("code", 0)
        code = raw_code if isinstance(raw_code, int) else 0
        message = str(data.get("message", ""))
        errors = data.get("errors")
    elif body:
        message = body[:200].decode("utf-8", "replace").strip()
    if status == 429:
        return RateLimited(
            status,
            method=method,
            path=path,
            code=code,
            message=message,
            errors=errors,
            retry_after=retry_after,
        )
    cls = ServerError if status >= 500 else _BY_STATUS.get(status, HTTPError)
    return cls(status, method=method, path=path, code=code, message=message, errors=errors)


class DownloadTooLarge(RESTError):
    """An attachment was larger than the caller's limit; the download was stopped."""


class ContentTooLong(KimakiError, ValueError):
    """Message content over Discord's limit, refused before sending (split it first)."""

    def __init__(self, length: int, limit: int) -> None:
        self.length = length
        self.limit = limit
        super().__init__(
            f"message content is {length} characters; Discord allows {limit} "
            "(split it with kimaki.discord.markdown.split_message)"
        )
