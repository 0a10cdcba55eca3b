"""GPUs on the controller side: which device each xdist worker gets (round robin)."""

from __future__ import annotations

import re


def worker_device(devices: list[str], worker_id: str) -> str:
    """The device of xdist worker ``gwN``: round robin over the list."""
    match = re.fullmatch(r"gw(\d+)", worker_id)
    index = int(match.group(1)) if match else 0
    return devices[index % len(devices)]
