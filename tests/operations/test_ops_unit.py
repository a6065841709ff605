from __future__ import annotations

import getpass
import subprocess
import sys
from pathlib import Path

from kimaki._systemd_unit import render_unit

ROOT = Path(__file__).parents[2]


def test_documented_unit_is_the_generated_one() -> None:
    documented = (ROOT / "docs" / "kimaki.service").read_text()
    rendered = render_unit(
        python="/home/me/kimaki/.venv/bin/python",
        data_dir="/home/me/.kimaki",
        home="/home/me",
        path="/home/me/.local/bin:/usr/local/bin:/usr/bin:/bin",
        user="me",
    )
    assert documented == rendered


def test_unit_has_what_operations_rely_on() -> None:
    unit = render_unit(python="/py", data_dir="/d ir", home="/h", path="/bin", user="bot")
    lines = set(unit.splitlines())
    for expected in (
        "Type=notify",
        "Restart=on-failure",
        "RestartPreventExitStatus=64 78",
        "ExecReload=/bin/kill -USR2 $MAINPID",
        "ExecStart=/py -m kimaki --data-dir '/d ir'",
        "EnvironmentFile=-/d ir/kimaki.env",
        "KillMode=control-group",
        "#LoadCredential=kimaki-bot-token:/etc/kimaki/bot-token",
        "User=bot",
        "WantedBy=multi-user.target",
    ):
        assert expected in lines
    assert any(line.startswith("WatchdogSec=") for line in lines)
    user_unit = render_unit(python="/py", data_dir="/d", home="/h", path="/bin", user=None)
    assert "User=" not in user_unit
    assert "WantedBy=default.target" in user_unit.splitlines()


def test_cli_prints_a_unit_for_this_installation(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "kimaki", "systemd-unit", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert f"ExecStart={sys.executable} -m kimaki --data-dir {tmp_path}" in result.stdout
    assert f"User={getpass.getuser()}" in result.stdout
