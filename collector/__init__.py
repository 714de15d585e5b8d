"""collector: every session of many Citrix machines, exactly once, as NDJSON."""

from __future__ import annotations

__version__ = "0.1.0"
