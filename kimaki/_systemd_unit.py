"""The systemd unit for kimaki: one template, printed filled in by `kimaki systemd-unit`.

`docs/kimaki.service` is this template rendered with placeholder values (a test keeps the two
the same), so the documented unit and the generated one cannot drift apart.
"""

from __future__ import annotations

import getpass
import os
import shlex
import sys
from pathlib import Path
from typing import Final

__all__ = ["UNIT_TEMPLATE", "render_unit", "unit_for_current_user"]

UNIT_TEMPLATE: Final = """\
# kimaki as a systemd service. Install:
#   {install_hint}
# The token, best as a systemd credential: a file only root reads, which systemd hands to this
# service alone (never in an environment, which every process of the user can read):
#   install -d -m 700 /etc/kimaki && install -m 600 /dev/null /etc/kimaki/bot-token
#   (write the token into it), then uncomment LoadCredential= below.
# Or run `kimaki token set --data-dir {data_dir}` once. KIMAKI_BOT_TOKEN in the
# EnvironmentFile (mode 600) works too; kimaki then drops it from its environment at start.
[Unit]
Description=kimaki: AI coding agents driven from Discord
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
ExecStart={exec_start}
# SIGUSR2: restart in place with the new code (same PID), resuming the Discord session.
ExecReload=/bin/kill -USR2 $MAINPID
Restart=on-failure
RestartSec=5
# 64: configuration error, 78: Discord rejected the credentials. Restarting cannot fix either.
RestartPreventExitStatus=64 78
WatchdogSec=60
TimeoutStopSec=20
# On stop, whatever is left in the service's cgroup is killed too (agents' tools included).
KillMode=control-group
#LoadCredential=kimaki-bot-token:/etc/kimaki/bot-token
EnvironmentFile=-{data_dir}/kimaki.env
Environment=PATH={path}
WorkingDirectory={home}
{user_line}\
# Agent programs as another user, out of reach of the data dir (the daemon runs as root then;
# see docs/operations.md):
#Environment=KIMAKI_AGENT_USER=kimaki-agent
# With a memory limit, kimaki writes a heap snapshot when it passes 85% of it:
#MemoryMax=2G

[Install]
WantedBy={wanted_by}
"""


def render_unit(
    *,
    python: str,
    data_dir: str,
    home: str,
    path: str,
    user: str | None,
) -> str:
    """The unit text; `user=None` renders a user unit (`systemctl --user`)."""
    exec_start = shlex.join([python, "-m", "kimaki", "--data-dir", data_dir])
    if user is None:
        hint = "save as ~/.config/systemd/user/kimaki.service; systemctl --user enable --now kimaki"
        user_line, wanted_by = "", "default.target"
    else:
        hint = "save as /etc/systemd/system/kimaki.service; systemctl enable --now kimaki"
        user_line, wanted_by = f"User={user}\n", "multi-user.target"
    return UNIT_TEMPLATE.format(
        install_hint=hint,
        data_dir=data_dir,
        exec_start=exec_start,
        path=path,
        home=home,
        user_line=user_line,
        wanted_by=wanted_by,
    )


def unit_for_current_user(data_dir: Path, *, user_unit: bool) -> str:
    """The unit for this interpreter, this user, this data dir and this PATH."""
    return render_unit(
        python=sys.executable,
        data_dir=str(data_dir),
        home=str(Path.home()),
        path=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        user=None if user_unit else getpass.getuser(),
    )
