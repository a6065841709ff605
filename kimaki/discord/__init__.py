"""kimaki.discord"""

from __future__ import annotations
