from __future__ import annotations

from collections.abc import Iterator

import pytest

from kimaki import _redact


@pytest.fixture(autouse=True)
def _registered_secrets_put_back() -> Iterator[None]:
    """The registry is process-wide: what a test registers must not redact another's text."""
    saved = _redact._snapshot()
    yield
    _redact._restore(saved)
