"""The ``xp`` fixture: a combination's output directory, metric logging, and earlier outputs."""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from pytest_xp.errors import OutputLookupError
from pytest_xp.store.store import open_regular

if TYPE_CHECKING:
    from pytest_xp.define.discovery import Experiment
    from pytest_xp.run.checkpoints import Checkpoint, CheckpointDir
    from pytest_xp.store.store import Store

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
#: Keys every metrics.jsonl line has; a metric may not take these names.
RESERVED_METRICS = frozenset({"step", "wallclock"})


def _scalar(name: str, value: Any) -> float | int | None:
    if value is None or isinstance(value, bool):
        return None if value is None else int(value)
    if isinstance(value, (int, float)):
        return value
    item = getattr(value, "item", None)  # numpy scalars, 0-d arrays, one-element tensors
    if callable(item):
        try:
            return _scalar(name, item())
        except (TypeError, ValueError, RuntimeError):
            pass
    raise TypeError(f"xp.log({name}=...) takes numbers, got a {type(value).__name__}")


class MetricLog:
    """Appends one JSON line per ``log`` call, flushed at once so a crash keeps what was logged."""

    def __init__(self, directory: Path, start: float | None = None) -> None:
        self.directory = directory
        self.start = time.perf_counter() if start is None else start
        self._fh: IO[str] | None = None
        self.summary: dict[str, dict[str, Any]] = {}
        self.columns: dict[str, str] = {}  # metric name -> its JSON-quoted key, in first-logged order
        self.count = 0

    def _key(self, name: str) -> str:
        """The JSON-quoted key of a metric; registers it as a CSV column on first use, finite or not."""
        key = self.columns.get(name)
        if key is None:
            if name in RESERVED_METRICS:
                raise ValueError(f"xp.log({name}=...): {name!r} is recorded on every line; name the metric otherwise")
            key = self.columns[name] = json.dumps(name)
        return key

    def log(self, step: int | None = None, **scalars: Any) -> None:
        if self._fh is None:
            self._fh = open_regular(self.directory / METRICS_JSONL, "w")  # kept open; never through a link
        wallclock = time.perf_counter() - self.start
        step = self.count if step is None else int(step)
        parts = [f'"step":{step}', f'"wallclock":{wallclock:.6f}']
        finite: dict[str, float | int] = {}
        for name, raw in scalars.items():
            key = self._key(name)
            value = _scalar(name, raw)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                parts.append(f"{key}:null")
                continue
            parts.append(f"{key}:{value!r}")
            finite[name] = value
        self._update(step, finite)
        self._fh.write("{" + ",".join(parts) + "}\n")
        self._fh.flush()
        self.count += 1

    @classmethod
    def from_file(cls, directory: Path) -> MetricLog:
        """Rebuild the summary of a log another process wrote (it ran the combination in a child)."""
        from pytest_xp.store.codec import loads

        log = cls(directory)
        with open_regular(directory / METRICS_JSONL) as fh:
            for line in fh:
                try:
                    row = loads(line)
                except ValueError:
                    break  # a child killed mid-write leaves a torn last line
                step = row.pop("step", log.count)
                row.pop("wallclock", None)
                for name in row:
                    log._key(name)
                log._update(step, {k: v for k, v in row.items() if isinstance(v, (int, float))})
                log.count += 1
        log._fh = open_regular(directory / METRICS_JSONL, "a")  # closed by close()
        return log

    def _update(self, step: int, values: dict[str, float | int]) -> None:
        for name, value in values.items():
            stats = self.summary.get(name)
            if stats is None:
                self.summary[name] = {
                    "last": value,
                    "min": value,
                    "max": value,
                    "step_of_min": step,
                    "step_of_max": step,
                    "step_of_last": step,
                    "count": 1,
                }
                continue
            stats["last"] = value
            stats["step_of_last"] = step
            stats["count"] += 1
            if value < stats["min"]:
                stats["min"], stats["step_of_min"] = value, step
            if value > stats["max"]:
                stats["max"], stats["step_of_max"] = value, step

    def close(self) -> None:
        """Close the log and export ``metrics.csv`` beside it."""
        if self._fh is None:
            return
        self._fh.close()
        self._fh = None
        fields = ["step", "wallclock", *self.columns]
        with (
            open_regular(self.directory / METRICS_JSONL) as src,
            open_regular(self.directory / METRICS_CSV, "w") as dst,
        ):
            writer = csv.DictWriter(dst, fieldnames=fields, restval="")
            writer.writeheader()
            decode = json.JSONDecoder().decode  # one decoder for every line (json.loads builds one per call)
            for line in src:
                if line.strip():
                    writer.writerow(decode(line))


class Xp:
    """What a trial (or verify) gets from the ``xp`` fixture."""

    def __init__(
        self,
        *,
        store: Store,
        exp: Experiment,
        trial: str | None,
        rank: float,
        params: dict[str, Any],
        output_path: Path | None,
        setup: dict[str, Any],
        seeds: dict[str, Any],
        verify: str | None = None,
        key: str | None = None,
    ) -> None:
        self._store, self._exp, self._rank = store, exp, rank
        self.trial = trial
        self.verify = verify
        #: perf_counter() when the combination started; the item resets it right before the trial body.
        self.started = time.perf_counter()
        #: Files saved by :meth:`attach`, in order.
        self.attachments: list[Path] = []
        self.params = params
        self.setup = setup
        self.seeds = seeds
        self._output_path = output_path
        self._made_output = False
        self._metrics: MetricLog | None = None
        #: The upstream records read through :meth:`output_of`: (trial, combination, params digest,
        #: key, session); stored in the record, so a cached result is reused only while they are current.
        self.upstream: list[dict[str, Any]] = []
        self._key = key
        #: Called with a line of text for every ``log`` call when the combination's output streams live.
        self.on_metric: Callable[[str], None] | None = None

    @property
    def output_path(self) -> Path:
        """This combination's own directory, kept across runs; the record is written beside its files."""
        if self._output_path is None:
            raise OutputLookupError("xp.output_path exists for trial combinations only; a verify has none")
        if not self._made_output:
            self._store.make_dir(self._output_path)  # made on first use; a link on the way is set aside
            self._made_output = True
        return self._output_path

    def log(self, step: int | None = None, **scalars: Any) -> None:
        """Record scalars (loss=..., lr=...) at ``step`` in ``metrics.jsonl`` with the wallclock time."""
        if self._metrics is None:
            self._metrics = MetricLog(self.output_path, start=self.started)
        self._metrics.log(step, **scalars)
        if self.on_metric is not None:
            from pytest_xp.run.stream import metric_text

            self.on_metric(metric_text(step, scalars))

    def attach(self, figure: Any, name: str | None = None) -> Path:
        """Save a matplotlib figure (or copy an image file, or write PNG bytes) to show in reports.

        A verify's attachments appear beside its verdict in the HTML and Markdown reports; a trial's
        are saved under its output directory. Returns the saved file.
        """
        from pytest_xp.store.attachments import save_attachment
        from pytest_xp.store.frames import attachment_dir

        if self._output_path is not None:
            directory = self._output_path / "attachments"
        elif self.verify is not None:
            directory = attachment_dir(self._store.root, self._exp.module_id, self.verify)
            if not self.attachments:  # figures of an earlier run of this verify are not this verdict's
                shutil.rmtree(directory, ignore_errors=True)
        else:
            raise OutputLookupError("xp.attach() needs a trial combination or a verify")
        self._store.make_dir(directory)  # a link on the way is set aside, never followed
        path = save_attachment(figure, directory, name)
        self.attachments.append(path)
        return path

    @property
    def checkpoints(self) -> CheckpointDir:
        """This combination's checkpoints under its current cache key."""
        if self._output_path is None or self._key is None:
            raise OutputLookupError("checkpoints exist for trial combinations only; a verify has none")
        from pytest_xp.run.checkpoints import CHECKPOINT_DIR, CheckpointDir

        self.used_checkpoints = True
        return CheckpointDir(self._output_path / CHECKPOINT_DIR, self._key)

    used_checkpoints = False  # whether this process touched the checkpoints (see TrialItem._write_record)

    def checkpoint(
        self, state: Any, *, step: int, metric: float | None = None, keep: int = 3, mode: str = "min"
    ) -> Path:
        """Save ``state`` (JSON data, numpy arrays or torch tensors in dicts/lists) as the checkpoint of ``step``.

        The last ``keep`` checkpoints are kept, and the best by ``metric`` (lowest with ``mode="min"``,
        highest with ``"max"``) whatever its age. Returns the file written.
        """
        return self.checkpoints.save(state, step=step, metric=metric, keep=keep, mode=mode)

    def resume(self) -> Checkpoint | None:
        """The latest checkpoint of this combination under its current key, state loaded; None if there is none.

        A trial that was killed or timed out continues from here when it runs again::

            start = 0
            if (last := xp.resume()) is not None:
                model.load_state_dict(last.state["model"])
                start = last.step + 1
        """
        latest = self.checkpoints.latest()
        return self.checkpoints.load(latest) if latest is not None else None

    def best_checkpoint(self) -> Checkpoint | None:
        """The best checkpoint by the metric given to :meth:`checkpoint`, state loaded; None if none."""
        best = self.checkpoints.best()
        return self.checkpoints.load(best) if best is not None else None

    def metrics_summary(self) -> dict[str, dict[str, Any]]:
        return self._metrics.summary if self._metrics is not None else {}

    def close(self, *, look_for_child_log: bool = True) -> None:
        """Finish the metric log; pick up one a child process wrote (isolated combinations).

        ``look_for_child_log=False``: no child ran and the directory was new, so there is no file to look for.
        """
        written_by_child = (
            look_for_child_log and self._output_path is not None and (self._output_path / METRICS_JSONL).exists()
        )
        if self._metrics is None and written_by_child:
            self._metrics = MetricLog.from_file(self._output_path)  # type: ignore[arg-type]
        if self._metrics is not None:
            self._metrics.close()

    def output_of(self, trial: str, **params: Any) -> Path:
        """The output directory of a combination of an earlier-order trial of this module."""
        __tracebackhide__ = True
        exp = self._exp
        target = exp.trials.get(trial)
        if target is None:
            raise OutputLookupError(
                f"xp.output_of({trial!r}): no trial of that name in {exp.module_id}; trials: {', '.join(exp.trials)}"
            )
        if target.order >= self._rank:
            here = f"{self.trial} (order {int(self._rank)})" if self.trial else "this verify"
            raise OutputLookupError(
                f"xp.output_of({trial!r}): {trial} has order {target.order}, not lower than {here}; "
                "only earlier stages have finished outputs. Give it a lower order"
            )
        unknown = sorted(set(params) - set(target.params))
        if unknown:
            raise OutputLookupError(
                f"xp.output_of({trial!r}, ...): {trial} has no parameter(s) {', '.join(unknown)}; "
                f"its parameters: {', '.join(target.params)}"
            )
        matches = [c for c in target.combinations if all(c.params[k] == v for k, v in params.items())]
        if not matches:
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            grid = "; ".join(f"{k} in {v!r}" for k, v in target.params.items())
            raise OutputLookupError(f"xp.output_of({trial!r}, {shown}): no such combination ({grid})")
        if len(matches) > 1:
            raise OutputLookupError(
                f"xp.output_of({trial!r}, ...) matches {len(matches)} combinations; "
                f"name all of its parameters: {', '.join(target.params)}"
            )
        directory = self._store.combination_dir(exp.slug, trial, matches[0].slug)
        self._note_upstream(trial, matches[0].id, matches[0].params_digest, directory)
        return directory

    def _note_upstream(self, trial: str, combination: str, params_digest: str, directory: Path) -> None:
        from pytest_xp.store.store import RECORD_NAME

        if any(dep["params_digest"] == params_digest and dep["trial"] == trial for dep in self.upstream):
            return
        record = self._store.read_record(directory / RECORD_NAME) or {}
        self.upstream.append(
            {
                "trial": trial,
                "combination": combination,
                "params_digest": params_digest,
                "key": record.get("key"),
                "session": record.get("session"),
            }
        )
