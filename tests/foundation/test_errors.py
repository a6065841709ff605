"""The exception tree: every public exception kimaki defines is a `KimakiError`, as
`kimaki/errors.py` promises, and those that joined it late keep their builtin base."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import kimaki
from kimaki.agents.acp._jsonrpc import ConnectionClosedError, JsonRpcError
from kimaki.agents.opencode._wire import MalformedEvent
from kimaki.bot import UnknownEngineError
from kimaki.discord.errors import ContentTooLong
from kimaki.errors import KimakiError
from kimaki.store import StoreClosedError
from kimaki.worktrees import WorktreeError


def _public_exceptions() -> set[type[BaseException]]:
    found: set[type[BaseException]] = set()
    for info in pkgutil.walk_packages(kimaki.__path__, "kimaki."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if (
                inspect.isclass(value)
                and issubclass(value, BaseException)
                and value.__module__.startswith("kimaki")
                and not name.startswith("_")
            ):
                found.add(value)
    return found


def test_every_public_exception_is_a_kimaki_error() -> None:
    outside = sorted(
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _public_exceptions()
        if not issubclass(cls, KimakiError)
    )
    assert outside == []


def test_exceptions_that_joined_the_tree_keep_their_builtin_base() -> None:
    assert issubclass(UnknownEngineError, LookupError)
    assert issubclass(StoreClosedError, RuntimeError)
    assert issubclass(ContentTooLong, ValueError)
    assert issubclass(MalformedEvent, ValueError)
    for cls in (WorktreeError, JsonRpcError, ConnectionClosedError):
        assert issubclass(cls, KimakiError)
