"""Typed Discord objects, converted to and from JSON by one cattrs converter.

Only what kimaki reads is modelled; every other field Discord sends is ignored, so a new
Discord field never breaks parsing. Conventions:

- Snowflakes are `int` (Discord sends strings; `int()` takes them). When sent back they are
  written as strings again, as the API schema asks (`SNOWFLAKE` field metadata marks them).
- Permission bitfields (strings in JSON) become `Permissions`; they are sent as integers.
- Enums are open: a value this code does not know yet (a new channel or component type)
  becomes a pseudo-member named `UNKNOWN_<n>` instead of an error.
- A missing optional field takes a default (`None`, `0`, `()`, `False`).

`structure(data, cls)` is the one entry point for parsing; anything malformed raises
`ModelError`, which the dispatcher logs and skips. `unstructure(obj)` writes the JSON Discord
expects for a request (fields left at their default are omitted).

`permissions_for()` computes a member's permissions in a channel the way Discord documents it.
"""

from __future__ import annotations

import enum
import functools
import operator
import types
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TypeVar, final

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from kimaki.discord.errors import ModelError

__all__ = [
    "ALL_PERMISSIONS",
    "ActionRow",
    "AllowedMentions",
    "Application",
    "ApplicationCommand",
    "ApplicationCommandOption",
    "ApplicationCommandOptionType",
    "ApplicationCommandType",
    "Attachment",
    "Button",
    "ButtonStyle",
    "Channel",
    "ChannelType",
    "CommandChoice",
    "CommandInteractionOption",
    "Component",
    "ComponentType",
    "Emoji",
    "Guild",
    "Interaction",
    "InteractionCallbackType",
    "InteractionData",
    "InteractionType",
    "Label",
    "Member",
    "Message",
    "MessageFlags",
    "MessageHead",
    "MessageReference",
    "MessageType",
    "ModelError",
    "OverwriteType",
    "PermissionOverwrite",
    "Permissions",
    "Resolved",
    "Role",
    "SelectOption",
    "StringSelect",
    "TextInput",
    "TextInputStyle",
    "ThreadMetadata",
    "UnknownComponent",
    "User",
    "compute_permissions",
    "converter",
    "permissions_for",
    "structure",
    "unstructure",
]

T = TypeVar("T")
E = TypeVar("E", bound="_OpenEnum")

JSONObject = dict[str, Any]
OptionValue = str | int | float | bool | None

# Field metadata: the field holds a snowflake (or a tuple of them), written as strings.
SNOWFLAKE: Final = "kimaki.snowflake"
# Field metadata: always write the field, even at its default (e.g. `parse: []` matters).
ALWAYS: Final = "kimaki.always"


def _snowflake(**kwargs: Any) -> Any:
    return attrs.field(metadata={SNOWFLAKE: True}, **kwargs)


# --------------------------------------------------------------------------- enums


class _OpenEnum(enum.IntEnum):
    """An IntEnum that turns unknown values into pseudo-members instead of raising."""

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, int) or isinstance(value, bool):
            return None
        member = int.__new__(cls, value)
        member._name_ = f"UNKNOWN_{value}"
        member._value_ = value
        return member


class ChannelType(_OpenEnum):
    GUILD_TEXT = 0
    DM = 1
    GUILD_VOICE = 2
    GROUP_DM = 3
    GUILD_CATEGORY = 4
    GUILD_ANNOUNCEMENT = 5
    ANNOUNCEMENT_THREAD = 10
    PUBLIC_THREAD = 11
    PRIVATE_THREAD = 12
    GUILD_STAGE_VOICE = 13
    GUILD_DIRECTORY = 14
    GUILD_FORUM = 15
    GUILD_MEDIA = 16


THREAD_TYPES: Final = frozenset(
    {ChannelType.ANNOUNCEMENT_THREAD, ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD}
)


class MessageType(_OpenEnum):
    DEFAULT = 0
    RECIPIENT_ADD = 1
    RECIPIENT_REMOVE = 2
    CALL = 3
    CHANNEL_NAME_CHANGE = 4
    CHANNEL_ICON_CHANGE = 5
    CHANNEL_PINNED_MESSAGE = 6
    USER_JOIN = 7
    THREAD_CREATED = 18
    REPLY = 19
    CHAT_INPUT_COMMAND = 20
    THREAD_STARTER_MESSAGE = 21
    CONTEXT_MENU_COMMAND = 23


class InteractionType(_OpenEnum):
    PING = 1
    APPLICATION_COMMAND = 2
    MESSAGE_COMPONENT = 3
    APPLICATION_COMMAND_AUTOCOMPLETE = 4
    MODAL_SUBMIT = 5


class InteractionCallbackType(_OpenEnum):
    PONG = 1
    CHANNEL_MESSAGE_WITH_SOURCE = 4
    DEFERRED_CHANNEL_MESSAGE_WITH_SOURCE = 5
    DEFERRED_UPDATE_MESSAGE = 6
    UPDATE_MESSAGE = 7
    APPLICATION_COMMAND_AUTOCOMPLETE_RESULT = 8
    MODAL = 9
    LAUNCH_ACTIVITY = 12


class ComponentType(_OpenEnum):
    ACTION_ROW = 1
    BUTTON = 2
    STRING_SELECT = 3
    TEXT_INPUT = 4
    USER_SELECT = 5
    ROLE_SELECT = 6
    MENTIONABLE_SELECT = 7
    CHANNEL_SELECT = 8
    SECTION = 9
    TEXT_DISPLAY = 10
    THUMBNAIL = 11
    MEDIA_GALLERY = 12
    FILE = 13
    SEPARATOR = 14
    CONTAINER = 17
    LABEL = 18


class ButtonStyle(_OpenEnum):
    PRIMARY = 1
    SECONDARY = 2
    SUCCESS = 3
    DANGER = 4
    LINK = 5
    PREMIUM = 6


class TextInputStyle(_OpenEnum):
    SHORT = 1
    PARAGRAPH = 2


class ApplicationCommandType(_OpenEnum):
    CHAT_INPUT = 1
    USER = 2
    MESSAGE = 3
    PRIMARY_ENTRY_POINT = 4


class ApplicationCommandOptionType(_OpenEnum):
    SUB_COMMAND = 1
    SUB_COMMAND_GROUP = 2
    STRING = 3
    INTEGER = 4
    BOOLEAN = 5
    USER = 6
    CHANNEL = 7
    ROLE = 8
    MENTIONABLE = 9
    NUMBER = 10
    ATTACHMENT = 11


class OverwriteType(_OpenEnum):
    ROLE = 0
    MEMBER = 1


class MessageFlags(enum.IntFlag):
    NONE = 0
    CROSSPOSTED = 1 << 0
    IS_CROSSPOST = 1 << 1
    SUPPRESS_EMBEDS = 1 << 2
    SOURCE_MESSAGE_DELETED = 1 << 3
    URGENT = 1 << 4
    HAS_THREAD = 1 << 5
    EPHEMERAL = 1 << 6
    LOADING = 1 << 7
    FAILED_TO_MENTION_SOME_ROLES_IN_THREAD = 1 << 8
    SUPPRESS_NOTIFICATIONS = 1 << 12
    IS_VOICE_MESSAGE = 1 << 13
    HAS_SNAPSHOT = 1 << 14
    IS_COMPONENTS_V2 = 1 << 15


class Permissions(enum.IntFlag):
    NONE = 0
    CREATE_INSTANT_INVITE = 1 << 0
    KICK_MEMBERS = 1 << 1
    BAN_MEMBERS = 1 << 2
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_AUDIT_LOG = 1 << 7
    PRIORITY_SPEAKER = 1 << 8
    STREAM = 1 << 9
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    SEND_TTS_MESSAGES = 1 << 12
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    MENTION_EVERYONE = 1 << 17
    USE_EXTERNAL_EMOJIS = 1 << 18
    VIEW_GUILD_INSIGHTS = 1 << 19
    CONNECT = 1 << 20
    SPEAK = 1 << 21
    MUTE_MEMBERS = 1 << 22
    DEAFEN_MEMBERS = 1 << 23
    MOVE_MEMBERS = 1 << 24
    USE_VAD = 1 << 25
    CHANGE_NICKNAME = 1 << 26
    MANAGE_NICKNAMES = 1 << 27
    MANAGE_ROLES = 1 << 28
    MANAGE_WEBHOOKS = 1 << 29
    MANAGE_GUILD_EXPRESSIONS = 1 << 30
    USE_APPLICATION_COMMANDS = 1 << 31
    REQUEST_TO_SPEAK = 1 << 32
    MANAGE_EVENTS = 1 << 33
    MANAGE_THREADS = 1 << 34
    CREATE_PUBLIC_THREADS = 1 << 35
    CREATE_PRIVATE_THREADS = 1 << 36
    USE_EXTERNAL_STICKERS = 1 << 37
    SEND_MESSAGES_IN_THREADS = 1 << 38
    USE_EMBEDDED_ACTIVITIES = 1 << 39
    MODERATE_MEMBERS = 1 << 40
    VIEW_CREATOR_MONETIZATION_ANALYTICS = 1 << 41
    USE_SOUNDBOARD = 1 << 42
    CREATE_GUILD_EXPRESSIONS = 1 << 43
    CREATE_EVENTS = 1 << 44
    USE_EXTERNAL_SOUNDS = 1 << 45
    SEND_VOICE_MESSAGES = 1 << 46
    SEND_POLLS = 1 << 49
    USE_EXTERNAL_APPS = 1 << 50


ALL_PERMISSIONS: Final = functools.reduce(operator.or_, Permissions, Permissions.NONE)


# --------------------------------------------------------------------------- objects


@final
@attrs.frozen
class User:
    id: int
    username: str = ""
    discriminator: str = "0"
    global_name: str | None = None
    avatar: str | None = None
    bot: bool = False
    system: bool = False

    @property
    def display_name(self) -> str:
        return self.global_name or self.username


@final
@attrs.frozen
class Member:
    """A guild member. `user` is absent where Discord nests the member under its user."""

    user: User | None = None
    nick: str | None = None
    roles: tuple[int, ...] = ()
    joined_at: str | None = None
    pending: bool = False
    communication_disabled_until: str | None = None
    # Only in interactions: the member's permissions in the interaction's channel.
    permissions: Permissions | None = None


@final
@attrs.frozen
class Role:
    id: int
    name: str = ""
    permissions: Permissions = Permissions.NONE
    position: int = 0
    color: int = 0
    hoist: bool = False
    managed: bool = False
    mentionable: bool = False


@final
@attrs.frozen
class PermissionOverwrite:
    id: int = _snowflake()
    # Always sent: role (0) and member (1) overwrites share the id space of snowflakes.
    type: OverwriteType = attrs.field(default=OverwriteType.ROLE, metadata={ALWAYS: True})
    allow: Permissions = Permissions.NONE
    deny: Permissions = Permissions.NONE


@final
@attrs.frozen
class ThreadMetadata:
    archived: bool = False
    auto_archive_duration: int = 1440
    archive_timestamp: str | None = None
    locked: bool = False
    invitable: bool | None = None
    create_timestamp: str | None = None


@final
@attrs.frozen
class Channel:
    """Any channel: text, voice, category, forum, and threads (`thread_metadata` set)."""

    id: int
    type: ChannelType = ChannelType.GUILD_TEXT
    guild_id: int | None = None
    name: str | None = None
    position: int = 0
    parent_id: int | None = None
    owner_id: int | None = None
    topic: str | None = None
    nsfw: bool = False
    last_message_id: int | None = None
    rate_limit_per_user: int = 0
    flags: int = 0
    permission_overwrites: tuple[PermissionOverwrite, ...] = ()
    thread_metadata: ThreadMetadata | None = None
    message_count: int | None = None
    member_count: int | None = None
    # Only in interactions: the bot's (or invoker's) computed permissions in this channel.
    permissions: Permissions | None = None

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES


@final
@attrs.frozen
class Guild:
    """A guild as in GUILD_CREATE (with channels, threads, roles, members) or GET /guilds/{id}."""

    id: int
    name: str = ""
    owner_id: int = 0
    unavailable: bool = False
    application_id: int | None = None
    member_count: int | None = None
    roles: tuple[Role, ...] = ()
    channels: tuple[Channel, ...] = ()
    threads: tuple[Channel, ...] = ()
    members: tuple[Member, ...] = ()


@final
@attrs.frozen
class Attachment:
    id: int
    filename: str = ""
    size: int = 0
    url: str = ""
    proxy_url: str = ""
    content_type: str | None = None
    description: str | None = None
    width: int | None = None
    height: int | None = None
    duration_secs: float | None = None
    ephemeral: bool = False


@final
@attrs.frozen
class Emoji:
    name: str | None = None
    id: int | None = _snowflake(default=None)
    animated: bool = False


@final
@attrs.frozen
class AllowedMentions:
    """Who a message may ping. The default pings nobody; `parse` is always sent because an
    absent `allowed_mentions` lets Discord ping everything the text mentions."""

    parse: tuple[str, ...] = attrs.field(default=(), metadata={ALWAYS: True})
    users: tuple[int, ...] = _snowflake(default=())
    roles: tuple[int, ...] = _snowflake(default=())
    replied_user: bool = False

    @classmethod
    def users_only(cls) -> AllowedMentions:
        """Users named in the text may be pinged; never @everyone, @here or roles."""
        return cls(parse=("users",))


@final
@attrs.frozen
class MessageReference:
    """A reply target when sending; where a message came from when receiving."""

    message_id: int | None = _snowflake(default=None)
    channel_id: int | None = _snowflake(default=None)
    guild_id: int | None = _snowflake(default=None)
    fail_if_not_exists: bool | None = None


# ----- components


@final
@attrs.frozen
class Button:
    style: ButtonStyle = attrs.field(default=ButtonStyle.SECONDARY, metadata={ALWAYS: True})
    label: str | None = None
    custom_id: str | None = None
    url: str | None = None
    emoji: Emoji | None = None
    disabled: bool = False
    id: int | None = None
    type: ComponentType = attrs.field(default=ComponentType.BUTTON, init=False)


@final
@attrs.frozen
class SelectOption:
    label: str
    value: str
    description: str | None = None
    emoji: Emoji | None = None
    default: bool = False


@final
@attrs.frozen
class StringSelect:
    custom_id: str
    options: tuple[SelectOption, ...] = ()
    placeholder: str | None = None
    min_values: int | None = None
    max_values: int | None = None
    disabled: bool = False
    required: bool | None = None
    # In a modal submit: what the person picked.
    values: tuple[str, ...] | None = None
    id: int | None = None
    type: ComponentType = attrs.field(default=ComponentType.STRING_SELECT, init=False)


@final
@attrs.frozen
class TextInput:
    custom_id: str
    style: TextInputStyle = attrs.field(default=TextInputStyle.SHORT, metadata={ALWAYS: True})
    label: str | None = None
    value: str | None = None
    placeholder: str | None = None
    required: bool | None = None
    min_length: int | None = None
    max_length: int | None = None
    id: int | None = None
    type: ComponentType = attrs.field(default=ComponentType.TEXT_INPUT, init=False)


@final
@attrs.frozen
class Label:
    """A modal's labelled field wrapping one input (the newer alternative to action rows)."""

    # Empty in a modal submit, which echoes only the inner component.
    label: str = ""
    component: Component = attrs.field(kw_only=True)
    description: str | None = None
    id: int | None = None
    type: ComponentType = attrs.field(default=ComponentType.LABEL, init=False)


@final
@attrs.frozen
class ActionRow:
    components: tuple[Component, ...] = ()
    id: int | None = None
    type: ComponentType = attrs.field(default=ComponentType.ACTION_ROW, init=False)


@final
@attrs.frozen
class UnknownComponent:
    """A component kimaki does not model (containers, sections, ...); the raw JSON is kept."""

    type: ComponentType
    data: JSONObject = attrs.field(factory=dict)


Component = ActionRow | Button | StringSelect | TextInput | Label | UnknownComponent


# ----- messages


@final
@attrs.frozen
class Message:
    id: int
    channel_id: int
    author: User
    content: str = ""
    timestamp: str = ""
    edited_timestamp: str | None = None
    type: MessageType = MessageType.DEFAULT
    flags: MessageFlags = MessageFlags.NONE
    guild_id: int | None = None
    member: Member | None = None
    attachments: tuple[Attachment, ...] = ()
    components: tuple[Component, ...] = ()
    embeds: tuple[JSONObject, ...] = ()
    mentions: tuple[User, ...] = ()
    mention_roles: tuple[int, ...] = ()
    mention_everyone: bool = False
    message_reference: MessageReference | None = None
    referenced_message: Message | None = None
    thread: Channel | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    pinned: bool = False
    tts: bool = False
    position: int | None = None


@final
@attrs.frozen
class MessageHead:
    """The fields of a message that decide whether the bot reads it at all, converted the same
    way as in `Message`. The router looks at this first: in a busy guild most messages are in
    channels the bot does not serve, and this costs a fraction of a whole `Message`."""

    id: int
    channel_id: int
    author: User
    type: MessageType = MessageType.DEFAULT
    guild_id: int | None = None
    webhook_id: int | None = None


# ----- interactions


@final
@attrs.frozen
class CommandInteractionOption:
    name: str
    type: ApplicationCommandOptionType
    value: OptionValue = None
    options: tuple[CommandInteractionOption, ...] = ()
    focused: bool = False


@final
@attrs.frozen
class Resolved:
    users: dict[int, User] = attrs.field(factory=dict)
    members: dict[int, Member] = attrs.field(factory=dict)
    roles: dict[int, Role] = attrs.field(factory=dict)
    channels: dict[int, Channel] = attrs.field(factory=dict)
    messages: dict[int, Message] = attrs.field(factory=dict)
    attachments: dict[int, Attachment] = attrs.field(factory=dict)


@final
@attrs.frozen
class InteractionData:
    """The `data` of any interaction type; fields not used by that type stay at defaults.

    Slash command / autocomplete: `id`, `name`, `type`, `options`, `resolved`.
    Component: `custom_id`, `component_type`, `values` (selects).
    Modal submit: `custom_id`, `components` (rows or labels holding the submitted inputs).
    """

    id: int | None = None
    name: str | None = None
    type: ApplicationCommandType | None = None
    options: tuple[CommandInteractionOption, ...] = ()
    resolved: Resolved | None = None
    target_id: int | None = None
    guild_id: int | None = None
    custom_id: str | None = None
    component_type: ComponentType | None = None
    values: tuple[str, ...] = ()
    components: tuple[Component, ...] = ()


@final
@attrs.frozen
class Interaction:
    id: int
    application_id: int
    type: InteractionType
    token: str = attrs.field(repr=False)
    version: int = 1
    data: InteractionData | None = None
    guild_id: int | None = None
    channel_id: int | None = None
    channel: Channel | None = None
    member: Member | None = None
    user: User | None = None
    message: Message | None = None
    app_permissions: Permissions | None = None
    locale: str | None = None
    guild_locale: str | None = None

    @property
    def author(self) -> User | None:
        """Who acted: the member's user in a guild, `user` in a DM."""
        if self.member is not None and self.member.user is not None:
            return self.member.user
        return self.user


# ----- application commands


@final
@attrs.frozen
class CommandChoice:
    name: str
    value: str | int | float


@final
@attrs.frozen
class ApplicationCommandOption:
    type: ApplicationCommandOptionType
    name: str
    description: str
    required: bool = False
    autocomplete: bool = False
    choices: tuple[CommandChoice, ...] = ()
    options: tuple[ApplicationCommandOption, ...] = ()
    channel_types: tuple[ChannelType, ...] = ()
    min_value: int | float | None = None
    max_value: int | float | None = None
    min_length: int | None = None
    max_length: int | None = None


@final
@attrs.frozen
class ApplicationCommand:
    name: str
    description: str = ""
    type: ApplicationCommandType = ApplicationCommandType.CHAT_INPUT
    options: tuple[ApplicationCommandOption, ...] = ()
    default_member_permissions: Permissions | None = None
    nsfw: bool = False
    id: int | None = _snowflake(default=None)
    application_id: int | None = _snowflake(default=None)
    guild_id: int | None = _snowflake(default=None)
    version: int | None = _snowflake(default=None)


@final
@attrs.frozen
class Application:
    id: int
    name: str = ""
    owner: User | None = None
    bot: User | None = None
    flags: int = 0


# --------------------------------------------------------------------------- converter

converter: Final = cattrs.Converter(detailed_validation=False, forbid_extra_keys=False)


def _structure_permissions(value: object, _: object) -> Permissions:
    return Permissions(int(value))  # type: ignore[call-overload]


def _structure_passthrough(value: Any, _: object) -> Any:
    return value


def _structure_option_value(value: object, _: object) -> OptionValue:
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise TypeError(f"option value must be a string, number or boolean, not {type(value)}")


def _structure_choice_value(value: object, _: object) -> str | int | float:
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return value
    raise TypeError(f"choice value must be a string or number, not {type(value)}")


def _structure_number(value: object, _: object) -> int | float | None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
        return value
    raise TypeError(f"expected a number, not {type(value)}")


def _make_enum(cls: Any) -> Callable[[Any, Any], Any]:
    # A dict lookup first: EnumMeta.__call__ is slow enough to show in gateway throughput.
    members = cls._value2member_map_

    def structure_enum(value: Any, _: Any) -> Any:
        try:
            return members[value]
        except (KeyError, TypeError):
            return cls(value)

    return structure_enum


converter.register_structure_hook_factory(
    lambda tp: isinstance(tp, type) and issubclass(tp, _OpenEnum | MessageFlags), _make_enum
)
converter.register_structure_hook(Permissions, _structure_permissions)
converter.register_structure_hook_func(lambda t: t == JSONObject, _structure_passthrough)
converter.register_structure_hook(OptionValue, _structure_option_value)
converter.register_structure_hook(str | int | float, _structure_choice_value)
converter.register_structure_hook(int | float | None, _structure_number)
converter.register_unstructure_hook(Permissions, int)
converter.register_unstructure_hook_func(lambda t: t == JSONObject, lambda value: value)

_COMPONENT_CLASSES: Final[dict[int, type[Any]]] = {
    ComponentType.ACTION_ROW: ActionRow,
    ComponentType.BUTTON: Button,
    ComponentType.STRING_SELECT: StringSelect,
    ComponentType.TEXT_INPUT: TextInput,
    ComponentType.LABEL: Label,
}


@functools.cache
def _component_hook(kind: int) -> Callable[[Any, Any], Any] | None:
    cls = _COMPONENT_CLASSES.get(kind)
    return None if cls is None else converter.get_structure_hook(cls)


def _structure_component(data: Any, _: object) -> Component:
    kind = data["type"]
    hook = _component_hook(kind) if type(kind) is int else None
    if hook is None:
        return UnknownComponent(type=ComponentType(kind), data=data)
    result: Component = hook(data, None)
    return result


def _unstructure_component(component: Component) -> Any:
    return converter.unstructure(component, unstructure_as=type(component))


def _unstructure_unknown_component(component: UnknownComponent) -> JSONObject:
    return component.data


converter.register_structure_hook(Component, _structure_component)
converter.register_unstructure_hook(Component, _unstructure_component)
converter.register_unstructure_hook(UnknownComponent, _unstructure_unknown_component)


def _snowflake_out(value: Any) -> Any:
    if isinstance(value, int):
        return str(value)
    if isinstance(value, tuple | list):
        return [str(v) for v in value]
    return value


def _optional_inner(tp: Any) -> Any:
    if typing.get_origin(tp) not in (typing.Union, types.UnionType):
        return None
    args = typing.get_args(tp)
    if len(args) != 2 or type(None) not in args:
        return None
    return args[0] if args[1] is type(None) else args[1]


def _make_optional(tp: Any) -> Callable[[Any, Any], Any]:
    # cattrs' generic Optional handling re-dispatches on every call; bind the inner hook once.
    inner_type = _optional_inner(tp)
    inner = converter.get_structure_hook(inner_type)

    def structure_optional(value: Any, _: Any) -> Any:
        return None if value is None else inner(value, inner_type)

    return structure_optional


def _is_homogeneous_tuple(tp: Any) -> bool:
    args = typing.get_args(tp)
    return typing.get_origin(tp) is tuple and len(args) == 2 and args[1] is Ellipsis


def _make_tuple(tp: Any) -> Callable[[Any, Any], Any]:
    item_type = typing.get_args(tp)[0]
    if item_type is int:
        return lambda value, _: tuple(map(int, value))
    if item_type is str:
        return lambda value, _: tuple(map(str, value))
    item = converter.get_structure_hook(item_type)

    def structure_tuple(value: Any, _: Any) -> tuple[Any, ...]:
        if not isinstance(value, list | tuple):
            raise TypeError(f"expected a list, not {type(value).__name__}")
        return tuple([item(v, item_type) for v in value])

    return structure_tuple


converter.register_structure_hook_factory(
    lambda tp: _optional_inner(tp) is not None and tp != OptionValue, _make_optional
)
converter.register_structure_hook_factory(_is_homogeneous_tuple, _make_tuple)


def _is_model(cls: Any) -> bool:
    return attrs.has(cls) and cls.__module__ == __name__


def _make_structure(cls: Any) -> Callable[[Any, Any], Any]:
    # Generated once per class and cached by the converter: the fast path for gateway events.
    return make_dict_structure_fn(cls, converter, _cattrs_forbid_extra_keys=False)


def _make_unstructure(cls: Any) -> Callable[[Any], Any]:
    overrides: dict[str, Any] = {}
    for field in attrs.fields(cls):
        if field.metadata.get(SNOWFLAKE):
            overrides[field.name] = override(unstruct_hook=_snowflake_out)
        if field.metadata.get(ALWAYS) or not field.init:
            overrides[field.name] = override(omit_if_default=False)
    return make_dict_unstructure_fn(
        cls,
        converter,
        _cattrs_omit_if_default=True,
        _cattrs_include_init_false=True,
        **overrides,
    )


converter.register_structure_hook_factory(_is_model, _make_structure)
converter.register_unstructure_hook_factory(_is_model, _make_unstructure)


def structure(data: Any, cls: type[T]) -> T:
    """Parse `data` (decoded JSON) into `cls`; any mismatch raises `ModelError`."""
    try:
        return converter.structure(data, cls)
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"malformed {cls.__name__}: {type(exc).__name__}: {exc}") from exc


def unstructure(obj: Any) -> Any:
    """The JSON value Discord expects for `obj` (a model, or a list/tuple of models)."""
    if isinstance(obj, list | tuple):
        return [unstructure(item) for item in obj]
    return converter.unstructure(obj, unstructure_as=type(obj))


# --------------------------------------------------------------------------- permissions


def _apply(perms: Permissions, allow: Permissions, deny: Permissions) -> Permissions:
    return (perms & ~deny) | allow


def compute_permissions(
    *,
    guild_id: int,
    owner_id: int,
    user_id: int,
    member_role_ids: Iterable[int],
    role_permissions: Mapping[int, Permissions],
    overwrites: Iterable[PermissionOverwrite] | None = None,
) -> Permissions:
    """Discord's documented algorithm, on plain data.

    Base: the guild owner has everything; otherwise @everyone's permissions (the role whose id
    is the guild id) or'ed with those of every role the member has; ADMINISTRATOR means
    everything. In a channel (`overwrites` given) apply, in this order: the @everyone
    overwrite, all of the member's role overwrites together (denies first, then allows), then
    the member's own overwrite. Without VIEW_CHANNEL in the channel nothing else is granted
    (Discord's implicit permission rule).
    """
    if user_id == owner_id:
        return ALL_PERMISSIONS
    role_ids = set(member_role_ids)
    base = role_permissions.get(guild_id, Permissions.NONE)
    for role_id in role_ids:
        base |= role_permissions.get(role_id, Permissions.NONE)
    if base & Permissions.ADMINISTRATOR:
        return ALL_PERMISSIONS
    if overwrites is None:
        return base

    everyone: PermissionOverwrite | None = None
    member: PermissionOverwrite | None = None
    role_allow = role_deny = Permissions.NONE
    for overwrite in overwrites:
        if overwrite.type == OverwriteType.MEMBER:
            if overwrite.id == user_id:
                member = overwrite
        elif overwrite.id == guild_id:
            everyone = overwrite
        elif overwrite.id in role_ids:
            role_allow |= overwrite.allow
            role_deny |= overwrite.deny

    perms = base
    if everyone is not None:
        perms = _apply(perms, everyone.allow, everyone.deny)
    perms = _apply(perms, role_allow, role_deny)
    if member is not None:
        perms = _apply(perms, member.allow, member.deny)
    if not perms & Permissions.VIEW_CHANNEL:
        return Permissions.NONE
    return perms


def permissions_for(
    guild: Guild,
    member: Member,
    channel: Channel | None = None,
    *,
    parent: Channel | None = None,
    user_id: int | None = None,
) -> Permissions:
    """`member`'s permissions in `guild`, or in `channel` when one is given.

    A thread has no overwrites of its own: pass its `parent` channel, whose overwrites apply.
    `user_id` is needed only when `member.user` is absent (e.g. a partial member).
    """
    if user_id is None:
        if member.user is None:
            raise ValueError("member has no user; pass user_id")
        user_id = member.user.id
    overwrites: tuple[PermissionOverwrite, ...] | None = None
    if channel is not None:
        if channel.is_thread:
            if parent is None or parent.id != channel.parent_id:
                raise ValueError(
                    f"thread {channel.id} needs its parent channel {channel.parent_id}"
                )
            overwrites = parent.permission_overwrites
        else:
            overwrites = channel.permission_overwrites
    return compute_permissions(
        guild_id=guild.id,
        owner_id=guild.owner_id,
        user_id=user_id,
        member_role_ids=member.roles,
        role_permissions={role.id: role.permissions for role in guild.roles},
        overwrites=overwrites,
    )
