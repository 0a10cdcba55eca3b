"""Files a trial or verify attaches for the reports: figures, images, PNG bytes, saved into the store.

Here, not beside the plots, because a worker saves them (``xp.attach``) and the worker side never
imports the report code; nothing in this module needs matplotlib (a figure only has to ``savefig``).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from pytest_xp.store.store import safe_part

#: What the reports show inline.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".svg", ".gif")


def save_attachment(obj: Any, directory: Path, name: str | None = None) -> Path:
    """Save what a verify attaches: a matplotlib figure, an image file's path, or PNG bytes.

    The file goes to ``directory`` (created) under ``name`` (made path-safe; ``.png`` added to
    figures and bytes without a suffix). Returns the written path.
    """
    directory.mkdir(parents=True, exist_ok=True)
    stem = safe_part(name) if name else None
    if hasattr(obj, "savefig"):
        target = _replaceable(directory / _with_suffix(stem or f"figure-{_count(directory) + 1}", ".png"))
        obj.savefig(target, format=target.suffix[1:] if target.suffix != ".jpeg" else "jpg", dpi=100)
        return target
    if isinstance(obj, (bytes, bytearray)):
        target = _replaceable(directory / _with_suffix(stem or f"image-{_count(directory) + 1}", ".png"))
        target.write_bytes(bytes(obj))
        return target
    if isinstance(obj, (str, Path)):
        source = Path(obj)
        if not source.is_file():
            raise FileNotFoundError(f"xp.attach({str(obj)!r}): no such file")
        if source.suffix.lower() not in IMAGE_SUFFIXES:
            raise ValueError(f"xp.attach({str(obj)!r}): reports show {', '.join(IMAGE_SUFFIXES)} files")
        target = directory / (_with_suffix(stem, source.suffix.lower()) if stem else safe_part(source.name))
        if source.resolve() != target.resolve():
            shutil.copyfile(source, _replaceable(target))
        return target
    raise TypeError(
        f"xp.attach() takes a matplotlib figure, a path to an image, or PNG bytes; got a {type(obj).__name__}"
    )


def _replaceable(target: Path) -> Path:
    """``target``, with a symlink or special file planted there removed (never written through)."""
    if target.is_symlink() or (target.exists() and not target.is_file()):
        target.unlink()
    return target


def _with_suffix(stem: str, default: str) -> str:
    return stem if Path(stem).suffix.lower() in IMAGE_SUFFIXES else stem + default


def _count(directory: Path) -> int:
    return sum(1 for p in directory.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
