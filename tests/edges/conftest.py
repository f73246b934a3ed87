"""The edge-case suite reuses the chaos suite's helpers (``chaos_support``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "chaos"))
