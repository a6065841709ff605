"""The one redactor: what must never leave the process, replaced wherever text leaves it.

Everything the daemon writes somewhere a person or another program can read passes through
`redact`: log lines (`kimaki._log`'s formatter), everything posted or edited in Discord (the
thread writer redacts before splitting, so no split can cut a secret in two and let the halves
through; the REST client redacts again as a last line), audit rows, files sent as text.

It replaces, in this order:

- the exact values registered with `register_secret`: the bot token, agent server passwords,
  the control token, a transcription key, and the values of secret-named variables of the
  daemon's environment and of every agent's environment (`register_environment`). A value
  registered with a name is shown as `[REDACTED:NAME]`, so a reader can still tell which
  secret was there;
- assignments whose name looks secret (`API_KEY=…`, `password: …`, `"token": "…"`): the value
  goes, the name stays;
- shapes that are secrets whether or not anyone registered them: `Bearer …` and
  `Authorization: Basic …` values, Discord bot tokens, `user:password@` in URLs, and the key
  shapes of the common providers (`sk-…`, `ghp_…`, `github_pat_…`, `xox?-…`, `AKIA…`, PEM private
  key blocks).

`secret_reason` says why a text looks like a secret (a memory entry is refused for it);
`redact_data` redacts every string inside JSON-shaped data (embeds, components, an error
report), keeping the keys a program reads (`custom_id`, ids).

Token *counts* are not secrets: `max_tokens`, `input_tokens: 1200`, `token_count` keep their
values, so usage lines survive.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping
from typing import Final, TypeVar, cast

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "is_secret_name",
    "redact",
    "redact_data",
    "register_environment",
    "register_secret",
    "secret_reason",
]

REDACTED: Final = "[REDACTED]"
# Shorter values of secret-named variables are too likely to be ordinary words ("true").
MIN_SECRET_LENGTH: Final = 8
# A value registered without a name (a password the daemon made) may be shorter.
_MIN_UNNAMED_LENGTH: Final = 6

_SECRET_NAME: Final = re.compile(
    r"(?i)(?:api[_-]?key|apikey|secret|passw(?:or)?d|passphrase|credential|"
    r"authori[sz]ation|private[_-]?key|access[_-]?key|(?<![a-z0-9])dsn(?![a-z0-9])|"
    # kimaki's own capability grants (KIMAKI_GRANT); not OAuth's `grant_type`.
    r"(?<![a-z0-9])grant(?![a-z0-9]|_type)|"
    # A token, not a count of them: max_tokens, token_count, tokenizer are ordinary.
    r"token(?!s|_?(?:count|limit|usage|budget|iz|estimat)))"
)
# Assignment values that are never secrets, whatever their name says.
_PLAIN_VALUES: Final = frozenset({"true", "false", "null", "none", "undefined", "required"})

# `NAME=value`, `NAME: value`, `"name": "value"`, `'name' = 'value'` whose name looks secret.
_ASSIGNMENT: Final = re.compile(
    r"""(?P<name>["']?\b[A-Za-z_][A-Za-z0-9_.-]*["']?)(?P<sep>\s*[:=]\s*)"""
    r"""(?P<value>"(?:[^"\\\n]|\\.){4,}"|'(?:[^'\\\n]|\\.){4,}'|[^\s"',;}{\]\[]{4,})"""
)

_SHAPES: Final = re.compile(
    "|".join(
        (
            # PEM private keys, whole blocks.
            # PEM private keys: whole blocks, or all that is left of one cut short.
            r"-----BEGIN[A-Z ]*PRIVATE KEY-----"
            r"(?:[\s\S]*?-----END[A-Z ]*PRIVATE KEY-----|[A-Za-z0-9+/=:\s-]*)",
            # Discord bot tokens.
            r"[MNO][A-Za-z\d_-]{23,27}\.[A-Za-z\d_-]{6}\.[A-Za-z\d_-]{27,40}",
            # Authorization values and bearer tokens anywhere.
            r"(?i:(?<=authorization: )(?:bot|basic) [^\s'\"]+)",
            r"(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{8,}",
            # Basic-auth credentials inside a URL.
            r"(?<=://)[^/\s:@]+:[^/\s@]+(?=@)",
            # Provider key shapes.
            r"\bsk-(?:ant-|proj-|live-|test-)?[A-Za-z0-9_-]{16,}",
            r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}",
            r"\bgithub_pat_[A-Za-z0-9_]{40,}",
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}",
            r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
            r"\bAIza[0-9A-Za-z_-]{35}\b",
            r"\bgsk_[A-Za-z0-9]{20,}",
        )
    )
)

_lock = threading.Lock()
_named: dict[str, str] = {}  # value -> the name it is shown as ("" for none)
_pattern: re.Pattern[str] | None = None


def is_secret_name(name: str) -> bool:
    """Whether a variable or field called `name` holds a secret (by its name alone)."""
    return _SECRET_NAME.search(name) is not None


def register_secret(value: str | None, name: str | None = None) -> None:
    """Make `value` unprintable from now on; shown as `[REDACTED:NAME]` when `name` is given.

    Values too short to be told from ordinary text are ignored.
    """
    global _pattern
    minimum = MIN_SECRET_LENGTH if name else _MIN_UNNAMED_LENGTH
    if not value or len(value) < minimum:
        return
    with _lock:
        if value in _named and (_named[value] or not name):
            return
        _named[value] = name or ""
        ordered = sorted(_named, key=len, reverse=True)
        _pattern = re.compile("|".join(re.escape(secret) for secret in ordered))


def register_environment(env: Mapping[str, str] | None = None) -> None:
    """Register the values of `env`'s secret-named variables (the process's own by default)."""
    for name, value in (os.environ if env is None else env).items():
        if is_secret_name(name) and len(value) >= MIN_SECRET_LENGTH:
            register_secret(value, name)


def _shown(match: re.Match[str]) -> str:
    name = _named.get(match.group(0), "")
    return f"[REDACTED:{name}]" if name else REDACTED


def _assignment(match: re.Match[str]) -> str:
    name, value = match.group("name"), match.group("value")
    quote = value[0] if value[0] in "\"'" else ""
    bare = value.strip(quote) if quote else value
    if not is_secret_name(name) or _plain(bare):
        return match.group(0)
    return f"{name}{match.group('sep')}{quote}{REDACTED}{quote}"


def _plain(value: str) -> bool:
    """A value that says nothing secret: already redacted, a keyword, or a short number."""
    return (
        value.startswith("[REDACTED")
        or value.lower() in _PLAIN_VALUES
        or (value.isdigit() and len(value) < MIN_SECRET_LENGTH)
    )


def redact(text: str) -> str:
    """`text` with every registered secret, secret assignment and secret shape replaced."""
    pattern = _pattern
    if pattern is not None:
        text = pattern.sub(_shown, text)
    text = _SHAPES.sub(REDACTED, text)
    return _ASSIGNMENT.sub(_assignment, text)


def secret_reason(text: str) -> str | None:
    """Why `text` looks like it holds a secret, or None: for refusing to store it."""
    pattern = _pattern
    if pattern is not None:
        found = pattern.search(text)
        if found is not None:
            name = _named.get(found.group(0), "")
            return f"it contains the value of {name}" if name else "it contains a known secret"
    if _SHAPES.search(text) is not None:
        return "it contains something shaped like a key or token"
    for match in _ASSIGNMENT.finditer(text):
        value = match.group("value")
        bare = value[1:-1] if value[0] in "\"'" else value
        if is_secret_name(match.group("name")) and not _plain(bare):
            return f"it assigns a value to {match.group('name').strip(chr(34) + chr(39))}"
    return None


# Keys whose values a program reads back (routing ids, nonces): never rewritten.
_KEPT_KEYS: Final = frozenset({"custom_id", "id", "nonce", "type", "style", "flags"})

T = TypeVar("T")


def redact_data(data: T) -> T:
    """`data` (JSON-shaped: dicts, lists, tuples, strings) with every string value redacted.

    Keys are kept as they are, and so are the values of `_KEPT_KEYS` (a button's `custom_id`
    is read back when it is pressed).
    """
    return cast(T, _redact_value(data))


def _redact_value(value: object) -> object:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, Mapping):
        return {
            key: item if key in _KEPT_KEYS else _redact_value(item) for key, item in value.items()
        }
    if isinstance(value, list):
        return [_redact_value(item) for item in value]
    if isinstance(value, tuple):
        return tuple(_redact_value(item) for item in value)
    return value


def _snapshot() -> dict[str, str]:
    """The registered secrets (for tests that register their own and put things back)."""
    with _lock:
        return dict(_named)


def _restore(named: Mapping[str, str]) -> None:
    global _pattern
    with _lock:
        _named.clear()
        _named.update(named)
        ordered = sorted(_named, key=len, reverse=True)
        _pattern = (
            re.compile("|".join(re.escape(secret) for secret in ordered)) if ordered else None
        )
