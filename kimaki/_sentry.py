"""Optional error reporting to Sentry: on only when KIMAKI_SENTRY_DSN is set.

What is sent: unhandled errors (the SDK's excepthook) and every ERROR log line of any logger
(the SDK's logging integration sees records whatever their logger's `propagate`), each tagged
with its log prefix (`kimaki.gateway` → `prefix: GATEWAY`, as in the log file) and with the
version as the release. Lower lines ride along as breadcrumbs.

What never leaves: every event goes through `kimaki._redact` in `before_send`, every string in
it (messages, exception values, breadcrumbs, source lines, keys); an event that cannot be
redacted is dropped, not sent as it is. Frame local variables are not collected at all, nor
are request bodies or personal data, and the SDK's auto-enabled integrations stay off (the
httpx one would record Discord's interaction-webhook URLs, which carry tokens).

`sentry-sdk` is an extra (`pip install 'kimaki[sentry]'`): without it, a DSN is reported once
as a warning and nothing else changes. With no DSN the SDK is not even imported.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, cast

from kimaki._redact import redact, register_secret
from kimaki._version import __version__

if TYPE_CHECKING:
    from sentry_sdk.transport import Transport
    from sentry_sdk.types import Event, Hint

__all__ = ["SENTRY_INSTALL_HINT", "start_error_reporting", "stop_error_reporting"]

log = logging.getLogger("kimaki.sentry")

SENTRY_INSTALL_HINT: Final = "pip install 'kimaki[sentry]'"
# Seconds the daemon waits at exit for queued reports to leave.
_FLUSH_TIMEOUT: Final = 2.0
_started = False


def start_error_reporting(
    dsn: str | None, *, transport: Transport | None = None, environment: str | None = None
) -> bool:
    """Start reporting to Sentry if `dsn` is set and the SDK is installed; whether it started.

    `transport` replaces the SDK's HTTP transport (tests record envelopes with one).
    """
    global _started
    if not dsn:
        return False
    # The DSN's key is a credential of the Sentry project: never printed.
    register_secret(dsn, "KIMAKI_SENTRY_DSN")
    try:
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration
    except ImportError:
        log.warning(
            "KIMAKI_SENTRY_DSN is set but sentry-sdk is not installed (%s): errors are not "
            "reported to Sentry",
            SENTRY_INSTALL_HINT,
        )
        return False
    options: dict[str, Any] = {}
    if transport is not None:
        options["transport"] = transport
    sentry_sdk.init(
        dsn=dsn,
        release=f"kimaki@{__version__}",
        environment=environment,
        before_send=_before_send,
        include_local_variables=False,
        max_request_body_size="never",
        auto_enabling_integrations=False,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=logging.ERROR)],
        **options,
    )
    _started = True
    log.info("errors are reported to Sentry (release kimaki@%s)", __version__)
    return True


def stop_error_reporting() -> None:
    """Send what is queued (a bounded wait) and stop; nothing happens if it never started."""
    global _started
    if not _started:
        return
    _started = False
    import sentry_sdk

    sentry_sdk.get_client().close(timeout=_FLUSH_TIMEOUT)
    sentry_sdk.get_global_scope().set_client(None)


def _before_send(event: Event, hint: Hint) -> Event | None:
    """Tag the event with its log prefix, then redact every string in it."""
    try:
        logger = event.get("logger")
        if isinstance(logger, str) and logger:
            tags = event.setdefault("tags", {})
            if isinstance(tags, dict):
                tags.setdefault("prefix", _prefix(logger))
        return cast("Event", _redacted(event))
    except Exception:  # an event that cannot be cleaned is not sent
        return None


def _prefix(logger: str) -> str:
    """The log line's prefix for a logger name, as `kimaki._log` writes it."""
    return "KIMAKI" if logger == "kimaki" else logger.rsplit(".", 1)[-1].upper()


def _redacted(value: object) -> object:
    """Every string in `value`, keys too, through the redactor."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {_redacted(key): _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value
