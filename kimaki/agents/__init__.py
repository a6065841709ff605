"""kimaki.agents"""

from __future__ import annotations
