from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from kimaki._log import REDACTED, configure_logging, open_log_file, redact, register_secret

SECRET = "correct-horse-battery-staple-42"
DISCORD_SHAPED = "MTAxMjM0NTY3ODkwMTIzNDU2.GabcDE.abcdefghijklmnopqrstuvwxyz0123456789AB"


@pytest.fixture
def log_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Iterator[Path]:
    configure_logging()  # after capsys, so stderr lines are captured
    path = tmp_path / "kimaki.log"
    handler = open_log_file(path)
    yield path
    logging.getLogger("kimaki").removeHandler(handler)
    handler.close()


def test_line_format_has_time_level_and_prefix(log_file: Path) -> None:
    logging.getLogger("kimaki.gateway").info("connected to %s", "wss://gateway")
    line = log_file.read_text().strip()
    assert line.endswith("[INFO] [GATEWAY] connected to wss://gateway")
    assert line.startswith("[20")  # ISO-8601 timestamp
    assert "+00:00]" in line


def test_log_file_is_truncated_at_each_start(tmp_path: Path) -> None:
    path = tmp_path / "kimaki.log"
    for run in ("first", "second"):
        handler = open_log_file(path)
        logging.getLogger("kimaki.app").warning("%s run", run)
        logging.getLogger("kimaki").removeHandler(handler)
        handler.close()
    text = path.read_text()
    assert "second run" in text
    assert "first run" not in text
    assert path.stat().st_mode & 0o777 == 0o600


def test_secrets_never_reach_the_file_or_stderr(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    register_secret(SECRET)
    log = logging.getLogger("kimaki.rest")
    log.info("token is %s", SECRET)
    log.info(f"inline {SECRET}")
    log.info("headers %r", {"Authorization": f"Bot {SECRET}"})
    log.info("request GET / Authorization: Bot abc.def.ghi-unregistered")
    log.info("shaped %s", DISCORD_SHAPED)
    log.info("url http://opencode:%s@127.0.0.1:4096/event", "server-password-zz")
    try:
        raise RuntimeError(f"Discord said no to {SECRET}")
    except RuntimeError:
        log.exception("request failed")
    text = log_file.read_text() + capsys.readouterr().err
    for leaked in (SECRET, DISCORD_SHAPED, "abc.def.ghi-unregistered", "server-password-zz"):
        assert leaked not in text
    assert text.count(REDACTED) >= 8
    assert "RuntimeError: Discord said no to [REDACTED]" in text  # the traceback is in the file


def test_tracebacks_go_to_the_file_not_stderr(
    log_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        logging.getLogger("kimaki.app").exception("boom")
    assert "Traceback" in log_file.read_text()
    err = capsys.readouterr().err
    assert "boom" in err
    assert "Traceback" not in err


def test_short_values_are_not_registered() -> None:
    register_secret("abc")
    assert redact("abc abc") == "abc abc"
