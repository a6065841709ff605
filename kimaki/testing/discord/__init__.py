"""kimaki.testing.discord"""

from __future__ import annotations
