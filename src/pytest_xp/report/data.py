"""What a report shows: hypotheses with their verdicts, trial sections, attachments, gathered from a store.

Everything here only reads (see :mod:`pytest_xp.store.frames`): a report can run beside a session
that is still writing.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_xp.define.verdicts import Hypothesis as Hypothesis
from pytest_xp.errors import ReportWarning
from pytest_xp.store.frames import (
    CacheUse,
    GridCheck,
    _sort_key,
    attachment_dir,
    iter_records,
    list_manifests,
    matches_experiment,
    metrics_frame,
    metrics_rows,
    param_column,
    record_row,
    rows_frame,
)
from pytest_xp.store.identity import trial_key
from pytest_xp.store.store import regular_inside

if TYPE_CHECKING:
    import pandas as pd

    from pytest_xp.report.changes import Changes
    from pytest_xp.report.history import History


# -- what a report shows ----------------------------------------------------------------------
@dataclass
class TrialSection:
    """One trial's combinations (results frame) and logged metrics (long frame)."""

    experiment: str
    trial: str
    results: pd.DataFrame
    metrics: pd.DataFrame
    params: list[str]
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def description(self) -> str:
        """The trial's docstring as its latest record holds it."""
        for record in reversed(self.records):
            if isinstance(record.get("description"), str):
                return str(record["description"])
        return ""

    @property
    def key(self) -> str:
        return trial_key(self.experiment, self.trial)

    def counts(self) -> dict[str, Any]:
        frame = self.results
        success = frame["success"].astype(bool)
        ran = ~frame["cached"].astype(bool)
        return {
            "combinations": len(frame),
            "ok": int(success.sum()),
            "failed": int((~success).sum()),
            "cached": int((~ran).sum()),
            "duration_s": round(float(frame.loc[ran, "duration_s"].fillna(0).sum()), 3),
        }


@dataclass
class ReportData:
    """Everything one report renders, in every format."""

    xp_dir: Path
    generated_at: str
    session: dict[str, Any] | None
    hypotheses: list[Hypothesis]
    trials: list[TrialSection]
    title: str = "pytest-xp report"
    plot_x: tuple[str, ...] = ("step",)  # x axes of the metric figures: "step" and/or "wallclock"
    #: Every session's verdict per hypothesis (the trends of the HTML report).
    history: History | None = None
    #: The session's changes against its ``--xp-baseline`` (from its manifest), if it had one.
    changes: Changes | None = None


def _hypotheses_from_manifests(root: Path, manifests: list[dict[str, Any]], experiment: str | None) -> list[Hypothesis]:
    latest: dict[str, Hypothesis] = {}
    for manifest in manifests:
        session = str(manifest.get("session", "")) or None
        detailed = {str(h.get("nodeid")): h for h in manifest.get("hypotheses") or [] if isinstance(h, dict)}
        for nodeid, verdict in (manifest.get("verdicts") or {}).items():
            info = detailed.get(nodeid, {})
            latest[nodeid] = Hypothesis.from_manifest(nodeid, str(verdict), info, root=root, session=session)
            if nodeid not in detailed:  # a manifest from before attachments were recorded: look on disk
                latest[nodeid].attachments = find_attachments(root, latest[nodeid].experiment, latest[nodeid].name)
    return [h for h in latest.values() if matches_experiment(h.experiment, experiment)]


def _attachments_inside(root: Path, paths: list[Path]) -> list[Path]:
    """Attachments a report may embed: regular files in the store, reached without links or ``..``."""
    kept = []
    for path in paths:
        if regular_inside(root, path):
            kept.append(path)
        elif path.exists() or path.is_symlink():
            warnings.warn(
                ReportWarning(f"pytest-xp: left out attachment {path}: not a regular file inside the store {root}"),
                stacklevel=3,
            )
    return kept


def find_attachments(root: Path, module_id: str, owner: str) -> list[Path]:
    """Image files in a verify's attachment directory, by name."""
    directory = attachment_dir(root, module_id, owner)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".svg", ".gif"))


def gather(
    xp_dir: Path | str,
    *,
    experiment: str | None = None,
    trial: str | None = None,
    selection: Mapping[str, set[str] | None] | None = None,
    current_session: str | None = None,
    hypotheses: list[Hypothesis] | None = None,
    session: dict[str, Any] | None = None,
    plot_x: tuple[str, ...] = ("step",),
) -> ReportData:
    """Collect a report's data from the store.

    ``selection`` maps ``module::trial`` to the combination ids a session ran (None: all), so an
    after-session report shows exactly that session's combinations; ``current_session`` decides
    ``cached``. Without them, every stored combination counts and ``cached`` refers to the last
    session that ran each trial. ``hypotheses`` default to the latest verdicts in the manifests.
    """
    root = Path(xp_dir)
    manifests = list_manifests(root)
    use = CacheUse(manifests)
    grid = GridCheck()
    grouped: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path, record in iter_records(root, experiment, trial):
        key = trial_key(str(record.get("module")), str(record.get("trial")))
        if selection is not None:
            if key not in selection:
                continue
            wanted = selection[key]
            if wanted is not None and str(record.get("combination", "")) not in wanted:
                continue
        grouped.setdefault(key, []).append((path, record))
    sections = []
    for key, entries in grouped.items():
        entries.sort(key=lambda entry: _sort_key(entry[1]))
        rows = [
            record_row(
                rec,
                cached=use.cached(rec) if current_session is None else current_session != rec.get("session"),
                path=path,
                in_grid=grid(path, rec),
            )
            for path, rec in entries
        ]
        params: dict[str, None] = {}
        for _, rec in entries:
            for name in rec.get("params") or {}:
                params.setdefault(param_column(name), None)
        module, _, name = key.rpartition("::")
        sections.append(
            TrialSection(
                experiment=module,
                trial=name,
                results=rows_frame(rows),
                metrics=metrics_frame([metrics_rows(path, rec) for path, rec in entries]),
                params=list(params),
                records=[
                    dict(rec, cached=row["cached"], path=str(path))
                    for (path, rec), row in zip(entries, rows, strict=True)
                ],
            )
        )
    sections.sort(key=lambda s: (s.experiment, str(s.results["started_at"].dropna().min()), s.trial))
    if hypotheses is None:
        hypotheses = _hypotheses_from_manifests(root, manifests, experiment)
    for hypothesis in hypotheses:
        hypothesis.attachments = _attachments_inside(root, hypothesis.attachments)
    if session is None and manifests and selection is None:
        session = manifests[-1]
    from pytest_xp.report.changes import Changes
    from pytest_xp.report.history import history_from_manifests

    compared = session.get("baseline") if isinstance(session, dict) else None
    return ReportData(
        changes=Changes.from_dict(compared) if isinstance(compared, dict) else None,
        history=history_from_manifests(root, manifests),
        xp_dir=root,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        session=session,
        hypotheses=hypotheses,
        trials=sections,
        plot_x=plot_x,
        title=f"pytest-xp report: {session['name']}" if session and session.get("name") else "pytest-xp report",
    )
