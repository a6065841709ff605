"""The README's quick start: a new user learns what to install before the first message."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_quick_start_installs_the_opencode_the_tests_run() -> None:
    tested = re.search(r'^OPENCODE_VERSION = "([^"]+)"', (ROOT / "noxfile.py").read_text(), re.M)
    assert tested is not None
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert f"npm install -g opencode-ai@{tested.group(1)}" in quick_start
    # ... and how to run something else, or OpenCode from elsewhere.
    for setting in ("KIMAKI_DEFAULT_ENGINE", "KIMAKI_OPENCODE_PATH", "KIMAKI_AGENTS"):
        assert setting in quick_start
    assert "kimaki doctor" in quick_start
