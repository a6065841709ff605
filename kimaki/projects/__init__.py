"""Project channels: a folder on this machine ⇄ a Discord text channel (and a voice channel).

The slash commands (`/add-project`, `/create-new-project`, `/remove-project`) and the shell
(`kimaki project add|list|remove`) share this code. The shell reaches a running daemon through
its lock port (`install_project_routes`), so the daemon's own REST client and rate limits do
the work; with no daemon it talks to Discord and the store itself (`open_direct_projects`).

Text channels go under the category "Kimaki", voice channels under "Kimaki Audio" (each made
when missing); a channel is named after the folder (`[a-z0-9-]`). The mapping lives in the
store (`ChannelRecord`, with this bot's application id), never in a channel topic. Removing a
project unmaps it; its Discord channels are deleted only when asked, and files never are.

This package sits below the bot and knows nothing of it: `Projects` takes the pieces it uses
(a `ProjectStore`, a `ProjectREST`, the bot's ids and folders, a guild-ids lookup), and whoever
runs it (the daemon, a slash command, the shell) hands those over. One private module per job:

```
_operations ... Projects (add, create, list, remove), channel names, folder checks
_routes ....... install_project_routes: the daemon's side of the lock port
_client ....... ProjectsClient, connect_to_daemon, open_direct_projects: the shell's side
_shapes ....... AddedProject and the JSON both sides of the lock port speak; the token file
_errors ....... the error tree below, and Discord's refusals translated into it
```

```
KimakiError
└── ProjectError ............. base; `str()` is the message for the person
    ├── InvalidProjectError .. the folder is missing, is not a directory, or holds the data dir
    ├── ProjectNotFoundError . no project of this bot has that channel
    └── GuildChoiceError ..... which guild is unclear (the bot is in several, or in none known)
```
"""

from __future__ import annotations

from kimaki.projects._client import ProjectsClient, connect_to_daemon, open_direct_projects
from kimaki.projects._errors import (
    GuildChoiceError,
    InvalidProjectError,
    ProjectError,
    ProjectNotFoundError,
)
from kimaki.projects._operations import (
    TEXT_CATEGORY,
    VOICE_CATEGORY,
    GuildIds,
    ProjectREST,
    Projects,
    ProjectStore,
    channel_name,
    shown_path,
)
from kimaki.projects._routes import install_project_routes
from kimaki.projects._shapes import CONTROL_TOKEN_FILE, AddedProject, record_from_json, record_json

__all__ = [
    "CONTROL_TOKEN_FILE",
    "TEXT_CATEGORY",
    "VOICE_CATEGORY",
    "AddedProject",
    "GuildChoiceError",
    "GuildIds",
    "InvalidProjectError",
    "ProjectError",
    "ProjectNotFoundError",
    "ProjectREST",
    "ProjectStore",
    "Projects",
    "ProjectsClient",
    "channel_name",
    "connect_to_daemon",
    "install_project_routes",
    "open_direct_projects",
    "record_from_json",
    "record_json",
    "shown_path",
]
