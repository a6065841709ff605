from __future__ import annotations

import sys
from pathlib import Path

# The command tests' helpers (the bot with its commands, a person's command, a git repository)
# are reused for /diff rather than copied.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "commands"))
