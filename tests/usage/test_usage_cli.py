"""`kimaki usage`: the rows from the database file, read-only, while the daemon's store has
it open; totals equal to the rows' sums; `--since` in the report's timezone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import trio

from kimaki.store import Store, UsageRow
from kimaki.usage import totals


def _row(ended_at: float, *, cost: float, model: str, person: int, tokens: int) -> UsageRow:
    return UsageRow(
        started_at=ended_at - 3,
        ended_at=ended_at,
        thread_id=11,
        channel_id=22,
        session_id="ses-1",
        engine="opencode",
        model=model,
        person_id=person,
        source="message",
        input_tokens=tokens,
        output_tokens=tokens // 10,
        cache_read_tokens=7,
        cost=cost,
        seconds=3,
        stop_reason="end_turn",
    )


async def _kimaki_usage(data_dir: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "KIMAKI_USAGE_TIMEZONE": "UTC", "KIMAKI_LOCK_PORT": "1"}
    return await trio.run_process(
        [sys.executable, "-m", "kimaki", "usage", "--data-dir", str(data_dir), *args],
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        check=False,
    )


async def test_usage_json_sums_the_rows_since_a_date(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    may = datetime(2026, 5, 1, tzinfo=UTC).timestamp()
    april = datetime(2026, 4, 30, 23, 59, tzinfo=UTC).timestamp()
    rows = [
        _row(may + 60, cost=0.0101, model="fake/a", person=5, tokens=1000),
        _row(may + 120, cost=0.0202, model="fake/b", person=5, tokens=3000),
        _row(may + 180, cost=0.0303, model="fake/a", person=0, tokens=500),
    ]
    async with await Store.open(data_dir / "discord-sessions.db") as store:  # the daemon's, open
        await store.usage.add_usage(_row(april, cost=1.0, model="fake/a", person=5, tokens=1))
        for row in rows:
            await store.usage.add_usage(row)
        done = await _kimaki_usage(data_dir, "--json", "--since", "2026-05-01")
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    summed = totals(rows)
    assert report["totals"]["turns"] == 3
    assert report["totals"]["tokens"] == summed.tokens
    assert report["totals"]["cost"] == summed.cost
    assert report["by_model"]["fake/a"]["cost"] == rows[0].cost + rows[2].cost
    assert report["by_person"]["0"]["turns"] == 1
    assert [turn["cost"] for turn in report["turns"]] == [0.0101, 0.0202, 0.0303]


async def test_usage_text_without_a_database_or_a_daemon(tmp_path: Path) -> None:
    done = await _kimaki_usage(tmp_path, "--since", "2026-05-01T00:00")
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().startswith("Usage since 2026-05-01 00:00 UTC: 0 turns")


async def test_usage_refuses_a_date_it_cannot_read(tmp_path: Path) -> None:
    done = await _kimaki_usage(tmp_path, "--since", "last tuesday")
    assert done.returncode == 64
    assert "--since takes a date" in done.stderr.decode()
