"""The thread pipeline: a routed message's prompt → the thread's runtime → its turn in an engine
session → rendered → delivered to the Discord thread, in order.

```
Threads ............ the door: opens threads, keeps their records, owns the runtimes
├─ ThreadRuntimes .. one ThreadRuntime per active thread: prompts served one at a time in
│                    arrival order; abort on a new message; messages joining a prompt the
│                    engine does not have yet; queueing; idle eviction        (_runtime)
├─ ThreadTurns ..... the TurnHandler a runtime drives: engine session, attachments (_turn,
│                    _attachments), Renderer (_render) → ThreadWriter (_delivery), Asks (_asks)
└─ ThreadTools ..... a thread as agent tools see it (`tool_context`), writing through the
                     same ThreadWriter in order; ToolButtons, the buttons tools posted (_tools)
```

The pipeline is handed what it uses, as narrow protocols defined where they are consumed (the
REST calls, the store's facets, the handled-events record, the engines, the custom ids of the
bot's interactions) and `ThreadSettings`; it never sees the bot, and it knows engines only
through `kimaki.agents`' engine interface. A routed message's `Place` (its project channel and
thread records) travels with its prompt, so the turn does not read them again. The capabilities
that take part in every turn (memory, usage, audit) are `kimaki.turn_hooks.TurnHook`s handed to
`Threads(hooks=...)`.
"""

from __future__ import annotations

from kimaki.threads._asks import (
    NOT_VALID_HERE,
    OTHER_VALUE,
    AskContext,
    AskREST,
    Asks,
    CustomIds,
    format_permission,
)
from kimaki.threads._attachments import (
    AttachmentInfo,
    PreparedAttachments,
    prepare_attachments,
)
from kimaki.threads._delivery import MessagePoster, ThreadWriter
from kimaki.threads._prompt import (
    Place,
    Prompt,
    PromptDone,
    PromptFile,
    PromptOutcome,
    PromptSource,
    PromptStatus,
    QuotedMessage,
)
from kimaki.threads._render import VERBOSITY_LEVELS, Verbosity
from kimaki.threads._runtime import (
    RuntimeStatistics,
    ThreadRuntime,
    ThreadRuntimes,
    TurnHandler,
    TurnHandlerFactory,
)
from kimaki.threads._settings import ThreadSettings
from kimaki.threads._threads import (
    EngineRegistry,
    RestartHandover,
    ThreadPlaces,
    Threads,
    ThreadsREST,
    thread_name,
)
from kimaki.threads._tools import (
    BUTTONS_GONE,
    TOOL_BUTTON_KIND,
    ThreadTools,
    ToolButtons,
    ToolREST,
    pressed_text,
)
from kimaki.threads._turn import (
    INTERRUPTED,
    EngineLookup,
    ThreadRecords,
    ThreadTurns,
    TurnHandover,
    TurnPreferences,
    TurnREST,
    TurnServices,
    TurnStart,
    compose_prompt,
    decode_sent_prompt,
    encode_sent_prompt,
)

__all__ = [
    "BUTTONS_GONE",
    "INTERRUPTED",
    "NOT_VALID_HERE",
    "OTHER_VALUE",
    "TOOL_BUTTON_KIND",
    "VERBOSITY_LEVELS",
    "AskContext",
    "AskREST",
    "Asks",
    "AttachmentInfo",
    "CustomIds",
    "EngineLookup",
    "EngineRegistry",
    "MessagePoster",
    "Place",
    "PreparedAttachments",
    "Prompt",
    "PromptDone",
    "PromptFile",
    "PromptOutcome",
    "PromptSource",
    "PromptStatus",
    "QuotedMessage",
    "RestartHandover",
    "RuntimeStatistics",
    "ThreadPlaces",
    "ThreadRecords",
    "ThreadRuntime",
    "ThreadRuntimes",
    "ThreadSettings",
    "ThreadTools",
    "ThreadTurns",
    "ThreadWriter",
    "Threads",
    "ThreadsREST",
    "ToolButtons",
    "ToolREST",
    "TurnHandler",
    "TurnHandlerFactory",
    "TurnHandover",
    "TurnPreferences",
    "TurnREST",
    "TurnServices",
    "TurnStart",
    "Verbosity",
    "compose_prompt",
    "decode_sent_prompt",
    "encode_sent_prompt",
    "format_permission",
    "prepare_attachments",
    "pressed_text",
    "thread_name",
]
