"""The composition root of the bot: every part built once, each handed only what it uses.

Nothing else in the bot builds a part, and no part is handed the whole bot: the router, the
interactions, each command group, the thread pipeline, the handled events and the key sweeper
take narrow protocols, defined in their own modules, that the store's facets, the REST client,
the guild cache, the engines and the other parts satisfy. Reading this function is reading who
uses what.
"""

from __future__ import annotations

from collections.abc import Callable

from kimaki.audit import AuditTurnHook
from kimaki.bot._ask_buttons import install_ask_buttons
from kimaki.bot._bot import Bot, BotConfig
from kimaki.bot._engines import Engines
from kimaki.bot._handled import HandledEvents
from kimaki.bot._interactions import Interactions
from kimaki.bot._places import ProjectPlaces
from kimaki.bot._router import Router
from kimaki.bot._schedule_target import ThreadRunTarget
from kimaki.bot._tool_buttons import install_tool_buttons
from kimaki.bot.commands import (
    AuditAsker,
    AuditCommands,
    AuditReader,
    EngineCommands,
    GuildOwners,
    MaintenanceCommands,
    McpCommands,
    McpPolicyDoor,
    MemoryCommands,
    PreferenceCommands,
    ProjectCommands,
    ScheduleCommands,
    ScheduleDoor,
    SessionCommands,
    UsageCommands,
    VoiceCommands,
    WorktreeCommands,
    install_commands,
)
from kimaki.channel_memory import ChannelMemory, MemoryHook
from kimaki.discord.rest import RESTClient
from kimaki.guilds import GuildCache
from kimaki.projects import Projects
from kimaki.schedules import Schedules, resolve_timezone
from kimaki.store import Store
from kimaki.threads import Threads
from kimaki.usage import UsageLedger
from kimaki.voice import Transcriber

__all__ = ["compose_bot"]


def compose_bot(
    *,
    rest: RESTClient,
    store: Store,
    guilds: GuildCache,
    application_id: int,
    bot_user_id: int,
    engines: Engines,
    mcp: McpPolicyDoor,
    config: BotConfig,
    current_sequence: Callable[[], int | None] = lambda: None,
    schedule_commands_door: ScheduleDoor | None = None,
    audit_reader: AuditReader | None = None,
    audit_asker: AuditAsker | None = None,
) -> Bot:
    """The bot's parts, wired; `current_sequence` is the dispatcher's (for held messages).
    `schedule_commands_door` replaces the scheduler behind `/schedule`, `/remind` and `/tasks`
    only (the commands' tests drive a fake one); the runner is always the real one."""
    handled = HandledEvents(store.handled, current_sequence=current_sequence)
    places = ProjectPlaces(records=store.places, channels=guilds, application_id=application_id)
    interactions = Interactions(
        rest=rest,
        application_id=application_id,
        handled=handled,
        guilds=guilds,
        projects=places,
        keys=store.keys,
    )
    usage = UsageLedger(
        store=store.usage,
        owners=GuildOwners(guilds=guilds, members=rest),
        zone=resolve_timezone(config.usage_timezone),
    )
    memory = ChannelMemory(
        records=store.memory,
        limit_bytes=config.memory_limit_bytes,
        rest=rest,
        custom_ids=interactions,
    )
    memory_hook = MemoryHook(
        memory,
        rest,
        context_messages=config.thread_context_messages,
        context_chars=config.thread_context_chars,
    )
    threads = Threads(
        rest=rest,
        places=store.places,
        preferences=store.preferences,
        handover=store.handover,
        handled=handled,
        engines=engines,
        custom_ids=interactions,
        settings=config.thread_settings,
        hooks=(memory_hook, usage, AuditTurnHook()),  # order: memory, usage, audit
    )
    install_ask_buttons(interactions, threads)
    install_tool_buttons(interactions, threads)
    schedules = Schedules(
        store=store.schedules,
        target=ThreadRunTarget(
            threads=threads, places=store.places, rest=rest, worktrees_dir=config.worktrees_dir
        ),
        run_time_limit=config.task_time_limit,
        grace=config.task_grace,
    )
    transcriber = Transcriber(settings=config.transcription, keys=store.credentials, downloads=rest)
    router = Router(
        bot_user_id=bot_user_id,
        places=places,
        guilds=guilds,
        handled=handled,
        threads=threads,
        rest=rest,
        arrivals=schedules,  # a person's message in a thread ends its agent's sleep
        voice=transcriber,  # voice messages become prompts
    )
    projects = Projects(
        rest=rest,
        store=store.places,
        app_id=application_id,
        data_dir=config.data_dir,
        projects_dir=config.projects_dir,
        guild_ids=guilds.guild_ids,
    )
    install_commands(
        interactions,
        (
            ProjectCommands(
                projects=projects,
                engines=engines,
                records=store.places,
                channels=guilds,
                keys=store.keys,
            ),
            SessionCommands(
                threads=threads,
                engines=engines,
                records=store.places,
                preferences=store.preferences,
                rest=rest,
                channels=guilds,
                handled=handled,
            ),
            PreferenceCommands(
                threads=threads,
                engines=engines,
                records=store.places,
                preferences=store.preferences,
                keys=store.keys,
            ),
            MaintenanceCommands(
                threads=threads,
                engines=engines,
                preferences=store.preferences,
                data_dir=config.data_dir,
            ),
            WorktreeCommands(
                threads=threads,
                records=store.places,
                keys=store.keys,
                rest=rest,
                worktrees_dir=config.worktrees_dir,
                application_id=application_id,
            ),
            EngineCommands(engines=engines, records=store.places, threads=threads),
            McpCommands(policies=mcp, rest=rest, keys=store.keys),
            MemoryCommands(memory=memory, keys=store.keys),
            UsageCommands(usage=usage, guilds=guilds),
            AuditCommands(reader=audit_reader, guilds=guilds, asker=audit_asker),
            ScheduleCommands(
                schedules=schedule_commands_door or schedules,
                channels=store.places,
                guilds=guilds,
                keys=store.keys,
            ),
            VoiceCommands(transcriber=transcriber, keys=store.credentials, guilds=guilds),
        ),
    )
    return Bot(
        router=router,
        interactions=interactions,
        threads=threads,
        handled=handled,
        projects=projects,
        keys=store.keys,
        schedules=schedules,
        channel_memory=memory,
        key_sweep_interval=config.key_sweep_interval,
    )
