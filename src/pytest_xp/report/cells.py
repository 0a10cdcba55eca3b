"""How one value is shown in a table cell, in every report format and in the condition tables."""

from __future__ import annotations

import json
import math
from typing import Any


def fmt(value: Any, width: int = 60) -> str:
    """A cell: numbers with 4 significant digits, missing values as '-', long text cut."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if hasattr(value, "item") and callable(value.item):
        try:
            return fmt(value.item(), width)
        except (TypeError, ValueError):
            pass
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"
