"""Plots: per-trial metric figures, compare(), and verdict attachments are real, non-empty PNGs."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from pytest_xp import compare, load_metrics
from pytest_xp.report.plots import is_lr_like, palette, panels, png_bytes, trial_figure
from pytest_xp.store.attachments import save_attachment
from pytest_xp.store.frames import ReportWarning
from test_report_store import MODULE, SESSION_A, SESSION_B, curve, write_combo

pytest.importorskip("matplotlib")


def pixels(png: bytes) -> np.ndarray:
    from matplotlib.image import imread

    return np.asarray(imread(io.BytesIO(png), format="png"))


def assert_real_png(png: bytes) -> None:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(png) > 10_000
    image = pixels(png)
    assert image.shape[0] > 200 and image.shape[1] > 300
    assert float(image[..., :3].std()) > 0.05  # not a blank canvas
    assert len(np.unique(image[..., :3].reshape(-1, 3), axis=0)) > 20  # lines, text and bands, not two colours


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """``train``: optimizer x seed, loss and lr logged; ``sweep``: one line per width, no seed."""
    root = tmp_path / ".xp"
    for i, (opt, seed) in enumerate([(o, s) for o in ("sgd", "adam") for s in (0, 1, 2)]):
        scale = (3.0 if opt == "sgd" else 1.0) * (1 + 0.1 * seed)
        session = SESSION_A if opt == "sgd" else SESSION_B
        write_combo(
            root,
            MODULE,
            "train",
            {"opt": opt, "seed": seed},
            index=i,
            session=session,
            result={},
            steps=curve(30, scale, lr=0.1),
        )
    for i, width in enumerate([8, 16, 32]):
        write_combo(root, MODULE, "sweep", {"width": width}, index=i, result={}, steps=curve(20, width / 8))
    return root


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("lr", True),
        ("lr_head", True),
        ("learning_rate", True),
        ("train/lr", True),
        ("LearningRate", True),
        ("loss", False),
        ("clr_loss", False),
        ("early_stop", False),
        ("val_acc", False),
    ],
)
def test_learning_rate_like_names(name: str, expected: bool) -> None:
    assert is_lr_like(name) is expected


def test_panels_put_learning_rates_last_and_together() -> None:
    assert panels(["lr", "loss", "acc", "lr_head", "loss"]) == [["loss"], ["acc"], ["lr", "lr_head"]]


def test_palette_orders_values() -> None:
    colours = palette([3, 1, 2, 1])
    assert list(colours) == [1, 2, 3]
    assert len(palette(list(range(25)))) == 25


def test_trial_figure_plots_against_step_by_default_with_a_legend_per_panel(store: Path) -> None:
    fig = trial_figure(load_metrics(store, trial="train"), ["opt", "seed"], title="train")
    assert fig is not None
    loss, lr = fig.axes  # one panel per metric row, against step only
    assert loss.get_xlabel() == "step" and lr.get_xlabel() == "step"
    for ax in (loss, lr):
        legend = ax.get_legend()
        assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["opt=adam", "opt=sgd"]
        assert legend.get_title().get_text() == "mean ± SD over seed"


def test_trial_figure_bands_over_seeds_and_puts_lr_on_its_own_panel(store: Path) -> None:
    metrics = load_metrics(store, trial="train")
    fig = trial_figure(metrics, ["opt", "seed"], title="train", x=("step", "wallclock"))
    assert fig is not None
    assert len(fig.axes) == 4  # loss and lr rows, each against step and wallclock
    step_loss, wall_loss, step_lr, wall_lr = fig.axes
    assert step_loss.get_ylabel() == "loss" and step_lr.get_ylabel() == "lr"
    assert step_loss.get_yscale() == "log"  # loss spans three decades
    assert len(step_loss.get_lines()) == 2  # one mean line per optimizer, not one per seed
    assert len(step_loss.collections) == 2  # and its +-SD band
    assert wall_lr.get_xlabel() == "wallclock (s)" and wall_loss.get_title() == "against wallclock"
    legend = wall_loss.get_legend()
    assert legend is not None and [t.get_text() for t in legend.get_texts()] == ["opt=adam", "opt=sgd"]
    assert_real_png(png_bytes(fig))


def test_trial_figure_draws_one_line_per_combination_without_seeds(store: Path) -> None:
    fig = trial_figure(load_metrics(store, trial="sweep"), ["width"], color_by="width")
    assert fig is not None
    lines = fig.axes[0].get_lines()
    assert len(lines) == 3 and not fig.axes[0].collections
    assert len({line.get_color() for line in lines}) == 3
    assert_real_png(png_bytes(fig))


def test_colouring_by_the_seed_turns_the_band_off(store: Path) -> None:
    fig = trial_figure(load_metrics(store, trial="train"), ["opt", "seed"], color_by="seed")
    assert fig is not None
    assert len(fig.axes[0].get_lines()) == 6 and not fig.axes[0].collections


def test_failed_runs_are_drawn_apart_with_a_cross_and_named_in_the_legend(store: Path) -> None:
    metrics = load_metrics(store, trial="train")
    failed = sorted(set(metrics.loc[metrics["opt"] == "sgd", "combination"]))[:1]
    fig = trial_figure(metrics, ["opt", "seed"], failed=failed)
    assert fig is not None
    loss = fig.axes[0]
    crosses = [line for line in loss.get_lines() if line.get_marker() == "X"]
    assert len(crosses) == 1 and len(crosses[0].get_xdata()) == 1  # one cross, at its last point
    assert crosses[0].get_xdata()[0] == metrics["step"].max()
    legend = loss.get_legend()
    assert legend is not None and "failed run (stopped here)" in [t.get_text() for t in legend.get_texts()]
    assert len(loss.collections) == 2  # the two remaining sgd seeds still make a band


def test_a_dozen_conditions_each_look_different_and_are_all_named(tmp_path: Path) -> None:
    root = tmp_path / ".xp"
    for i, width in enumerate(range(1, 13)):
        write_combo(root, MODULE, "wide", {"width": width}, index=i, result={}, steps=curve(10, float(width)))
    fig = trial_figure(load_metrics(root, trial="wide"), ["width"])
    assert fig is not None
    lines = fig.axes[0].get_lines()
    looks = {
        (tuple(line.get_color()) if not isinstance(line.get_color(), str) else line.get_color(), line.get_linestyle())
        for line in lines
    }
    assert len(lines) == 12 and len(looks) == 12
    legend = fig.axes[0].get_legend()
    assert legend is not None and len(legend.get_texts()) == 12
    assert_real_png(png_bytes(fig))


def test_nothing_logged_gives_no_figure(store: Path) -> None:
    with pytest.warns(ReportWarning, match="no trial 'nothing'"):
        metrics = load_metrics(store, trial="nothing")
    assert trial_figure(metrics, []) is None


def test_compare_overlays_trials_and_sessions(store: Path) -> None:
    fig = compare(xp_dir=store, trials=["train"], by="opt", metrics=["loss"])
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 1
    assert len(fig.axes[0].get_lines()) == 2
    assert_real_png(png_bytes(fig))
    by_session = compare(xp_dir=store, sessions=[SESSION_A[:12], SESSION_B], x="wallclock")
    labels = [t.get_text() for t in by_session.axes[0].get_legend().get_texts()]
    assert labels == [f"session {SESSION_A[:12]}", f"session {SESSION_B}"]
    both = compare(xp_dir=store, trials=[f"{MODULE}::train", "sweep"], where={"seed": 0})
    assert {t.get_text() for t in both.axes[0].get_legend().get_texts()} == {f"{MODULE}::train"}


def test_compare_says_what_is_wrong(store: Path) -> None:
    with pytest.raises(ValueError, match="no logged metrics"):
        compare(xp_dir=store, trials=["missing"])
    with pytest.raises(ValueError, match=r"trials=.*sessions="):
        compare(xp_dir=store)
    with pytest.raises(ValueError, match="'step' or 'wallclock'"):
        compare(xp_dir=store, trials=["train"], x="epoch")


def test_save_attachment_accepts_figures_files_and_bytes(store: Path, tmp_path: Path) -> None:
    fig = trial_figure(load_metrics(store, trial="sweep"), ["width"])
    target = tmp_path / "att"
    saved = save_attachment(fig, target, "curves")
    assert saved == target / "curves.png"
    assert_real_png(saved.read_bytes())
    assert save_attachment(fig, target).name == "figure-2.png"
    copied = save_attachment(saved, target, "../escape attempt")
    assert copied.parent == target and copied.suffix == ".png"
    assert save_attachment(saved.read_bytes(), target, "raw").read_bytes() == saved.read_bytes()
    with pytest.raises(TypeError, match="matplotlib figure"):
        save_attachment(42, target)
    with pytest.raises(FileNotFoundError):
        save_attachment(tmp_path / "nope.png", target)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="reports show"):
        save_attachment(tmp_path / "notes.txt", target)
