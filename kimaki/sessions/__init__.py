"""kimaki.sessions"""

from __future__ import annotations
