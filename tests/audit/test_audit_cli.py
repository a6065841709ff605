"""`kimaki audit` and `kimaki audit export`: the trail from the command line, read-only."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import trio

from kimaki._audit import AuditEvent
from kimaki.audit import AuditStore
from kimaki.cli import main


def _seed(data_dir: Path) -> float:
    now = time.time()

    async def write() -> None:
        async with await AuditStore.open(data_dir / "audit.db") as store:
            await store.write(
                [
                    AuditEvent("daemon.started", now - 10 * 86400, detail={"version": "1"}),
                    AuditEvent("message.created", now - 120, 5, None, 7, {"content": "hello"}),
                    AuditEvent("turn.ended", now - 60, 5, 50, 7, {"stop_reason": "end_turn"}),
                    AuditEvent("message.created", now - 30, 6, None, 8, {"content": "other"}),
                ]
            )

    data_dir.mkdir(parents=True, exist_ok=True)
    trio.run(write)
    return now


def _run(capsys: pytest.CaptureFixture[str], data_dir: Path, *args: str) -> tuple[int, str, str]:
    code = main(["audit", "--data-dir", str(data_dir), *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_last_events_as_text_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    _seed(data_dir)
    code, out, _ = _run(capsys, data_dir)
    assert code == 0
    lines = out.splitlines()
    assert [line.split("\t")[1] for line in lines] == [
        "message.created",
        "turn.ended",
        "message.created",
        "daemon.started",
    ]
    assert lines[1].split("\t")[2] == "5/50"
    code, out, _ = _run(capsys, data_dir, "--json", "--channel", "5", "--kind", "message")
    assert code == 0
    rows = json.loads(out)
    assert [(row["kind"], row["detail"]) for row in rows] == [
        ("message.created", {"content": "hello"})
    ]
    code, out, _ = _run(capsys, data_dir, "--json", "--since", "1d")
    assert {row["kind"] for row in json.loads(out)} == {"message.created", "turn.ended"}


def test_export_writes_json_lines_oldest_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    _seed(data_dir)
    code, out, _ = _run(capsys, data_dir, "export", "--since", "2h")
    assert code == 0
    rows = [json.loads(line) for line in out.splitlines()]
    assert [row["kind"] for row in rows] == ["message.created", "turn.ended", "message.created"]
    assert set(rows[0]) == {"id", "at", "kind", "channel_id", "thread_id", "user_id", "detail"}
    code, out, _ = _run(capsys, data_dir, "export")
    assert len(out.splitlines()) == 4

    # Reading never changes the file.
    async def count() -> int:
        async with await AuditStore.open_read_only(data_dir / "audit.db") as store:
            return await store.count()

    assert trio.run(count) == 4


def test_no_file_and_a_bad_since_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    code, _, err = _run(capsys, data_dir)
    assert code == 64
    assert "no audit file" in err
    _seed(data_dir)
    code, _, err = _run(capsys, data_dir, "--since", "whenever")
    assert code == 64
    assert "`since` is a span back from now" in err
