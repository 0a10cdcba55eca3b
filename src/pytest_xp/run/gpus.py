"""GPUs on the worker side: whether a trial that needs some can run here.

The plugin never imports torch to find out: it reads ``CUDA_VISIBLE_DEVICES`` and the device
nodes, and asks torch only when the experiment has already imported it.
"""

from __future__ import annotations

import os
import sys

from pytest_xp.config import hardware_gpus


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
