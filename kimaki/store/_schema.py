"""The schema, as a list of forward-only migrations.

`PRAGMA user_version` holds how many migrations a database file has had. A migration is never
edited once released: a change to the schema is a new entry at the end of `MIGRATIONS`, and the
tests migrate a database from every earlier version to the latest.
"""

from __future__ import annotations

import sqlite3
from typing import Final

__all__ = ["LATEST_VERSION", "MIGRATIONS", "migrate", "schema_version"]

MIGRATIONS: Final[tuple[str, ...]] = (
    # 1: the tables the seeds name.
    """
    CREATE TABLE channels (
        channel_id INTEGER PRIMARY KEY,
        directory TEXT NOT NULL,
        channel_type TEXT NOT NULL DEFAULT 'text' CHECK (channel_type IN ('text', 'voice')),
        guild_id INTEGER NOT NULL,
        app_id INTEGER NOT NULL,
        engine TEXT,
        verbosity TEXT,
        auto_worktrees INTEGER NOT NULL DEFAULT 0,
        created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );
    CREATE INDEX channels_by_app ON channels (app_id, guild_id);

    CREATE TABLE threads (
        thread_id INTEGER PRIMARY KEY,
        channel_id INTEGER REFERENCES channels (channel_id) ON DELETE SET NULL,
        session_id TEXT NOT NULL,
        engine TEXT NOT NULL,
        directory TEXT NOT NULL,
        created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
        updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );
    CREATE INDEX threads_by_session ON threads (session_id);

    CREATE TABLE worktrees (
        thread_id INTEGER PRIMARY KEY,
        project_directory TEXT NOT NULL,
        directory TEXT NOT NULL UNIQUE,
        branch TEXT NOT NULL,
        base_branch TEXT,
        created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );

    CREATE TABLE preferences (
        scope TEXT NOT NULL CHECK (scope IN ('session', 'channel', 'global')),
        scope_id TEXT NOT NULL,
        model TEXT,
        agent TEXT,
        PRIMARY KEY (scope, scope_id)
    );

    CREATE TABLE scheduled_tasks (
        task_id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id INTEGER NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
        thread_id INTEGER,
        prompt TEXT NOT NULL,
        schedule TEXT,
        next_run_at REAL NOT NULL,
        created_by INTEGER NOT NULL,
        enabled INTEGER NOT NULL DEFAULT 1,
        created_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );
    CREATE INDEX scheduled_tasks_due ON scheduled_tasks (enabled, next_run_at);

    CREATE TABLE bot_credentials (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        token TEXT NOT NULL,
        updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );

    CREATE TABLE gateway_session (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        session_id TEXT NOT NULL,
        sequence INTEGER,
        resume_url TEXT NOT NULL,
        updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );
    """,
    # 2: keys that Discord buttons and menus carry in their custom ids. A key is random and
    # bound to one thread, so a custom id copied into another thread's interaction is refused.
    """
    CREATE TABLE interaction_keys (
        key TEXT PRIMARY KEY,
        thread_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        payload TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE INDEX interaction_keys_by_thread ON interaction_keys (thread_id);
    """,
    # 3: what an in-place restart (SIGUSR2) hands to the next process. Agent servers keep
    # running across the exec; running turns are continued; parts already posted to Discord
    # are remembered so a continued turn does not post them again.
    """
    CREATE TABLE agent_servers (
        engine TEXT NOT NULL,
        directory TEXT NOT NULL,
        pid INTEGER NOT NULL,
        port INTEGER NOT NULL,
        password TEXT NOT NULL,
        started_at REAL NOT NULL,
        stdout_fd INTEGER,
        stderr_fd INTEGER,
        PRIMARY KEY (engine, directory)
    );

    CREATE TABLE running_turns (
        thread_id INTEGER PRIMARY KEY,
        session_id TEXT NOT NULL,
        turn_id TEXT NOT NULL,
        started_at REAL NOT NULL,
        prompt_message_id INTEGER
    );

    CREATE TABLE queued_prompts (
        thread_id INTEGER NOT NULL,
        position INTEGER NOT NULL,
        payload TEXT NOT NULL,
        PRIMARY KEY (thread_id, position)
    );

    CREATE TABLE posted_parts (
        thread_id INTEGER NOT NULL,
        part_id TEXT NOT NULL,
        message_id INTEGER,
        posted_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
        PRIMARY KEY (thread_id, part_id)
    );
    """,
    # 4: the gateway events the bot acted on (messages, interactions), by their snowflake id,
    # so a replayed event (a RESUME from a stale sequence after a crash) changes nothing.
    # Swept by age: Discord replays only what a resumable session still holds.
    """
    CREATE TABLE handled_events (
        event_id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        handled_at REAL NOT NULL
    );
    CREATE INDEX handled_events_by_age ON handled_events (handled_at);
    """,
    # 5: a running turn is recorded before its prompt is sent, with the prompt, so a daemon
    # killed during the send can send it again when the agent never got it.
    """
    ALTER TABLE running_turns ADD COLUMN prompt TEXT;
    """,
    # 6: the MCP policy: per project channel (its threads inherit it), which MCP servers of the
    # catalog its agents get, with every tool ('all') or a list of them ('some'); no row means
    # the server is off. The servers' tools as last scanned, with the time, for `/mcp`.
    """
    CREATE TABLE mcp_policies (
        channel_id INTEGER NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
        server TEXT NOT NULL,
        mode TEXT NOT NULL CHECK (mode IN ('all', 'some')),
        tools TEXT NOT NULL DEFAULT '[]',
        updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0),
        PRIMARY KEY (channel_id, server)
    );

    CREATE TABLE mcp_scans (
        server TEXT PRIMARY KEY,
        tools TEXT NOT NULL,
        scanned_at REAL NOT NULL
    );
    """,
    # 7: scheduling. A task has a name, a kind ('prompt' to an agent, 'remind' posted with no
    # agent, 'wake' ending an agent's sleep), the cron expression's timezone, who made it, how
    # its runs reach Discord, a pause, and how its last run went; every run is kept in
    # task_runs (its start, end, status, error, thread, and how late it was).
    """
    ALTER TABLE scheduled_tasks ADD COLUMN name TEXT NOT NULL DEFAULT '';
    ALTER TABLE scheduled_tasks ADD COLUMN kind TEXT NOT NULL DEFAULT 'prompt'
        CHECK (kind IN ('prompt', 'remind', 'wake'));
    ALTER TABLE scheduled_tasks ADD COLUMN tz TEXT;
    ALTER TABLE scheduled_tasks ADD COLUMN created_by_name TEXT NOT NULL DEFAULT '';
    ALTER TABLE scheduled_tasks ADD COLUMN reuse_thread INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE scheduled_tasks ADD COLUMN mention_user_id INTEGER;
    ALTER TABLE scheduled_tasks ADD COLUMN agent TEXT;
    ALTER TABLE scheduled_tasks ADD COLUMN model TEXT;
    ALTER TABLE scheduled_tasks ADD COLUMN worktree TEXT;
    ALTER TABLE scheduled_tasks ADD COLUMN paused INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE scheduled_tasks ADD COLUMN last_run_at REAL;
    ALTER TABLE scheduled_tasks ADD COLUMN last_status TEXT;
    CREATE INDEX scheduled_tasks_by_thread ON scheduled_tasks (thread_id);

    CREATE TABLE task_runs (
        run_id INTEGER PRIMARY KEY AUTOINCREMENT,
        task_id INTEGER NOT NULL REFERENCES scheduled_tasks (task_id) ON DELETE CASCADE,
        started_at REAL NOT NULL,
        ended_at REAL,
        status TEXT NOT NULL,
        error TEXT,
        thread_id INTEGER,
        late_by REAL NOT NULL DEFAULT 0
    );
    CREATE INDEX task_runs_by_task ON task_runs (task_id, started_at);
    CREATE INDEX task_runs_by_status ON task_runs (status);
    """,
    # 8: channel memory: a project channel's standing instructions for its agents, in the
    # order they are listed (position), with who added them and when; they go with their
    # channel. And the per-channel switch for the recent-conversation block a new thread's
    # first prompt gets (no row: on).
    """
    CREATE TABLE memory_entries (
        entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel_id INTEGER NOT NULL REFERENCES channels (channel_id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        text TEXT NOT NULL,
        author_id INTEGER NOT NULL DEFAULT 0,
        author_name TEXT NOT NULL DEFAULT '',
        added_at REAL NOT NULL
    );
    CREATE INDEX memory_entries_by_channel ON memory_entries (channel_id, position);

    CREATE TABLE thread_context (
        channel_id INTEGER PRIMARY KEY REFERENCES channels (channel_id) ON DELETE CASCADE,
        enabled INTEGER NOT NULL
    );
    """,
    # v9: usage per turn and budgets. One row per finished turn, as the engine reported it (no
    # foreign keys: the history outlives a removed channel or thread); `session_cost` is the
    # running total an ACP agent reports, kept to take the next turn's difference from.
    # `budgets.warned_period` is the start of the period whose 80 % warning was said.
    """
    CREATE TABLE usage_turns (
        row_id INTEGER PRIMARY KEY AUTOINCREMENT,
        started_at REAL NOT NULL,
        ended_at REAL NOT NULL,
        thread_id INTEGER NOT NULL,
        channel_id INTEGER,
        session_id TEXT NOT NULL,
        engine TEXT NOT NULL,
        model TEXT,
        person_id INTEGER NOT NULL,
        source TEXT NOT NULL,
        input_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        reasoning_tokens INTEGER NOT NULL DEFAULT 0,
        cache_read_tokens INTEGER NOT NULL DEFAULT 0,
        cache_write_tokens INTEGER NOT NULL DEFAULT 0,
        cost REAL NOT NULL DEFAULT 0,
        session_cost REAL,
        credits REAL,
        context_used INTEGER,
        context_limit INTEGER,
        seconds REAL NOT NULL,
        stop_reason TEXT NOT NULL
    );
    CREATE INDEX usage_turns_by_time ON usage_turns (ended_at);
    CREATE INDEX usage_turns_by_channel ON usage_turns (channel_id, ended_at);
    CREATE INDEX usage_turns_by_session ON usage_turns (session_id, row_id);
    CREATE TABLE budgets (
        channel_id INTEGER PRIMARY KEY,
        amount REAL NOT NULL,
        period TEXT NOT NULL,
        set_at REAL NOT NULL,
        set_by INTEGER NOT NULL,
        warned_period REAL
    );
    """,
    # 10: the transcription service's key set with `/transcription-key` (at most one, like the
    # bot token), and which provider it is for.
    """
    CREATE TABLE transcription_credentials (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        provider TEXT NOT NULL,
        api_key TEXT NOT NULL,
        updated_at REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
    );
    """,
)

LATEST_VERSION: Final = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection, *, target: int = LATEST_VERSION) -> int:
    """Apply the migrations after the file's version up to `target`; return the new version.

    Each migration and its version bump commit together, so a crash mid-way leaves the file at
    a version it really has. A file newer than this code is refused rather than guessed at.
    """
    current = schema_version(conn)
    if current > LATEST_VERSION:
        raise ValueError(
            f"the database is at schema version {current}, newer than this kimaki knows "
            f"({LATEST_VERSION}); upgrade kimaki"
        )
    for version in range(current, target):
        # executescript commits any open transaction first; BEGIN makes the pair atomic.
        conn.executescript(
            f"BEGIN;\n{MIGRATIONS[version]}\nPRAGMA user_version = {version + 1};\nCOMMIT;"
        )
    return schema_version(conn)
