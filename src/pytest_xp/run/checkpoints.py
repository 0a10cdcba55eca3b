"""Checkpoints of a long trial: save every N steps, keep the last K and the best, resume after a crash.

Files live in ``<combination dir>/checkpoints/`` beside the record, with an ``index.json`` naming
the combination's cache key. A checkpoint is only ever loaded back for the same key: when the key
changed (other SETUP, params, seeds or source), the old checkpoints are not this combination's
past, and the first save under the new key removes them.

Formats, chosen by what the state holds (nothing is unpickled when loading back):

- torch objects (tensors, state dicts): ``torch.save``, loaded with ``torch.load(weights_only=True)``;
- numpy arrays: one ``.npz`` whose arrays sit beside a JSON description of the state's structure,
  loaded with ``allow_pickle=False``;
- anything else: JSON data, through the record codec.

The API (``CheckpointDir``) is used by the ``xp`` fixture and by launchers that requeue attempts.
"""

from __future__ import annotations

import io
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pytest_xp.errors import CheckpointError, NotJSONError
from pytest_xp.store.codec import dumps, loads, to_json_value

CHECKPOINT_DIR = "checkpoints"
INDEX_NAME = "index.json"
MODES = ("min", "max")
_ARRAY = "__xp_array__"  # marks where an array of the .npz belongs in the JSON structure


@dataclass(frozen=True)
class Checkpoint:
    """One saved checkpoint; ``state`` is filled by :meth:`CheckpointDir.load`."""

    step: int
    file: str
    format: str  # "torch", "npz" or "json"
    metric: float | None = None
    state: Any = None

    def entry(self) -> dict[str, Any]:
        return {"step": self.step, "file": self.file, "format": self.format, "metric": self.metric}


class CheckpointDir:
    """The checkpoints of one combination under one cache key."""

    def __init__(self, directory: Path, key: str) -> None:
        self.directory = directory
        self.key = key

    @property
    def index_path(self) -> Path:
        return self.directory / INDEX_NAME

    # -- reading -------------------------------------------------------------------------------
    def _index(self) -> dict[str, Any] | None:
        """This key's index, or None (no checkpoint yet, another key's, or unreadable)."""
        try:
            index = loads(self.index_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(index, dict) or index.get("key") != self.key:
            return None
        return index

    def entries(self) -> list[Checkpoint]:
        """Checkpoints kept under this key, oldest step first."""
        index = self._index()
        if index is None:
            return []
        return [_from_entry(e) for e in index.get("entries", []) if isinstance(e, dict)]

    def latest(self) -> Checkpoint | None:
        entries = self.entries()
        return entries[-1] if entries else None

    def best(self) -> Checkpoint | None:
        index = self._index()
        best = index.get("best") if index else None
        return _from_entry(best) if isinstance(best, dict) else None

    def load(self, checkpoint: Checkpoint) -> Checkpoint:
        """The checkpoint with its state read back (never unpickling anything)."""
        path = self.directory / checkpoint.file
        if checkpoint.format == "torch":
            import torch

            state = torch.load(path, weights_only=True, map_location="cpu")
        elif checkpoint.format == "npz":
            state = _load_npz(path)
        else:
            state = loads(path.read_text(encoding="utf-8"))
        return Checkpoint(checkpoint.step, checkpoint.file, checkpoint.format, checkpoint.metric, state)

    def summary(self) -> dict[str, Any] | None:
        """What a record lists: the directory, the kept files, the latest and the best."""
        index = self._index()
        if index is None or not index.get("entries"):
            return None
        return {
            "directory": CHECKPOINT_DIR,
            "mode": index.get("mode"),
            "entries": index["entries"],
            "latest": index["entries"][-1],
            "best": index.get("best"),
        }

    # -- writing -------------------------------------------------------------------------------
    def save(self, state: Any, *, step: int, metric: float | None = None, keep: int = 3, mode: str = "min") -> Path:
        """Write ``state`` as the checkpoint of ``step``; keep the last ``keep`` and the best by ``metric``."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise CheckpointError(f"xp.checkpoint(step=...) must be an int >= 0, got {step!r}")
        if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
            raise CheckpointError(f"xp.checkpoint(keep=...) must be an int >= 1, got {keep!r}")
        if mode not in MODES:
            raise CheckpointError(f"xp.checkpoint(mode=...) must be 'min' or 'max', got {mode!r}")
        value = _metric_value(metric)
        self.directory.mkdir(parents=True, exist_ok=True)
        index = self._index()
        if index is None:
            self._clear()  # another key's checkpoints (or none): they are not this combination's past
            index = {"key": self.key, "mode": mode, "entries": [], "best": None}
        fmt, data = _encode(state)
        name = f"step-{step:09d}.{_SUFFIX[fmt]}"
        _write_atomic(self.directory / name, data)
        entries = [e for e in index["entries"] if e.get("step") != step]
        entry = Checkpoint(step, name, fmt, value).entry()
        entries.append(entry)
        entries.sort(key=lambda e: int(e["step"]))
        best = old_best = index.get("best")
        if best is not None and best.get("step") == step:
            best = None  # this step was saved again: judge it anew
        if value is not None and (best is None or best.get("metric") is None or _better(value, best["metric"], mode)):
            best = entry
        kept = entries[-keep:]
        keep_files = {e["file"] for e in kept} | ({best["file"]} if best else set())
        index.update(mode=mode, entries=kept, best=best)
        _write_atomic(self.index_path, (dumps(index) + "\n").encode())
        for stale in [*entries[:-keep], *([old_best] if old_best else [])]:
            if stale["file"] not in keep_files:
                (self.directory / stale["file"]).unlink(missing_ok=True)
        return self.directory / name

    def _clear(self) -> None:
        for path in self.directory.glob("step-*"):
            path.unlink(missing_ok=True)
        self.index_path.unlink(missing_ok=True)


_SUFFIX = {"torch": "pt", "npz": "npz", "json": "json"}


def _from_entry(entry: dict[str, Any]) -> Checkpoint:
    metric = entry.get("metric")
    return Checkpoint(int(entry["step"]), str(entry["file"]), str(entry["format"]), metric)


def _better(value: float, than: float, mode: str) -> bool:
    return value < than if mode == "min" else value > than


def _metric_value(metric: Any) -> float | None:
    if metric is None:
        return None
    item = getattr(metric, "item", None)  # numpy scalars and one-element tensors
    if callable(item):
        metric = item()
    if isinstance(metric, bool) or not isinstance(metric, (int, float)):
        raise CheckpointError(f"xp.checkpoint(metric=...) takes a number, got a {type(metric).__name__}")
    return float(metric)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def _leaves(value: Any) -> Any:
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


def _holds_torch(state: Any) -> bool:
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    if isinstance(state, torch.nn.Module):
        raise CheckpointError(
            "xp.checkpoint() got a torch module; save its state_dict() (and the optimizer's), which "
            "loads back with weights_only=True"
        )
    return any(isinstance(leaf, torch.Tensor) for leaf in _leaves(state))


def _holds_numpy(state: Any) -> bool:
    numpy = sys.modules.get("numpy")
    return numpy is not None and any(isinstance(leaf, numpy.ndarray) for leaf in _leaves(state))


def _encode(state: Any) -> tuple[str, bytes]:
    if _holds_torch(state):
        import torch

        buffer = io.BytesIO()
        torch.save(state, buffer)
        return "torch", buffer.getvalue()
    if _holds_numpy(state):
        return "npz", _npz_bytes(state)
    try:
        return "json", (dumps(to_json_value(state, "checkpoint")) + "\n").encode()
    except NotJSONError as exc:
        raise CheckpointError(
            f"xp.checkpoint() cannot store this state: {exc}. Give JSON data, numpy arrays or torch tensors "
            "(in dicts and lists); nothing is pickled"
        ) from None


def _npz_bytes(state: Any) -> bytes:
    import numpy as np

    arrays: dict[str, Any] = {}

    def strip(value: Any, where: str) -> Any:
        if isinstance(value, np.ndarray):
            if value.dtype.hasobject:
                raise CheckpointError(f"xp.checkpoint(): array at {where} holds Python objects; it would need pickle")
            name = f"a{len(arrays)}"
            arrays[name] = value
            return {_ARRAY: name}
        if isinstance(value, dict):
            return {str(k): strip(v, f"{where}[{k!r}]") for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strip(v, f"{where}[{i}]") for i, v in enumerate(value)]
        try:
            return to_json_value(value, where)
        except NotJSONError as exc:
            raise CheckpointError(f"xp.checkpoint() cannot store this state: {exc}") from None

    structure = strip(state, "state")
    buffer = io.BytesIO()
    np.savez(buffer, __structure__=np.array(dumps(structure)), **arrays)
    return buffer.getvalue()


def _load_npz(path: Path) -> Any:
    import numpy as np

    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    structure = loads(str(arrays.pop("__structure__")))

    def rebuild(value: Any) -> Any:
        if isinstance(value, dict):
            if set(value) == {_ARRAY}:
                return arrays[value[_ARRAY]]
            return {k: rebuild(v) for k, v in value.items()}
        if isinstance(value, list):
            return [rebuild(v) for v in value]
        return value

    return rebuild(structure)
