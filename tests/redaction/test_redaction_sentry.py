"""Optional Sentry reporting, through the SDK's own transport seam: no network.

A recording transport stands in for Sentry; what it receives is exactly what would leave.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from kimaki import cli
from kimaki._log import configure_logging
from kimaki._redact import register_environment
from kimaki._sentry import start_error_reporting, stop_error_reporting
from kimaki._version import __version__
from kimaki.errors import EXIT_CRASH, ConfigError
from kimaki.settings import load_settings

DSN = "https://0123456789abcdef0123456789abcdef@o0.ingest.sentry.invalid/42"
KEY = "sentry-test-key-7f3a9c1b2d"


class Recording(Transport):
    """Keeps every envelope the SDK hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)

    @property
    def events(self) -> list[Any]:
        found = [envelope.get_event() for envelope in self.envelopes]
        return [event for event in found if event is not None]

    def sent(self) -> bytes:
        return b"".join(envelope.serialize() for envelope in self.envelopes)


@pytest.fixture
def transport() -> Iterator[Recording]:
    configure_logging()
    recording = Recording()
    yield recording
    stop_error_reporting()


def test_nothing_starts_and_nothing_is_sent_without_a_dsn(transport: Recording) -> None:
    assert start_error_reporting(None, transport=transport) is False
    assert start_error_reporting("", transport=transport) is False
    assert not sentry_sdk.get_client().is_active()
    logging.getLogger("kimaki.gateway").error("the gateway closed")
    assert transport.envelopes == []


def test_an_error_line_is_sent_tagged_with_its_prefix_and_redacted(transport: Recording) -> None:
    register_environment({"OPENAI_API_KEY": KEY})
    assert start_error_reporting(DSN, transport=transport) is True
    log = logging.getLogger("kimaki.gateway")
    log.info("connecting with %s", KEY)  # a breadcrumb of the error that follows
    log.warning("Authorization: Bearer abcdefghijklmnop")
    log.error("identify failed for %s (DSN %s)", KEY, DSN)
    sentry_sdk.flush()
    (event,) = transport.events
    assert event["tags"]["prefix"] == "GATEWAY"
    assert event["release"] == f"kimaki@{__version__}"
    assert event["level"] == "error"
    message = event["logentry"]["formatted"]
    assert message == (
        "identify failed for [REDACTED:OPENAI_API_KEY] (DSN [REDACTED:KIMAKI_SENTRY_DSN])"
    )
    crumbs = [crumb["message"] for crumb in event["breadcrumbs"]["values"]]
    assert "connecting with [REDACTED:OPENAI_API_KEY]" in crumbs
    sent = transport.sent()
    for secret in (KEY, "abcdefghijklmnop", "0123456789abcdef0123456789abcdef"):
        assert secret.encode() not in sent


def test_lines_below_error_are_not_events(transport: Recording) -> None:
    start_error_reporting(DSN, transport=transport)
    logging.getLogger("kimaki.rest").warning("slow down")
    logging.getLogger("kimaki.rest").info("fine")
    sentry_sdk.flush()
    assert transport.events == []


def test_a_crash_of_the_daemon_is_sent_with_its_traceback_redacted(
    transport: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    register_environment({"ANTHROPIC_API_KEY": KEY})
    start_error_reporting(DSN, transport=transport)
    try:
        raise RuntimeError(f"agent said {KEY}")
    except RuntimeError as exc:
        crash = exc
    assert cli._exit_code(crash) == EXIT_CRASH  # what `kimaki` does with any crash
    sentry_sdk.flush()
    (event,) = transport.events
    assert event["tags"]["prefix"] == "KIMAKI"
    (exception,) = event["exception"]["values"]
    assert exception["type"] == "RuntimeError"
    assert exception["value"] == "agent said [REDACTED:ANTHROPIC_API_KEY]"
    assert exception["stacktrace"]["frames"]  # the traceback went along
    assert all("vars" not in frame for frame in exception["stacktrace"]["frames"])
    assert KEY.encode() not in transport.sent()
    assert KEY not in capsys.readouterr().err


def test_an_unhandled_error_reaching_the_excepthook_is_sent(
    transport: Recording, capsys: pytest.CaptureFixture[str]
) -> None:
    register_environment({"GROQ_API_KEY": KEY})
    start_error_reporting(DSN, transport=transport)
    try:
        raise ValueError(f"bad {KEY}")
    except ValueError:
        sys.excepthook(*sys.exc_info())
    sentry_sdk.flush()
    (event,) = transport.events
    assert event["exception"]["values"][0]["value"] == "bad [REDACTED:GROQ_API_KEY]"
    assert KEY.encode() not in transport.sent()
    capsys.readouterr()  # the default hook printed the traceback to stderr


def test_a_dsn_without_the_sdk_is_a_warning_not_a_failure(
    transport: Recording, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "sentry_sdk", None)  # import fails as if not installed
    logging.getLogger("kimaki").propagate = True
    try:
        with caplog.at_level(logging.WARNING, logger="kimaki.sentry"):
            assert start_error_reporting(DSN, transport=transport) is False
    finally:
        logging.getLogger("kimaki").propagate = False
    assert "pip install 'kimaki[sentry]'" in caplog.text
    assert "0123456789abcdef" not in caplog.text


def test_the_setting(tmp_path: Path) -> None:
    base = {"HOME": str(tmp_path)}
    settings = load_settings(data_dir=str(tmp_path), environ=base)
    assert settings.sentry_dsn is None
    settings = load_settings(data_dir=str(tmp_path), environ={**base, "KIMAKI_SENTRY_DSN": DSN})
    assert settings.sentry_dsn == DSN
    assert DSN not in repr(settings)
    with pytest.raises(ConfigError, match="KIMAKI_SENTRY_DSN") as raised:
        load_settings(data_dir=str(tmp_path), environ={**base, "KIMAKI_SENTRY_DSN": "nope:abc"})
    assert "nope:abc" not in str(raised.value)
