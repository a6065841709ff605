"""Fakes the tests, benchmarks and offline runs share: `kimaki.testing.discord` is Discord."""

from __future__ import annotations
