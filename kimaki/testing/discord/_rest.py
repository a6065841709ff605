"""The emulator's REST side: Discord's `/api/v10` routes over `kimaki._http`, backed by the state.

Beyond answering, it behaves like Discord where a client can get it wrong: every response carries
`X-RateLimit-*` headers for its bucket (route + major parameter), exceeding a bucket or the
global 50/s limit earns a real 429, and tests can script 429s (per bucket or global, JSON or
Cloudflare's HTML) and 5xx answers. With a `RequestValidator`, every request body is checked
against Discord's OpenAPI description and each mismatch is recorded for the test to fail on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from typing import Any, Final, Literal, final
from urllib.parse import unquote

import attrs
import trio

from kimaki._http import Request, Response
from kimaki.testing.discord._errors import DiscordAPIError, invalid_form_body
from kimaki.testing.discord._openapi import RequestValidator
from kimaki.testing.discord._state import DiscordState, File
from kimaki.testing.discord._world import FLAG_EPHEMERAL

__all__ = ["RestServer", "RestStatistics", "parse_multipart"]

log = logging.getLogger("kimaki.emulator")

Json = dict[str, Any]
API_PREFIX: Final = "/api/v10"

# (limit, window seconds) per route, close to what Discord reports for these routes.
DEFAULT_RATE_LIMITS: Final[Mapping[str, tuple[int, float]]] = {
    "POST /channels/{channel_id}/messages": (5, 5.0),
    "PATCH /channels/{channel_id}/messages/{message_id}": (5, 5.0),
    "DELETE /channels/{channel_id}/messages/{message_id}": (5, 1.0),
    "PUT /channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me": (1, 0.25),
    "POST /channels/{channel_id}/typing": (5, 5.0),
    # Renaming a channel or thread: 2 per 10 minutes, the limit bots most often meet.
    "PATCH /channels/{channel_id}": (2, 600.0),
}
DEFAULT_LIMIT: Final = (50, 1.0)
GLOBAL_LIMIT: Final = 50  # requests per second, interaction routes exempt
_MAJOR_PARAMETERS: Final = ("channel_id", "guild_id", "webhook_id", "interaction_id")
_CLOUDFLARE_PAGE: Final = (
    "<!DOCTYPE html><html><head><title>Access denied | discord.com used Cloudflare to "
    "restrict access</title></head><body><h1>Error 1015</h1><p>You are being rate limited."
    "</p></body></html>"
)


@final
@attrs.frozen
class RestStatistics:
    requests: int
    requests_by_route: Mapping[str, int]
    responses_by_status: Mapping[int, int]
    rate_limited: int  # every 429 served
    scripted_faults: int  # scripted 429s and errors served
    requests_while_limited: int  # requests sent into a bucket that had already said 429
    unauthorized: int
    invalid_requests: int  # failed OpenAPI validation


@attrs.define
class _Fault:
    route: str | None
    count: int
    kind: Literal["rate_limit", "error"]
    retry_after: float = 1.0
    is_global: bool = False
    cloudflare: bool = False
    status: int = 500


@attrs.define
class _Bucket:
    limit: int
    window: float
    used: int = 0
    reset_at: float = 0.0
    blocked_until: float = 0.0


@attrs.frozen
class _Call:
    request: Request
    route: str
    params: Mapping[str, str]
    body: Any
    files: tuple[File, ...]

    def query_int(self, name: str, default: int) -> int:
        values = self.request.query.get(name)
        if not values:
            return default
        try:
            return int(values[0])
        except ValueError:
            raise invalid_form_body([name], "NUMBER_TYPE_COERCE", "Value is not int.") from None

    def query_str(self, name: str) -> str | None:
        values = self.request.query.get(name)
        return values[0] if values else None

    def json_object(self) -> Mapping[str, Any]:
        if not isinstance(self.body, dict):
            raise invalid_form_body([], "DICT_TYPE_CONVERT", "Only dictionaries may be used.")
        return self.body


_Handler = Callable[["RestServer", _Call], Response]
_ROUTES: list[tuple[str, str, re.Pattern[str], _Handler]] = []


def _route(method: str, template: str) -> Callable[[_Handler], _Handler]:
    def register(handler: _Handler) -> _Handler:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(template))
        _ROUTES.append((method, template, re.compile(f"^{pattern}$"), handler))
        return handler

    return register


def _ok(data: Any, status: int = 200) -> Response:
    return Response.json(data, status=status)


def _no_content() -> Response:
    return Response.empty(204)


def parse_multipart(content_type: str, body: bytes) -> tuple[Json, tuple[File, ...]]:
    """`payload_json` (or plain form fields) and the `files[n]` parts of a multipart body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None:
        raise invalid_form_body([], "CONTENT_TYPE_INVALID", "multipart body without a boundary")
    delimiter = b"--" + match.group(1).encode("latin-1")
    payload: Json = {}
    files: list[tuple[int, File]] = []
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):
            break
        head, _, data = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        data = data.removesuffix(b"\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        disposition = headers.get("content-disposition", "")
        name_match = re.search(r'\bname="([^"]*)"', disposition)
        filename_match = re.search(r'\bfilename="([^"]*)"', disposition)
        name = name_match.group(1) if name_match else ""
        if name == "payload_json":
            try:
                decoded = json.loads(data)
            except ValueError:
                raise invalid_form_body(
                    ["payload_json"], "JSON_DECODE", "payload_json is not valid JSON"
                ) from None
            if not isinstance(decoded, dict):
                raise invalid_form_body(["payload_json"], "DICT_TYPE_CONVERT", "Not an object")
            payload.update(decoded)
        elif filename_match is not None:
            index_match = re.fullmatch(r"files\[(\d+)\]", name)
            index = int(index_match.group(1)) if index_match else len(files)
            content_type_of_part = headers.get("content-type", "application/octet-stream")
            files.append((index, File(filename_match.group(1), data, content_type_of_part)))
        else:
            payload[name] = data.decode("utf-8", "replace")
    files.sort(key=lambda pair: pair[0])
    return payload, tuple(file for _, file in files)


@final
class RestServer:
    """Serves Discord's REST API from a `DiscordState`; use `handle` with `serve_http`."""

    def __init__(
        self,
        state: DiscordState,
        *,
        token: str,
        gateway_bot: Callable[[], Json],
        validator: RequestValidator | None = None,
        rate_limits: Mapping[str, tuple[int, float]] | None = None,
        enforce_rate_limits: bool = True,
    ) -> None:
        self.state = state
        self._token = token
        self.gateway_bot = gateway_bot
        self.validator = validator
        self.rate_limits = {**DEFAULT_RATE_LIMITS, **(rate_limits or {})}
        self.enforce_rate_limits = enforce_rate_limits
        self.validation_errors: list[str] = []
        # (trio time, method, path) of recent requests, newest last.
        self.requests: deque[tuple[float, str, str]] = deque(maxlen=10_000)
        self._faults: list[_Fault] = []
        self._buckets: dict[tuple[str, str], _Bucket] = {}
        self._global_window: tuple[float, int] = (0.0, 0)
        self._global_blocked_until = 0.0
        self._by_route: Counter[str] = Counter()
        self._by_status: Counter[int] = Counter()
        self._counts: Counter[str] = Counter()

    # ---- scripted faults ------------------------------------------------------------------

    def script_rate_limit(
        self,
        route: str | None = None,
        *,
        retry_after: float = 1.0,
        is_global: bool = False,
        cloudflare: bool = False,
        count: int = 1,
    ) -> None:
        """Answer the next `count` requests of `route` (e.g. "POST /channels/{channel_id}/messages",
        None for any) with a 429: a bucket one, a global one, or Cloudflare's HTML page. The bucket
        (or everything, for global and Cloudflare) stays limited for `retry_after` seconds."""
        self._faults.append(_Fault(route, count, "rate_limit", retry_after, is_global, cloudflare))

    def script_error(self, route: str | None = None, *, status: int = 500, count: int = 1) -> None:
        """Answer the next `count` requests of `route` with a server error."""
        self._faults.append(_Fault(route, count, "error", status=status))

    def statistics(self) -> RestStatistics:
        return RestStatistics(
            requests=sum(self._by_route.values()),
            requests_by_route=dict(self._by_route),
            responses_by_status=dict(self._by_status),
            rate_limited=self._by_status[429],
            scripted_faults=self._counts["scripted"],
            requests_while_limited=self._counts["while_limited"],
            unauthorized=self._counts["unauthorized"],
            invalid_requests=len(self.validation_errors),
        )

    # ---- serving --------------------------------------------------------------------------

    async def handle(self, request: Request) -> Response:
        response = self._handle(request)
        self._by_status[response.status] += 1
        self.state.changed()
        return response

    def _handle(self, request: Request) -> Response:
        path = request.path
        if request.method == "GET" and path.startswith("/attachments/"):
            return self._attachment(path)
        if not path.startswith(API_PREFIX + "/"):
            return Response.json({"message": "404: Not Found", "code": 0}, status=404)
        path = path[len(API_PREFIX) :]
        self.requests.append((trio.current_time(), request.method, path))
        matched = self._match(request.method, path)
        if matched is None:
            self._by_route[f"{request.method} {path}"] += 1
            self._validate(request, path, None)
            known = any(pattern.match(path) for _, _, pattern, _ in _ROUTES)
            if known:
                return Response.json({"message": "405: Method Not Allowed", "code": 0}, 405)
            return Response.json({"message": "404: Not Found", "code": 0}, status=404)
        route, params, handler = matched
        self._by_route[route] += 1
        unauthenticated = path.startswith(("/webhooks/", "/interactions/"))
        if not unauthenticated and request.header("authorization") != f"Bot {self._token}":
            self._counts["unauthorized"] += 1
            return Response.json({"message": "401: Unauthorized", "code": 0}, status=401)
        try:
            body, files = self._body(request)
        except DiscordAPIError as exc:
            return Response.json(exc.body(), status=exc.status)
        self._validate(request, path, body)
        major = self._major(params)
        limited = self._rate_limit(route, major, exempt_from_global=unauthenticated)
        if limited is not None:
            return limited
        headers = self._bucket_headers(route, major)
        try:
            response = handler(self, _Call(request, route, params, body, files))
        except DiscordAPIError as exc:
            response = Response.json(exc.body(), status=exc.status)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # A malformed body the handler could not read: a clear 400, never a crash.
            log.warning("malformed %s %s: %r", request.method, path, exc)
            response = Response.json(
                invalid_form_body([], "BASE_TYPE_INVALID", f"Malformed request: {exc}").body(),
                status=400,
            )
        response.headers.extend(headers)
        return response

    def _match(self, method: str, path: str) -> tuple[str, dict[str, str], _Handler] | None:
        for route_method, template, pattern, handler in _ROUTES:
            found = pattern.match(path)
            if found and route_method == method:
                params = {k: unquote(v) for k, v in found.groupdict().items()}
                return f"{method} {template}", params, handler
        return None

    def _body(self, request: Request) -> tuple[Any, tuple[File, ...]]:
        content_type = request.header("content-type") or ""
        if content_type.startswith("multipart/form-data"):
            return parse_multipart(content_type, request.body)
        if not request.body:
            return None, ()
        try:
            return json.loads(request.body), ()
        except ValueError:
            raise DiscordAPIError(400, 50109, "The request body contains invalid JSON.") from None

    def _validate(self, request: Request, path: str, body: Any) -> None:
        if self.validator is None:
            return
        media = (request.header("content-type") or "application/json").split(";")[0].strip()
        problems = self.validator.validate(request.method, path, media, body)
        for problem in problems:
            log.error("request does not match discord-openapi.json: %s", problem)
        self.validation_errors.extend(problems)

    def _attachment(self, path: str) -> Response:
        parts = path.split("/")
        stored = self.state.files.get(parts[3]) if len(parts) >= 5 else None
        if stored is None:
            return Response.text("Not Found", status=404)
        return Response(200, [("content-type", stored.content_type)], stored.data)

    # ---- rate limits ----------------------------------------------------------------------

    @staticmethod
    def _major(params: Mapping[str, str]) -> str:
        for name in _MAJOR_PARAMETERS:
            if name in params:
                token = params.get("webhook_token") or params.get("interaction_token")
                return params[name] + (f"/{token}" if token else "")
        return ""

    @staticmethod
    def bucket_hash(route: str) -> str:
        return hashlib.sha1(route.encode()).hexdigest()[:32]

    def _bucket(self, route: str, major: str) -> _Bucket:
        key = (route, major)
        bucket = self._buckets.get(key)
        if bucket is None:
            limit, window = self.rate_limits.get(route, DEFAULT_LIMIT)
            bucket = self._buckets[key] = _Bucket(limit, window)
        now = trio.current_time()
        if now >= bucket.reset_at:
            bucket.used = 0
            bucket.reset_at = now + bucket.window
        return bucket

    def _take_fault(self, route: str) -> _Fault | None:
        for fault in self._faults:
            if fault.route in (None, route):
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def _rate_limit(self, route: str, major: str, *, exempt_from_global: bool) -> Response | None:
        now = trio.current_time()
        bucket = self._bucket(route, major)
        if now < self._global_blocked_until:
            self._counts["while_limited"] += 1
            return self._too_many(self._global_blocked_until - now, is_global=True)
        if now < bucket.blocked_until:
            self._counts["while_limited"] += 1
            return self._too_many(bucket.blocked_until - now, bucket=(route, bucket))
        fault = self._take_fault(route)
        if fault is not None:
            self._counts["scripted"] += 1
            if fault.kind == "error":
                return Response.json(
                    {"message": "500: Internal Server Error", "code": 0}, fault.status
                )
            if fault.is_global or fault.cloudflare:
                self._global_blocked_until = now + fault.retry_after
            else:
                bucket.blocked_until = now + fault.retry_after
            if fault.cloudflare:
                response = Response.text(_CLOUDFLARE_PAGE, status=429, content_type="text/html")
                response.headers.append(("retry-after", str(max(1, round(fault.retry_after)))))
                return response
            return self._too_many(
                fault.retry_after, is_global=fault.is_global, bucket=(route, bucket)
            )
        if not self.enforce_rate_limits:
            bucket.used += 1
            return None
        if not exempt_from_global:
            window_start, count = self._global_window
            if now - window_start >= 1.0:
                window_start, count = now, 0
            if count >= GLOBAL_LIMIT:
                self._counts["while_limited"] += 1
                return self._too_many(window_start + 1.0 - now, is_global=True)
            self._global_window = (window_start, count + 1)
        if bucket.used >= bucket.limit:
            self._counts["while_limited"] += 1
            return self._too_many(bucket.reset_at - now, bucket=(route, bucket))
        bucket.used += 1
        return None

    def _too_many(
        self,
        retry_after: float,
        *,
        is_global: bool = False,
        bucket: tuple[str, _Bucket] | None = None,
    ) -> Response:
        retry_after = round(max(retry_after, 0.001), 3)
        body = {"message": "You are being rate limited.", "retry_after": retry_after}
        body["global"] = is_global
        headers = [
            ("retry-after", str(max(1, int(-(-retry_after // 1))))),
            ("x-ratelimit-scope", "global" if is_global else "user"),
        ]
        if is_global:
            headers.append(("x-ratelimit-global", "true"))
        if bucket is not None and not is_global:
            route, state = bucket
            headers += [
                ("x-ratelimit-limit", str(state.limit)),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", f"{time.time() + retry_after:.3f}"),
                ("x-ratelimit-reset-after", f"{retry_after:.3f}"),
                ("x-ratelimit-bucket", self.bucket_hash(route)),
            ]
        return Response.json(body, status=429, headers=headers)

    def _bucket_headers(self, route: str, major: str) -> list[tuple[str, str]]:
        bucket = self._bucket(route, major)
        reset_after = max(bucket.reset_at - trio.current_time(), 0.0)
        return [
            ("x-ratelimit-limit", str(bucket.limit)),
            ("x-ratelimit-remaining", str(max(bucket.limit - bucket.used, 0))),
            ("x-ratelimit-reset", f"{time.time() + reset_after:.3f}"),
            ("x-ratelimit-reset-after", f"{reset_after:.3f}"),
            ("x-ratelimit-bucket", self.bucket_hash(route)),
        ]

    # ---- helpers for handlers -------------------------------------------------------------

    @property
    def bot_id(self) -> str:
        return str(self.state.bot_user["id"])

    def check_application(self, application_id: str) -> None:
        if application_id != self.state.application_id:
            raise DiscordAPIError(403, 50001, "Missing Access")


def _guild_scope(call: _Call) -> str | None:
    return call.params.get("guild_id")


# ---- messages ----------------------------------------------------------------------------


@_route("GET", "/channels/{channel_id}/messages")
def _list_messages(server: RestServer, call: _Call) -> Response:
    return _ok(
        server.state.list_messages(
            call.params["channel_id"],
            limit=call.query_int("limit", 50),
            before=call.query_str("before"),
            after=call.query_str("after"),
            around=call.query_str("around"),
        )
    )


@_route("POST", "/channels/{channel_id}/messages")
def _create_message(server: RestServer, call: _Call) -> Response:
    return _ok(
        server.state.create_message(
            call.params["channel_id"], server.bot_id, call.json_object(), call.files
        )
    )


@_route("GET", "/channels/{channel_id}/messages/{message_id}")
def _get_message(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.message(call.params["channel_id"], call.params["message_id"]))


@_route("PATCH", "/channels/{channel_id}/messages/{message_id}")
def _edit_message(server: RestServer, call: _Call) -> Response:
    # An ephemeral message exists only for its interaction's webhook, as on Discord.
    message = server.state.message(call.params["channel_id"], call.params["message_id"])
    if message["flags"] & FLAG_EPHEMERAL:
        raise DiscordAPIError(404, 10008, "Unknown Message")
    return _ok(
        server.state.edit_message(
            call.params["channel_id"],
            call.params["message_id"],
            call.json_object(),
            call.files,
            editor_id=server.bot_id,
        )
    )


@_route("DELETE", "/channels/{channel_id}/messages/{message_id}")
def _delete_message(server: RestServer, call: _Call) -> Response:
    server.state.delete_message(call.params["channel_id"], call.params["message_id"])
    return _no_content()


@_route("POST", "/channels/{channel_id}/typing")
def _typing(server: RestServer, call: _Call) -> Response:
    server.state.record_typing(call.params["channel_id"], server.bot_id)
    return _no_content()


# ---- reactions ---------------------------------------------------------------------------


@_route("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me")
def _add_reaction(server: RestServer, call: _Call) -> Response:
    p = call.params
    server.state.set_reaction(
        p["channel_id"], p["message_id"], p["emoji_name"], server.bot_id, True
    )
    return _no_content()


@_route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me")
def _remove_own_reaction(server: RestServer, call: _Call) -> Response:
    p = call.params
    server.state.set_reaction(
        p["channel_id"], p["message_id"], p["emoji_name"], server.bot_id, False
    )
    return _no_content()


@_route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/{user_id}")
def _remove_reaction(server: RestServer, call: _Call) -> Response:
    p = call.params
    server.state.set_reaction(
        p["channel_id"], p["message_id"], p["emoji_name"], p["user_id"], False
    )
    return _no_content()


@_route("GET", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}")
def _reaction_users(server: RestServer, call: _Call) -> Response:
    p = call.params
    return _ok(server.state.reaction_users(p["channel_id"], p["message_id"], p["emoji_name"]))


@_route("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions")
def _clear_reactions(server: RestServer, call: _Call) -> Response:
    server.state.clear_reactions(call.params["channel_id"], call.params["message_id"])
    return _no_content()


# ---- channels and threads ----------------------------------------------------------------


@_route("GET", "/channels/{channel_id}")
def _get_channel(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.channel(call.params["channel_id"]))


@_route("PATCH", "/channels/{channel_id}")
def _edit_channel(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.edit_channel(call.params["channel_id"], call.json_object()))


@_route("DELETE", "/channels/{channel_id}")
def _delete_channel(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.delete_channel(call.params["channel_id"]))


@_route("POST", "/channels/{channel_id}/messages/{message_id}/threads")
def _thread_from_message(server: RestServer, call: _Call) -> Response:
    thread = server.state.start_thread_from_message(
        call.params["channel_id"], call.params["message_id"], call.json_object(), server.bot_id
    )
    return _ok(thread, 201)


@_route("POST", "/channels/{channel_id}/threads")
def _thread_without_message(server: RestServer, call: _Call) -> Response:
    thread = server.state.start_thread(call.params["channel_id"], call.json_object(), server.bot_id)
    return _ok(thread, 201)


@_route("PUT", "/channels/{channel_id}/thread-members/{user_id}")
def _add_thread_member(server: RestServer, call: _Call) -> Response:
    user_id = call.params["user_id"]
    server.state.add_thread_member(
        call.params["channel_id"], server.bot_id if user_id == "@me" else user_id
    )
    return _no_content()


@_route("GET", "/channels/{channel_id}/thread-members")
def _thread_members(server: RestServer, call: _Call) -> Response:
    thread_id = call.params["channel_id"]
    server.state.channel(thread_id)
    members = server.state.thread_members.get(thread_id, {})
    return _ok(
        [
            {"id": thread_id, "user_id": user_id, "join_timestamp": joined, "flags": 0}
            for user_id, joined in members.items()
        ]
    )


@_route("GET", "/guilds/{guild_id}/channels")
def _guild_channels(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.guild_channels(call.params["guild_id"]))


@_route("POST", "/guilds/{guild_id}/channels")
def _create_channel(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.create_channel(call.params["guild_id"], call.json_object()), 201)


@_route("GET", "/guilds/{guild_id}/threads/active")
def _active_threads(server: RestServer, call: _Call) -> Response:
    threads = server.state.active_threads(call.params["guild_id"])
    bot_id = server.bot_id
    members = [
        {
            "id": t["id"],
            "user_id": bot_id,
            "join_timestamp": server.state.thread_members[t["id"]][bot_id],
            "flags": 0,
        }
        for t in threads
        if bot_id in server.state.thread_members.get(t["id"], {})
    ]
    return _ok({"threads": threads, "members": members})


# ---- guilds, members, roles, users -------------------------------------------------------


@_route("GET", "/guilds/{guild_id}")
def _get_guild(server: RestServer, call: _Call) -> Response:
    record = server.state.guild(call.params["guild_id"])
    guild = {**record.data, "roles": list(record.roles.values())}
    if call.query_str("with_counts") in ("true", "1"):
        guild.update(approximate_member_count=len(record.members), approximate_presence_count=0)
    return _ok(guild)


@_route("GET", "/guilds/{guild_id}/members")
def _list_members(server: RestServer, call: _Call) -> Response:
    record = server.state.guild(call.params["guild_id"])
    limit = call.query_int("limit", 1)
    if not 1 <= limit <= 1000:
        raise invalid_form_body(["limit"], "NUMBER_TYPE_MAX", "Must be between 1 and 1000.")
    after = int(call.query_str("after") or 0)
    members = sorted(record.members.items(), key=lambda item: int(item[0]))
    return _ok([member for user_id, member in members if int(user_id) > after][:limit])


@_route("GET", "/guilds/{guild_id}/members/{user_id}")
def _get_member(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.member(call.params["guild_id"], call.params["user_id"]))


@_route("PUT", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}")
def _add_member_role(server: RestServer, call: _Call) -> Response:
    p = call.params
    server.state.set_member_role(p["guild_id"], p["user_id"], p["role_id"], True)
    return _no_content()


@_route("DELETE", "/guilds/{guild_id}/members/{user_id}/roles/{role_id}")
def _remove_member_role(server: RestServer, call: _Call) -> Response:
    p = call.params
    server.state.set_member_role(p["guild_id"], p["user_id"], p["role_id"], False)
    return _no_content()


@_route("GET", "/guilds/{guild_id}/roles")
def _list_roles(server: RestServer, call: _Call) -> Response:
    return _ok(list(server.state.guild(call.params["guild_id"]).roles.values()))


@_route("POST", "/guilds/{guild_id}/roles")
def _create_role(server: RestServer, call: _Call) -> Response:
    payload = dict(call.body or {})
    name = payload.pop("name", None) or "new role"
    permissions = int(payload.pop("permissions", 0) or 0)
    fields = {k: v for k, v in payload.items() if k in ("color", "hoist", "mentionable")}
    return _ok(
        server.state.create_role(call.params["guild_id"], name, permissions=permissions, **fields)
    )


@_route("GET", "/users/@me")
def _me(server: RestServer, call: _Call) -> Response:
    return _ok({**server.state.bot_user, "verified": True, "mfa_enabled": False, "locale": "en-US"})


@_route("GET", "/users/@me/guilds")
def _my_guilds(server: RestServer, call: _Call) -> Response:
    bot_id = server.bot_id
    return _ok(
        [
            {
                "id": guild_id,
                "name": record.data["name"],
                "icon": None,
                "owner": record.data["owner_id"] == bot_id,
                "permissions": str(server.state.permissions(guild_id, bot_id)),
                "features": [],
            }
            for guild_id, record in server.state.guilds.items()
            if bot_id in record.members
        ]
    )


@_route("POST", "/users/@me/channels")
def _open_dm(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.open_dm(str(call.json_object()["recipient_id"])))


@_route("GET", "/users/{user_id}")
def _get_user(server: RestServer, call: _Call) -> Response:
    return _ok(server.state.user(call.params["user_id"]))


def _application(server: RestServer) -> Json:
    bot = server.state.bot_user
    owner = next(
        (r.data["owner_id"] for r in server.state.guilds.values()), server.state.bot_user["id"]
    )
    return {
        "id": server.state.application_id,
        "name": bot["username"],
        "icon": None,
        "description": "",
        "bot_public": False,
        "bot_require_code_grant": False,
        "verify_key": "0" * 64,
        "flags": (1 << 19)
        | (1 << 15),  # GATEWAY_MESSAGE_CONTENT_LIMITED, GATEWAY_GUILD_MEMBERS_LIMITED
        "owner": server.state.users.get(owner, bot),
        "team": None,
        "bot": bot,
        "approximate_guild_count": len(server.state.guilds),
    }


@_route("GET", "/applications/@me")
def _application_me(server: RestServer, call: _Call) -> Response:
    return _ok(_application(server))


@_route("GET", "/oauth2/applications/@me")
def _oauth_application(server: RestServer, call: _Call) -> Response:
    return _ok(_application(server))


@_route("GET", "/gateway/bot")
def _gateway_bot(server: RestServer, call: _Call) -> Response:
    return _ok(server.gateway_bot())


@_route("GET", "/gateway")
def _gateway(server: RestServer, call: _Call) -> Response:
    return _ok({"url": server.gateway_bot()["url"]})


# ---- application commands ----------------------------------------------------------------


@_route("GET", "/applications/{application_id}/commands")
@_route("GET", "/applications/{application_id}/guilds/{guild_id}/commands")
def _list_commands(server: RestServer, call: _Call) -> Response:
    server.check_application(call.params["application_id"])
    guild_id = _guild_scope(call)
    if guild_id is not None:
        server.state.guild(guild_id)
    return _ok(server.state.commands.get(guild_id, []))


@_route("PUT", "/applications/{application_id}/commands")
@_route("PUT", "/applications/{application_id}/guilds/{guild_id}/commands")
def _overwrite_commands(server: RestServer, call: _Call) -> Response:
    server.check_application(call.params["application_id"])
    if not isinstance(call.body, list):
        raise invalid_form_body([], "LIST_TYPE_CONVERT", "Only iterables may be used.")
    return _ok(server.state.overwrite_commands(_guild_scope(call), call.body))


@_route("POST", "/applications/{application_id}/commands")
@_route("POST", "/applications/{application_id}/guilds/{guild_id}/commands")
def _create_command(server: RestServer, call: _Call) -> Response:
    server.check_application(call.params["application_id"])
    command, created = server.state.upsert_command(_guild_scope(call), call.json_object())
    return _ok(command, 201 if created else 200)


@_route("GET", "/applications/{application_id}/commands/{command_id}")
@_route("GET", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
def _get_command(server: RestServer, call: _Call) -> Response:
    server.check_application(call.params["application_id"])
    for command in server.state.commands.get(_guild_scope(call), []):
        if command["id"] == call.params["command_id"]:
            return _ok(command)
    raise DiscordAPIError(404, 10063, "Unknown application command")


@_route("DELETE", "/applications/{application_id}/commands/{command_id}")
@_route("DELETE", "/applications/{application_id}/guilds/{guild_id}/commands/{command_id}")
def _delete_command(server: RestServer, call: _Call) -> Response:
    server.check_application(call.params["application_id"])
    server.state.delete_command(_guild_scope(call), call.params["command_id"])
    return _no_content()


# ---- interactions and their webhooks -----------------------------------------------------


@_route("POST", "/interactions/{interaction_id}/{interaction_token}/callback")
def _interaction_callback(server: RestServer, call: _Call) -> Response:
    callback = server.state.interaction_callback(
        call.params["interaction_id"],
        call.params["interaction_token"],
        call.json_object(),
        call.files,
    )
    if call.query_str("with_response") in ("true", "1"):
        return _ok(callback)
    return _no_content()


@_route("POST", "/webhooks/{webhook_id}/{webhook_token}")
def _followup(server: RestServer, call: _Call) -> Response:
    p = call.params
    return _ok(
        server.state.followup(p["webhook_id"], p["webhook_token"], call.json_object(), call.files)
    )


@_route("GET", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
def _webhook_message(server: RestServer, call: _Call) -> Response:
    p = call.params
    return _ok(server.state.webhook_message(p["webhook_id"], p["webhook_token"], p["message_id"]))


@_route("PATCH", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
def _webhook_edit(server: RestServer, call: _Call) -> Response:
    p = call.params
    return _ok(
        server.state.webhook_edit(
            p["webhook_id"], p["webhook_token"], p["message_id"], call.json_object(), call.files
        )
    )


@_route("DELETE", "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}")
def _webhook_delete(server: RestServer, call: _Call) -> Response:
    p = call.params
    server.state.webhook_delete(p["webhook_id"], p["webhook_token"], p["message_id"])
    return _no_content()
