"""JSON encoding of messages that leave the pipeline."""

from __future__ import annotations

import json
from datetime import date, datetime
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """Encode a message as compact UTF-8 JSON; datetimes become RFC 3339 strings."""
    return json.dumps(value, default=_default, ensure_ascii=False, separators=(",", ":")).encode()
