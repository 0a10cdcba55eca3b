"""Figures of logged metrics: one per trial, overlays of trials or sessions, and verdict attachments.

Built on matplotlib's object API (``matplotlib.figure.Figure``), never pyplot: nothing needs a
display, no global backend is switched under a notebook, and no figure lingers in pyplot's registry.
"""

from __future__ import annotations

import io
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pytest_xp.store.frames import iter_records, matches_experiment, metrics_frame, metrics_rows, param_column

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LineStyleType

#: Longest series drawn point by point; longer ones are thinned evenly (the last point kept).
MAX_POINTS = 1500
#: Most lines given their own legend entry.
MAX_LEGEND = 40
#: Legend entries per column before the legend wraps into another column.
LEGEND_ROWS = 14
_STYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")


def is_lr_like(name: str) -> bool:
    """Learning-rate-like metrics (``lr``, ``lr_head``, ``learning_rate``) get a panel of their own."""
    lowered = name.lower()
    tokens = re.split(r"[^a-z0-9]+", lowered)
    return "lr" in tokens or "learningrate" in lowered.replace("_", "").replace("-", "")


def panels(metric_names: Iterable[str]) -> list[list[str]]:
    """One panel per metric in logging order, then all learning-rate-like metrics on one panel."""
    names = list(dict.fromkeys(metric_names))
    regular = [[name] for name in names if not is_lr_like(name)]
    rates = [name for name in names if is_lr_like(name)]
    return regular + ([rates] if rates else [])


def _hashable(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    return value


def _sorted_values(values: Iterable[Any]) -> list[Any]:
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    return sorted(unique, key=str)


def palette(values: Sequence[Any]) -> dict[Any, Any]:
    """Colours for the values of the colouring parameter: tab10 for few, tab20 up to 20, viridis beyond."""
    from matplotlib import colormaps

    ordered = _sorted_values(values)
    if len(ordered) <= 10:
        cmap = colormaps["tab10"]
        return {value: cmap(i) for i, value in enumerate(ordered)}
    if len(ordered) <= 20:
        cmap = colormaps["tab20"]
        return {value: cmap(i) for i, value in enumerate(ordered)}
    cmap = colormaps["viridis"]
    return {value: cmap(i / (len(ordered) - 1)) for i, value in enumerate(ordered)}


def line_styles(shades: Mapping[Any, Any]) -> dict[Any, tuple[Any, LineStyleType]]:
    """(colour, line style) per group, from each group's colouring value: no two groups look alike.

    Groups sharing a colour differ in line style; with more than ten colours, neighbouring colours
    (hard to tell apart in a large palette) differ in line style too.
    """
    colours = palette(list(shades.values()))
    ordered = _sorted_values(shades.values())
    many = len(ordered) > 10
    used: dict[Any, int] = {}
    out: dict[Any, tuple[Any, LineStyleType]] = {}
    for key, value in shades.items():
        offset = ordered.index(value) if many else 0
        out[key] = (colours[value], _STYLES[(used.get(value, 0) + offset) % len(_STYLES)])
        used[value] = used.get(value, 0) + 1
    return out


@dataclass
class _Series:
    step: npt.NDArray[np.float64]
    wallclock: npt.NDArray[np.float64]
    value: npt.NDArray[np.float64]


def _series(frame: pd.DataFrame, key: str) -> dict[tuple[str, Any], _Series]:
    """(metric, key value) -> arrays sorted by step, from the long metrics frame."""
    out: dict[tuple[str, Any], _Series] = {}
    for (metric, owner), part in frame.groupby(["metric", key], sort=False):
        part = part.sort_values("step", kind="stable")
        out[(str(metric), owner)] = _Series(
            step=part["step"].to_numpy(dtype=float),
            wallclock=part["wallclock"].to_numpy(dtype=float),
            value=part["value"].to_numpy(dtype=float),
        )
    return out


def _thin(*arrays: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], ...]:
    import numpy as np

    size = len(arrays[0])
    if size <= MAX_POINTS:
        return arrays
    index = np.unique(np.append(np.linspace(0, size - 1, MAX_POINTS).astype(int), size - 1))
    return tuple(a[index] for a in arrays)


def _draw_failed(ax: Axes, member: _Series, x: str, *, color: Any, style: LineStyleType) -> None:
    """A failed combination: its own thin line, ending in a cross where it stopped."""
    import numpy as np

    xs = member.step if x == "step" else member.wallclock
    keep = np.isfinite(member.value)
    xs, ys = _thin(xs[keep], member.value[keep])
    if not len(xs):
        return
    ax.plot(xs, ys, color=color, linestyle=style, linewidth=0.9, alpha=0.8)
    ax.plot(xs[-1:], ys[-1:], color=color, linestyle="none", marker="X", markersize=8, markeredgecolor="black")


def _draw(ax: Axes, members: list[_Series], x: str, *, color: Any, style: LineStyleType, band: bool) -> None:
    """One line: the member itself, or the mean of several with a ± 1 SD band."""
    import numpy as np
    import pandas as pd

    if not members:
        return
    if band and len(members) > 1:
        values = pd.concat([pd.Series(m.value, index=m.step).groupby(level=0).last() for m in members], axis=1)
        walls = pd.concat([pd.Series(m.wallclock, index=m.step).groupby(level=0).last() for m in members], axis=1)
        mean = values.mean(axis=1).to_numpy(dtype=float)
        sd = values.std(axis=1, ddof=1).fillna(0.0).to_numpy(dtype=float)
        xs = values.index.to_numpy(dtype=float) if x == "step" else walls.mean(axis=1).to_numpy(dtype=float)
        xs, mean, sd = _thin(xs, mean, sd)
        ax.plot(xs, mean, color=color, linestyle=style, linewidth=1.6)
        ax.fill_between(xs, mean - sd, mean + sd, color=color, alpha=0.18, linewidth=0)
        return
    for member in members:
        xs = member.step if x == "step" else member.wallclock
        keep = np.isfinite(member.value)
        xs, ys = _thin(xs[keep], member.value[keep])
        marker = "o" if len(xs) <= 3 else None
        ax.plot(xs, ys, color=color, linestyle=style, linewidth=1.2, marker=marker, markersize=3)


def _maybe_log(ax: Axes, values: npt.NDArray[np.float64]) -> None:
    import numpy as np

    finite = values[np.isfinite(values)]
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() >= 100:
        ax.set_yscale("log")


def _legend(
    ax: Axes, entries: list[tuple[str, Any, LineStyleType]], title: str | None, *, failed: bool = False
) -> None:
    """A legend beside the panel (outside it, so no curve is hidden), in columns when it is long."""
    from matplotlib.lines import Line2D

    if not entries and not failed:
        return
    handles = [Line2D([], [], color=color, linestyle=style, linewidth=1.6) for _, color, style in entries]
    labels = [label for label, _, _ in entries]
    if failed:
        handles.append(Line2D([], [], color="grey", linestyle="none", marker="X", markeredgecolor="black"))
        labels.append("failed run (stopped here)")
    ax.legend(
        handles,
        labels,
        title=title,
        fontsize="small",
        title_fontsize="small",
        loc="upper left",
        bbox_to_anchor=(1.01, 1.0),
        borderaxespad=0.0,
        ncols=max(1, math.ceil(len(labels) / LEGEND_ROWS)),
    )


def _label(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{name}={value}" for name, value in params.items()) or "all"


def trial_figure(
    metrics: pd.DataFrame,
    params: Sequence[str],
    *,
    title: str = "",
    color_by: str | None = None,
    band_by: str | None = None,
    x: Sequence[str] = ("step",),
    failed: Iterable[str] = (),
) -> Figure | None:
    """Each logged metric against step (and, on request, wallclock), one line per condition.

    Lines are coloured by ``color_by`` (default: the first parameter that varies, other than the
    seeds). Combinations that differ only in a seed parameter (``band_by``, default every parameter
    named like a seed) are drawn as their mean with a ± 1 SD band. Each condition has its own colour
    and line style pair; ``failed`` combinations are drawn apart, ending in a cross where they
    stopped. Every panel row with more than one line has its legend beside it. Returns None when
    nothing was logged.
    """
    from matplotlib.figure import Figure

    from pytest_xp.report.conditions import is_seed_param

    if metrics.empty:
        return None
    xs_wanted = [axis for axis in ("step", "wallclock") if axis in x] or ["step"]
    combos = metrics.drop_duplicates("combination")
    columns = [c for c in (param_column(p) for p in params) if c in metrics.columns]
    values = {c: [_hashable(v) for v in combos[c]] for c in columns}
    varying = [c for c in columns if len(set(values[c])) > 1]
    if band_by is not None:
        replicates = [band_by] if band_by in varying and color_by != band_by else []
    else:
        replicates = [c for c in varying if is_seed_param(c) and c != color_by]
    band = bool(replicates)
    grouping = [c for c in varying if c not in replicates]
    colour = color_by if color_by in columns else (grouping[0] if grouping else None)
    broken = {str(c) for c in failed}

    groups: dict[tuple[Any, ...], list[str]] = {}
    first: dict[tuple[Any, ...], int] = {}
    for i, combination in enumerate(combos["combination"]):
        key = tuple(values[c][i] for c in grouping)
        groups.setdefault(key, []).append(str(combination))
        first.setdefault(key, i)
    shade = {key: (values[colour][i] if colour else n) for n, (key, i) in enumerate(first.items())}
    styles = line_styles(shade)
    shown = {key: {c: combos[c].iloc[i] for c in grouping} for key, i in first.items()}
    any_failed = any(m in broken for members in groups.values() for m in members)

    series = _series(metrics, "combination")
    layout = panels(metrics["metric"])
    order = sorted(groups, key=lambda key: (_sorted_values(shade.values()).index(shade[key]), _label(shown[key])))
    entries = [(_label(shown[key]), *styles[key]) for key in order] if len(groups) <= MAX_LEGEND else []
    legend_cols = max(1, math.ceil((len(entries) + any_failed) / LEGEND_ROWS))
    width = 5.5 * len(xs_wanted) + 1.6 + 1.9 * legend_cols * (len(groups) > 1 or band or any_failed)
    height_per_row = max(2.6, 0.17 * min(len(entries) + 2, LEGEND_ROWS))
    fig = Figure(figsize=(width, height_per_row * len(layout) + 0.9), layout="constrained")
    axes = fig.subplots(len(layout), len(xs_wanted), squeeze=False)
    for row, names in enumerate(layout):
        for col, axis in enumerate(xs_wanted):
            ax = axes[row][col]
            for name in names:
                for key, members in groups.items():
                    color, style = styles[key]
                    good = [series[(name, m)] for m in members if (name, m) in series and m not in broken]
                    _draw(ax, good, axis, color=color, style=style, band=band)
                    for m in members:
                        if m in broken and (name, m) in series:
                            _draw_failed(ax, series[(name, m)], axis, color=color, style=style)
            if len(names) == 1 and not is_lr_like(names[0]):
                import numpy as np

                ys = [series[k].value for k in series if k[0] == names[0]]
                _maybe_log(ax, np.concatenate(ys) if ys else np.array([]))
            ax.set_ylabel(" / ".join(names) if len(names) < 3 else "learning rate")
            ax.grid(True, alpha=0.3)
            if row == 0 and len(xs_wanted) > 1:
                ax.set_title("against step" if axis == "step" else "against wallclock", fontsize="medium")
            ax.set_xlabel("step" if axis == "step" else "wallclock (s)")
        last = axes[row][len(xs_wanted) - 1]
        replicate_note = f"mean ± SD over {', '.join(replicates)}" if band else None
        if len(groups) > 1:
            title_text = (
                replicate_note
                if not entries
                else " · ".join(filter(None, [_colour_note(colour, grouping), replicate_note]))
            )
            if entries:
                _legend(last, entries, title_text or None, failed=any_failed)
            else:
                last.text(
                    1.02,
                    1.0,
                    f"{len(groups)} conditions\n(too many to name)",
                    transform=last.transAxes,
                    va="top",
                    fontsize="small",
                )
        elif band or any_failed:
            label = replicate_note or _label(shown[next(iter(groups))])
            _legend(last, [(label, *styles[next(iter(groups))])], None, failed=any_failed)
    if title:
        fig.suptitle(title, fontsize="medium")
    return fig


def _colour_note(colour: str | None, grouping: Sequence[str]) -> str | None:
    if colour is None or len(grouping) < 2:
        return None
    return f"colour: {colour}; line style: {', '.join(g for g in grouping if g != colour)}"


def png_bytes(fig: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (matplotlib's Agg renderer; no display involved)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def _source_label(
    record: Mapping[str, Any], trials: Sequence[str] | None, sessions: Sequence[str] | None
) -> str | None:
    """Which requested trial and/or session a record belongs to, as a legend label; None: neither."""
    parts = []
    if trials is not None:
        module, trial = str(record.get("module", "")), str(record.get("trial", ""))
        hit = next(
            (
                t
                for t in trials
                if t == trial
                or ("::" in t and t.rpartition("::")[2] == trial and matches_experiment(module, t.rpartition("::")[0]))
            ),
            None,
        )
        if hit is None:
            return None
        parts.append(hit)
    if sessions is not None:
        session = str(record.get("session", ""))
        hit = next((s for s in sessions if session.startswith(s)), None)
        if hit is None:
            return None
        parts.append(f"session {hit}")
    return " @ ".join(parts)


def compare(
    *,
    xp_dir: Path | str = ".xp",
    trials: Sequence[str] | None = None,
    sessions: Sequence[str] | None = None,
    metrics: Sequence[str] | None = None,
    x: str = "step",
    by: str | None = None,
    where: Mapping[str, Any] | None = None,
    title: str | None = None,
) -> Figure:
    """Overlay trials (``"train"`` or ``"experiments/xp_a.py::train"``) or sessions in one figure.

    Each source, split further by the parameter ``by``, is one colour: the mean over its
    combinations at each step with a ± 1 SD band. ``where`` keeps combinations whose parameters
    equal the given values; ``metrics`` picks metrics (default: all); ``x`` is "step" or "wallclock".
    A session id may be given by a prefix. Sessions overwrite each other's records of the same
    combination, so overlaying sessions shows the combinations each one computed last.
    """
    from matplotlib.figure import Figure

    if trials is None and sessions is None:
        raise ValueError("compare(): name trials=[...] and/or sessions=[...] to overlay")
    if x not in ("step", "wallclock"):
        raise ValueError(f"compare(x={x!r}): use 'step' or 'wallclock'")
    parts = []
    for path, record in iter_records(xp_dir):
        label = _source_label(record, trials, sessions)
        if label is None:
            continue
        params = record.get("params") or {}
        if where and any(params.get(k) != v for k, v in where.items()):
            continue
        if by is not None:
            label = f"{label}, {by}={params.get(by)}"
        columns = metrics_rows(path, record, metrics)
        columns["source"] = [label] * len(columns["metric"])
        parts.append(columns)
    frame = metrics_frame(parts)
    if frame.empty:
        raise ValueError(
            f"compare(): no logged metrics in {xp_dir} match trials={trials!r} sessions={sessions!r} where={where!r}"
        )
    frame["combination_key"] = frame["experiment"] + "::" + frame["trial"] + "::" + frame["combination"]
    by_source: dict[str, list[str]] = {}
    for source, key in frame.drop_duplicates(["source", "combination_key"])[["source", "combination_key"]].itertuples(
        index=False
    ):
        by_source.setdefault(str(source), []).append(str(key))
    series_of = _series(frame, "combination_key")
    colours = palette(list(by_source))
    layout = panels(frame["metric"])
    ncols = 2 if len(layout) > 1 else 1
    nrows = math.ceil(len(layout) / ncols)
    fig = Figure(figsize=(5.5 * ncols, 2.8 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for n, names in enumerate(layout):
        ax = axes[n // ncols][n % ncols]
        for name in names:
            for source, keys in by_source.items():
                found = [series_of[(name, k)] for k in keys if (name, k) in series_of]
                _draw(ax, found, x, color=colours[source], style="-", band=True)
        ax.set_ylabel(" / ".join(names) if len(names) < 3 else "learning rate")
        ax.set_xlabel("step" if x == "step" else "wallclock (s)")
        ax.grid(True, alpha=0.3)
    for n in range(len(layout), nrows * ncols):
        axes[n // ncols][n % ncols].set_visible(False)
    _legend(axes[0][0], [(source, colours[source], "-") for source in list(by_source)[:MAX_LEGEND]], "mean ± SD")
    fig.suptitle(title or "comparison", fontsize="medium")
    return fig
