"""Asking before acting: permission buttons and question menus, for one thread.

A permission request becomes a message naming the tool and what it wants, with Accept /
Accept always / Deny. The first allowed person to press one decides; the message is edited to
show the decision and who made it. Unanswered after the permission timeout, it is denied, and
the thread says so. A new message in the thread denies every open request (the person moved
on), before the turn is aborted.

A question becomes one message per question with a menu of its options; "Other…" opens a
form for a free answer. The answers go back together once every question has one: to the
engine session that asked (its own question tool), or to the agent's `ask` tool call that
asked (`ask_for_tool`, for agents without a question tool of their own). A new message ends
the questions: the engine's are rejected, a tool's get no answer (`None`, "dismissed").

The runtime never evicts a thread while something here waits for a person, and the typing
indicator pauses meanwhile (`waiting`).
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Sequence
from typing import Any, Final, Protocol, final

import attrs
import trio

from kimaki._audit import audit
from kimaki.agents import (
    EngineError,
    EngineSession,
    PermissionReply,
    PermissionRequested,
    Question,
    QuestionAsked,
)
from kimaki.discord.errors import RESTError
from kimaki.discord.models import (
    ActionRow,
    Button,
    ButtonStyle,
    Label,
    Message,
    SelectOption,
    StringSelect,
    TextInput,
    TextInputStyle,
    User,
)
from kimaki.discord.rest import Unset
from kimaki.threads._delivery import ThreadWriter
from kimaki.threads._render import format_duration

__all__ = [
    "NOT_VALID_HERE",
    "OTHER_VALUE",
    "AskContext",
    "AskREST",
    "Asks",
    "CustomIds",
    "format_permission",
]

log = logging.getLogger("kimaki.asks")

OTHER_VALUE: Final = "__other__"
NOT_VALID_HERE: Final = "This button is not valid here."
"""A known key with a choice its message never offered: altered, not expired."""
_REPLY_WORDS: Final[dict[str, str]] = {
    "once": "✅ Accepted",
    "always": "✅ Accepted always",
    "reject": "❌ Denied",
}
_REPLIES: Final[dict[str, PermissionReply]] = {
    "once": "once",
    "always": "always",
    "reject": "reject",
}
_PERMISSION_KIND: Final = "permission"
_QUESTION_KIND: Final = "question"
_QUESTION_OTHER_KIND: Final = "question-other"
# Keys outlive the wait a little, so a late click gets "no longer pending", not "expired".
_KEY_TTL_MARGIN: Final = 3600.0


class AskREST(Protocol):
    """The Discord call asks make besides posting (`kimaki.discord.rest.RESTClient` is one)."""

    async def edit_message(
        self,
        channel_id: int,
        message_id: int,
        *,
        content: str | Unset | None = ...,
        components: Sequence[ActionRow] | Unset | None = ...,
    ) -> Message: ...


class CustomIds(Protocol):
    """Makes the custom id of a button or menu posted in a channel (the bot's interactions
    keep what it stands for and route its clicks back here)."""

    async def custom_id(
        self, kind: str, channel_id: int, payload: Any, *, ttl: float = ...
    ) -> str: ...


class AskContext(Protocol):
    """A click, a menu choice or a form on an ask, and the ways to answer it (the bot's
    `InteractionContext` is one)."""

    @property
    def user(self) -> User: ...

    async def reply(self, content: str) -> None: ...

    async def update(
        self, content: str | Unset | None = ..., *, components: Sequence[ActionRow] | Unset = ...
    ) -> None: ...

    async def modal(
        self, custom_id: str, title: str, components: Sequence[Label | ActionRow]
    ) -> None: ...

    async def custom_id(self, kind: str, payload: Any) -> str: ...


def _code(text: str, width: int = 300) -> str:
    text = " ".join(text.split())
    if len(text) > width:
        text = text[: width - 1] + "…"
    return "`" + text.replace("`", "'") + "`"


def format_permission(request: PermissionRequested) -> str:
    """`🔐 **bash** wants permission: `git push`` and what "always" would allow."""
    lines = [f"🔐 **{request.permission}** wants permission"]
    what = ", ".join(_code(p) for p in request.patterns[:5]) or _code(request.title or "?")
    lines[0] += f": {what}"
    if request.title and request.patterns:
        lines.append(f"-# {request.title[:200]}")
    if request.always and tuple(request.always) != tuple(request.patterns):
        lines.append("Accept always allows: " + ", ".join(_code(p) for p in request.always[:5]))
    return "\n".join(lines)


@attrs.define
class _Permission:
    request: PermissionRequested
    session: EngineSession
    text: str
    message_id: int | None = None
    done: trio.Event = attrs.field(factory=trio.Event)
    timer: trio.CancelScope = attrs.field(factory=trio.CancelScope)


@final
@attrs.define
class _ToolReply:
    """Where a tool's questions are answered: the tool call waits on `done`."""

    answers: list[list[str]] | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    def settle(self, answers: list[list[str]] | None) -> None:
        self.answers = answers
        self.done.set()


@attrs.define
class _Questions:
    request_id: str
    questions: tuple[Question, ...]
    # Who asked: an engine session (its question tool), or a tool call of the agent's.
    asker: EngineSession | _ToolReply
    answers: list[tuple[str, ...] | None]
    message_ids: list[int | None]
    done: trio.Event = attrs.field(factory=trio.Event)


@final
class Asks:
    """The open permission requests and questions of one thread."""

    def __init__(
        self,
        thread_id: int,
        writer: ThreadWriter,
        *,
        rest: AskREST,
        custom_ids: CustomIds,
        permission_timeout: float,
        nursery: trio.Nursery,
    ) -> None:
        self._thread_id = thread_id
        self._writer = writer
        self._rest = rest
        self._custom_ids = custom_ids
        self._permission_timeout = permission_timeout
        # Where a decision made elsewhere is shown, off the turn's task (it outlives the turn).
        self._nursery = nursery
        self._permissions: dict[str, _Permission] = {}
        self._questions: dict[str, _Questions] = {}

    @property
    def waiting(self) -> bool:
        """Something waits for a person."""
        return bool(self._permissions or self._questions)

    # ---- permissions

    async def ask_permission(
        self, session: EngineSession, request: PermissionRequested, nursery: trio.Nursery
    ) -> None:
        """Post the buttons; the timeout runs in `nursery` (the turn's)."""
        timeout = self._permission_timeout
        custom = await self._custom_ids.custom_id(
            _PERMISSION_KIND,
            self._thread_id,
            {"request_id": request.request_id},
            ttl=timeout + _KEY_TTL_MARGIN,
        )
        pending = _Permission(request, session, format_permission(request))
        self._permissions[request.request_id] = pending
        audit(
            "permission.asked",
            thread_id=self._thread_id,
            request_id=request.request_id,
            permission=request.permission,
            title=request.title,
            patterns=list(request.patterns),
            always=list(request.always),
        )
        row = ActionRow(
            components=(
                Button(style=ButtonStyle.SUCCESS, label="Accept", custom_id=custom + "/once"),
                Button(
                    style=ButtonStyle.PRIMARY, label="Accept always", custom_id=custom + "/always"
                ),
                Button(style=ButtonStyle.DANGER, label="Deny", custom_id=custom + "/reject"),
            )
        )
        message = await self._writer.post(pending.text, components=[row])
        pending.message_id = message.id if message is not None else None
        nursery.start_soon(self._deny_when_unanswered, pending, timeout)

    async def _deny_when_unanswered(self, pending: _Permission, seconds: float) -> None:
        with pending.timer:
            await trio.sleep(seconds)
            waited = format_duration(seconds)
            with trio.CancelScope(shield=True):
                # The thread's line goes into the turn's buffer (only the turn task sends), so
                # it comes before whatever the agent does about the denial.
                self._writer.add(
                    f"⏱ The permission request was denied: nobody answered in {waited}."
                )
                await self._decide(pending, "reject", f"⏱ Denied: no answer in {waited}")

    async def on_permission_button(self, ctx: AskContext, request_id: str, reply: str) -> None:
        choice = _REPLIES.get(reply)
        if choice is None:
            # A real key with a choice its buttons never offered: the id was altered. Whether
            # the request is still pending is not this click's business.
            await ctx.reply(NOT_VALID_HERE)
            return
        pending = self._permissions.get(request_id)
        if pending is None:
            await ctx.reply("This permission request is no longer pending.")
            return
        word = _REPLY_WORDS[choice]
        name = ctx.user.display_name
        decided = await self._decide(pending, choice, f"{word} by {name}", ctx=ctx)
        if not decided:
            await ctx.reply("This permission request is no longer pending.")

    async def _decide(
        self,
        pending: _Permission,
        reply: PermissionReply,
        decision: str,
        *,
        ctx: AskContext | None = None,
    ) -> bool:
        """Send `reply` to the engine and show `decision`; False if it was already decided."""
        request_id = pending.request.request_id
        if self._permissions.get(request_id) is not pending:
            return False
        del self._permissions[request_id]
        pending.timer.cancel()
        pending.done.set()
        audit(
            "permission.answered",
            thread_id=self._thread_id,
            user_id=ctx.user.id if ctx is not None else None,
            request_id=request_id,
            permission=pending.request.permission,
            reply=reply,
            decision=decision,
        )
        try:
            await pending.session.reply_permission(request_id, reply)
        except EngineError as exc:
            log.warning("thread %d: answering permission failed: %s", self._thread_id, exc)
            decision += f" (the agent did not take the answer: {exc})"
        await self._show_decision(pending, decision, ctx)
        return True

    async def _show_decision(
        self, pending: _Permission, decision: str, ctx: AskContext | None
    ) -> None:
        content = f"{pending.text}\n**{decision}**"
        try:
            if ctx is not None:
                await ctx.update(content, components=[])
            elif pending.message_id is not None:
                await self._rest.edit_message(
                    self._thread_id, pending.message_id, content=content, components=[]
                )
        except RESTError as exc:
            log.warning("thread %d: could not show a decision: %s", self._thread_id, exc)

    def engine_resolved_permission(self, request_id: str) -> None:
        """The engine says the request is settled (answered elsewhere, or the turn ended)."""
        pending = self._permissions.pop(request_id, None)
        if pending is not None:
            audit(
                "permission.answered",
                thread_id=self._thread_id,
                request_id=request_id,
                permission=pending.request.permission,
                decision="answered elsewhere",
            )
            pending.timer.cancel()
            pending.done.set()
            self._nursery.start_soon(self._show_decision, pending, "Answered elsewhere", None)

    # ---- questions

    async def ask_questions(self, session: EngineSession, request: QuestionAsked) -> None:
        """The engine's questions: answered through `session` (the turn's task posts them)."""
        count = len(request.questions)
        pending = _Questions(
            request.request_id, tuple(request.questions), session, [None] * count, [None] * count
        )
        self._questions[request.request_id] = pending
        await self._post_questions(pending)

    async def ask_for_tool(self, questions: Sequence[Question]) -> list[list[str]] | None:
        """A tool call's questions, posted in the thread's order: the chosen labels per
        question, or None when a new message (or the turn's end) dismissed them. No timeout:
        a person answers when they can."""
        if not questions:
            return []
        count = len(questions)
        reply = _ToolReply()
        request_id = f"tool-{secrets.token_hex(8)}"
        pending = _Questions(request_id, tuple(questions), reply, [None] * count, [None] * count)
        self._questions[request_id] = pending
        try:
            async with self._writer.in_order():
                await self._post_questions(pending)
            await reply.done.wait()
        finally:
            if self._questions.get(request_id) is pending:
                # The call went away (its turn was cancelled): nobody waits for the answers.
                del self._questions[request_id]
                pending.done.set()
                with trio.CancelScope(shield=True):
                    await self._close_menus(pending)
        return reply.answers

    async def _post_questions(self, pending: _Questions) -> None:
        count = len(pending.questions)
        for index, question in enumerate(pending.questions):
            custom = await self._custom_ids.custom_id(
                _QUESTION_KIND,
                self._thread_id,
                {"request_id": pending.request_id, "index": index},
            )
            message = await self._writer.post(
                _question_text(question, index, count), components=[_menu(question, custom)]
            )
            pending.message_ids[index] = message.id if message is not None else None

    async def on_question_select(
        self, ctx: AskContext, request_id: str, index: int, values: Sequence[str]
    ) -> None:
        pending = self._questions.get(request_id)
        if pending is None or not 0 <= index < len(pending.answers):
            await ctx.reply("This question is no longer open.")
            return
        if OTHER_VALUE in values:
            custom = await ctx.custom_id(
                _QUESTION_OTHER_KIND, {"request_id": request_id, "index": index}
            )
            question = pending.questions[index]
            field = TextInput(
                custom_id="answer",
                style=TextInputStyle.PARAGRAPH,
                max_length=4000,
                required=True,
            )
            await ctx.modal(
                custom,
                question.header or "Your answer",
                [Label(label=_clip(question.question, 45), component=field)],
            )
            return
        options = pending.questions[index].options
        chosen = tuple(
            options[int(value)].label
            for value in values
            if value.isdigit() and int(value) < len(options)
        )
        if not chosen:
            await ctx.reply("Pick one of the options.")
            return
        await self._answer(ctx, pending, index, chosen)

    async def on_question_other(
        self, ctx: AskContext, request_id: str, index: int, text: str
    ) -> None:
        pending = self._questions.get(request_id)
        if pending is None or not 0 <= index < len(pending.answers):
            await ctx.reply("This question is no longer open.")
            return
        if not text.strip():
            await ctx.reply("An empty answer cannot be sent; pick an option or write something.")
            return
        await self._answer(ctx, pending, index, (text.strip(),))

    async def _answer(
        self, ctx: AskContext, pending: _Questions, index: int, chosen: tuple[str, ...]
    ) -> None:
        pending.answers[index] = chosen
        question = pending.questions[index]
        shown = ", ".join(_clip(answer, 200) for answer in chosen)
        content = (
            _question_text(question, index, len(pending.answers))
            + f"\n**→ {shown}** ({ctx.user.display_name})"
        )
        # The answered menu goes away, so nobody answers twice.
        await ctx.update(content, components=[])
        if any(answer is None for answer in pending.answers):
            return
        request_id = pending.request_id
        if self._questions.pop(request_id, None) is None:
            return
        pending.done.set()
        answers = [list(answer or ()) for answer in pending.answers]
        if isinstance(pending.asker, _ToolReply):
            pending.asker.settle(answers)
            return
        try:
            await pending.asker.answer_question(request_id, answers)
        except EngineError as exc:
            log.warning("thread %d: answering a question failed: %s", self._thread_id, exc)
            await ctx.reply(f"⚠️ The agent did not take the answers: {exc}")

    def engine_resolved_question(self, request_id: str) -> None:
        pending = self._questions.get(request_id)
        if pending is not None and not isinstance(pending.asker, _ToolReply):
            del self._questions[request_id]
            pending.done.set()

    # ---- the person moved on

    async def cancel_all(self, reason: str) -> None:
        """Deny open permission requests and end open questions (a new message came, or the
        turn ended): the engine's are rejected, a tool's dismissed."""
        for pending in list(self._permissions.values()):
            await self._decide(pending, "reject", f"❌ Denied: {reason}")
        for request_id, questions in list(self._questions.items()):
            del self._questions[request_id]
            questions.done.set()
            if isinstance(questions.asker, _ToolReply):
                questions.asker.settle(None)
            else:
                try:
                    await questions.asker.reject_question(request_id)
                except EngineError as exc:
                    log.warning("thread %d: rejecting a question failed: %s", self._thread_id, exc)
            await self._close_menus(questions)

    def dismiss_tool_questions(self) -> None:
        """A new message in the thread: a tool's open questions end unanswered (`None`) now,
        and their menus are closed meanwhile (the questions an engine asked stay: only the
        interrupted turn rejects them)."""
        for request_id, questions in list(self._questions.items()):
            if isinstance(questions.asker, _ToolReply):
                del self._questions[request_id]
                questions.done.set()
                questions.asker.settle(None)
                self._nursery.start_soon(self._close_menus, questions)

    async def _close_menus(self, questions: _Questions) -> None:
        for message_id in questions.message_ids:
            if message_id is None:
                continue
            with contextlib.suppress(RESTError):
                await self._rest.edit_message(self._thread_id, message_id, components=[])


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _question_text(question: Question, index: int, count: int) -> str:
    head = f"❓ **{question.header}**" if question.header else "❓"
    if count > 1:
        head += f" ({index + 1}/{count})"
    return f"{head}\n{question.question[:1800]}"


def _menu(question: Question, custom_id: str) -> ActionRow:
    limit = 24 if question.custom else 25
    options = [
        SelectOption(
            label=_clip(option.label, 100),
            value=str(position),
            description=_clip(option.description, 100) if option.description else None,
        )
        for position, option in enumerate(question.options[:limit])
    ]
    if question.custom or not options:
        options.append(
            SelectOption(label="Other…", value=OTHER_VALUE, description="Write your own answer")
        )
    multiple = question.multiple and len(options) > 1
    select = StringSelect(
        custom_id=custom_id,
        options=tuple(options),
        placeholder="Choose…" if not multiple else "Choose one or more…",
        min_values=1,
        max_values=len(options) if multiple else 1,
    )
    return ActionRow(components=(select,))
