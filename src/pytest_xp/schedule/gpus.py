"""GPUs: one device per xdist worker (round robin), and whether a trial that needs one can run.

The plugin never imports torch to find out: it reads ``CUDA_VISIBLE_DEVICES`` and the device
nodes, and asks torch only when the experiment has already imported it.
"""

from __future__ import annotations

import glob
import os
import re
import sys


def parse_gpus(text: str) -> list[str] | None:
    """``"0,1,3"`` -> device ids; ``"auto"`` -> every device found; None when nothing was asked."""
    text = text.strip()
    if text == "auto":
        return [str(i) for i in range(hardware_gpus())]
    ids = [part.strip() for part in text.split(",") if part.strip()]
    if not ids or not all(re.fullmatch(r"[0-9]+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+", i) for i in ids):
        raise ValueError("give device ids such as 0,1 (or UUIDs), or auto")
    return ids


def hardware_gpus() -> int:
    """NVIDIA devices on this machine, from /dev (no driver call, no torch import)."""
    return len(glob.glob("/dev/nvidia[0-9]*"))


def worker_device(devices: list[str], worker_id: str) -> str:
    """The device of xdist worker ``gwN``: round robin over the list."""
    match = re.fullmatch(r"gw(\d+)", worker_id)
    index = int(match.group(1)) if match else 0
    return devices[index % len(devices)]


def visible_gpus() -> int:
    """How many GPUs this process can use now."""
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "cuda"):
        try:
            return int(torch.cuda.device_count())
        except Exception:  # noqa: BLE001 - a broken driver means no usable GPU
            return 0
    count = hardware_gpus()
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [part for part in env.split(",") if part.strip() and part.strip() != "-1"]
        count = min(count, len(ids))
    return count
