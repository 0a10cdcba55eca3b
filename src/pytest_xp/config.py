"""Command-line options and ini keys, validated once into a frozen config object."""

from __future__ import annotations

import ast
import glob
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from pytest_xp.define.config_files import (
    ConfigLayer,
    ValueOverride,
    layered_values,
    load_config_file,
    parse_dotted_override,
)
from pytest_xp.define.discovery import MAX_TIMEOUT_S
from pytest_xp.define.grid import check_literal
from pytest_xp.define.verdicts import DEFAULT_FAIL_ON, parse_fail_on
from pytest_xp.errors import ConfigFileError, GridError

#: ``--xp-report-x`` values; ``--xp-isolate`` start methods.
PLOT_AXES = ("step", "wallclock", "both")
ISOLATE_METHODS = ("fork", "forkserver", "spawn")


#: Ini keys of settings that are also options (``--xp-seed`` <- ``xp_seed``): (name, ini type, help).
INI_SETTINGS: tuple[tuple[str, Any, str], ...] = (
    ("xp_seed", "string", "base seed (see --xp-seed)"),
    ("xp_report", "linelist", "reports after every run, one per line (see --xp-report)"),
    ("xp_report_x", "string", "x axis of report figures: step, wallclock or both"),
    ("xp_name", "string", "a name for the sessions of this project (see --xp-name)"),
    ("xp_cache", "string", "on or off (see --xp-cache)"),
    ("xp_explain", "bool", "say why each combination ran (see --xp-explain)"),
    ("xp_isolate", "string", "run every combination in a child process: fork, forkserver or spawn"),
    ("xp_timeout", "string", "seconds before a combination is killed (see --xp-timeout)"),
    ("xp_max_memory", "string", "memory limit of a combination, e.g. 4G (see --xp-max-memory)"),
    ("xp_gpus", "string", "device ids handed to xdist workers, or auto (see --xp-gpus)"),
    ("xp_wait", "string", "seconds a shard waits for lower orders (see --xp-wait)"),
    ("xp_no_wait", "bool", "a shard skips what it would wait for (see --xp-no-wait)"),
    ("xp_env_changes", "string", "warn, rerun or ignore (see --xp-env-changes)"),
    ("xp_audit", "string", "re-run N cached combinations and compare their results (see --xp-audit)"),
)


@dataclass(frozen=True)
class XpConfig:
    """Validated pytest-xp settings of one session (identical in controller and workers)."""

    xp_dir: Path
    seed: int
    fail_on: frozenset[str]
    reports: tuple[str, ...]
    file_patterns: tuple[str, ...]
    cache: bool = True
    rerun: bool = False
    explain: bool = False
    plan: bool = False
    value_overrides: tuple[ValueOverride, ...] = ()  # from configuration files, then --xp-values
    context_overrides: tuple[tuple[str, Any], ...] = ()  # (dotted key, value) from --xp-context
    config_layers: tuple[ConfigLayer, ...] = ()  # --xp-config files (parents first), in order
    show_config: bool = False
    stream: bool = False  # --xp-stream / --stream-all / PYTEST_XP_STREAM=1 / MLX_STREAM_ALL=1
    status_s: float = 30.0  # seconds between live status lines (0: none)
    log_path: Path | None = None  # EXPERIMENT_LOG.md to prepend this session's entries to (None: off)
    note: str | None = None  # --xp-note: why it ran
    pre_experiment: tuple[str, ...] = ()  # files or modules run before experiment modules are imported
    sample: int | None = None
    shard: tuple[int, int] | None = None
    dirty_git: str = "warn"
    correction: str = "none"
    wait_s: float = 3600.0
    no_wait: bool = False
    gpus: tuple[str, ...] = ()  # device ids handed to xdist workers round robin
    isolate: str | None = None  # start method, when every combination runs in a child process
    timeout_s: float | None = None
    max_memory: int | None = None
    report_x: tuple[str, ...] = ("step",)  # x axes of the report's metric figures
    name: str | None = None  # the session's name, for people (reports, pytest-xp runs)
    env_changes: str = "warn"  # third-party package versions changed since a cached record: warn, rerun, ignore
    baseline: str | None = None  # --xp-baseline: PATH of another store or manifest, or git:REF
    audit: int = 0  # --xp-audit N: re-run N seeded-random cached combinations and compare (0: no audit)


def addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("xp", "pytest-xp: hypothesis experiments")
    group.addoption(
        "--xp-dir",
        dest="xp_dir",
        default=None,
        metavar="DIR",
        help="results store directory (default: ini xp_dir, else .xp in the rootdir)",
    )
    group.addoption(
        "--xp-seed",
        dest="xp_seed",
        default=None,
        metavar="INT",
        help="base seed for combinations that get no seed from SETUP or their parameters (default 0; ini xp_seed)",
    )
    group.addoption(
        "--xp-fail-on",
        dest="xp_fail_on",
        default=None,
        metavar="LIST",
        help="comma list of what makes the session fail: refutes, invalid, inconclusive, continue, "
        f"trial-failures, audit, flips, regressions, post-hoc (default: ini xp_fail_on, else "
        f"{','.join(DEFAULT_FAIL_ON)})",
    )
    group.addoption(
        "--xp-report",
        dest="xp_report",
        action="append",
        nargs="?",
        const="term",
        default=None,
        metavar="FORMAT",
        help="report after the run (repeatable): term (default: terminal summary), md:PATH, html:PATH, "
        "json:PATH, github (Markdown appended to $GITHUB_STEP_SUMMARY); ini xp_report, one per line",
    )
    group.addoption(
        "--xp-report-x",
        dest="xp_report_x",
        choices=PLOT_AXES,
        default=None,
        help="x axis of the report's metric figures: step (default), wallclock or both (ini xp_report_x)",
    )
    group.addoption(
        "--xp-name",
        dest="xp_name",
        default=None,
        metavar="NAME",
        help="a name for this session, shown in reports and pytest-xp runs (ini xp_name)",
    )
    group.addoption(
        "--xp-cache",
        dest="xp_cache",
        choices=("on", "off"),
        default=None,
        help="on (default): reuse successful records whose key matches; off: neither reuse nor offer records "
        "for reuse (ini xp_cache)",
    )
    group.addoption(
        "--xp-rerun", action="store_true", help="run the selected combinations even when cached (-k narrows)"
    )
    group.addoption(
        "--xp-explain",
        action="store_true",
        default=None,
        help="say for each combination that runs why the cache missed (ini xp_explain)",
    )
    group.addoption(
        "--xp-plan",
        action="store_true",
        help="print per trial the grid size, cached and to-run combinations and an estimated time; run nothing",
    )
    group.addoption(
        "--xp-values",
        action="append",
        default=[],
        metavar="TRIAL.PARAM=LIST",
        help="replace one trial's value list, e.g. --xp-values 'train.lr=[0.1, 0.01]' (repeatable)",
    )
    group.addoption(
        "--xp-context",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a SETUP key after the setup functions and --xp-config files, e.g. --xp-context seed=7 "
        "or a nested one: --xp-context model.hidden=128 (repeatable)",
    )
    group.addoption(
        "--xp-config",
        action="append",
        default=[],
        metavar="FILE.yaml",
        help="layer a YAML configuration file onto SETUP and the grids (repeatable, applied in order; "
        "default: ini xp_config)",
    )
    group.addoption(
        "--xp-show-config",
        action="store_true",
        help="print each experiment's merged SETUP and grid overrides with the layer that set each key; run nothing",
    )
    group.addoption(
        "--xp-sample", default=None, metavar="K", help="run a seeded random subset of K combinations per trial"
    )
    group.addoption(
        "--xp-shard", default=None, metavar="I/N", help="run shard I of N (0-based) of the selected combinations"
    )
    group.addoption(
        "--xp-isolate",
        nargs="?",
        const="fork",
        default=None,
        choices=ISOLATE_METHODS,
        help="run each combination in a child process of the worker (default start method: fork; "
        "use forkserver or spawn once the worker has touched CUDA; ini xp_isolate)",
    )
    group.addoption(
        "--xp-timeout",
        default=None,
        metavar="SECONDS",
        help="kill a combination's process group after this long and record Timeout (implies --xp-isolate; "
        "ini xp_timeout)",
    )
    group.addoption(
        "--xp-max-memory",
        default=None,
        metavar="SIZE",
        help="kill a combination whose processes use more memory (e.g. 4G) and record MemoryLimit "
        "(implies --xp-isolate; ini xp_max_memory)",
    )
    group.addoption(
        "--xp-gpus",
        default=None,
        metavar="IDS",
        help="give xdist worker k the device IDS[k %% len] through CUDA_VISIBLE_DEVICES (e.g. 0,1 or auto; "
        "ini xp_gpus)",
    )
    group.addoption(
        "--xp-wait",
        default=None,
        metavar="SECONDS",
        help="with --xp-shard: how long order k waits for other shards' lower-order records (default 3600; "
        "ini xp_wait)",
    )
    group.addoption(
        "--xp-no-wait",
        action="store_true",
        default=None,
        help="with --xp-shard: skip combinations whose lower orders other shards have not finished (ini xp_no_wait)",
    )
    group.addoption(
        "--xp-dirty-git",
        choices=("ignore", "warn", "error"),
        default=None,
        help="uncommitted changes when experiments run: ignore, warn (default) or error (refuse to run)",
    )
    group.addoption(
        "--xp-correction",
        choices=("holm", "bh", "none"),
        default=None,
        help="adjust the p-values of all evidence in the session (Holm or Benjamini-Hochberg) and re-judge "
        "those verdicts (default: ini xp_correction, else none)",
    )
    group.addoption(
        "--xp-env-changes",
        choices=("warn", "rerun", "ignore"),
        default=None,
        help="when the versions of third-party packages a trial uses (numpy, torch, ...) differ from those "
        "of its cached record: warn (default) and reuse it, rerun the combination, or ignore",
    )
    group.addoption(
        "--xp-audit",
        default=None,
        metavar="N",
        help="re-run N cached combinations, chosen at random from --xp-seed, and compare their results with "
        "the stored ones (exact, or within @trial(tolerance=...)); the stored records stay as they are, and a "
        "difference fails the session (--xp-fail-on audit, on by default)",
    )
    group.addoption(
        "--xp-note", default=None, metavar="TEXT", help="say why this session runs (kept in its run manifest)"
    )
    group.addoption(
        "--xp-stream",
        "--stream-all",
        dest="xp_stream",
        action="store_true",
        help="print every combination's output and xp.log metrics as they happen, prefixed by the combination, "
        "under -n N too (also PYTEST_XP_STREAM=1 or MLX_STREAM_ALL=1; under -n 0 single-combination trials "
        "stream anyway)",
    )
    group.addoption(
        "--xp-status",
        default=None,
        metavar="SECONDS",
        help="print a status line (done/running/queued, slowest running, ETA) this often (default 30; 0: never)",
    )
    group.addoption(
        "--xp-log",
        default=None,
        metavar="PATH",
        help="experiment log to add one entry per judged hypothesis to, newest first "
        "(default: ini xp_log, else EXPERIMENT_LOG.md in the rootdir; 'off' writes none)",
    )
    group.addoption("--xp-runs", action="store_true", help="list past sessions recorded in the store and exit")
    group.addoption(
        "--xp-baseline",
        dest="xp_baseline",
        default=None,
        metavar="PATH|git:REF",
        help="compare every verdict and effect with a baseline session: the latest of the store (or the manifest) "
        "at PATH, or the latest in this store made at git commit REF; gate with --xp-fail-on=flips or regressions",
    )
    for name, kind, text in INI_SETTINGS:
        parser.addini(name, text, type=kind, default=False if kind == "bool" else [] if kind == "linelist" else "")
    parser.addini("xp_config", "YAML configuration files layered onto SETUP (see --xp-config)", type="args", default=[])
    parser.addini(
        "xp_pre_experiment",
        "Python files or modules run before experiment modules are imported (controller and workers)",
        type="args",
        default=[],
    )
    parser.addini(
        "xp_log", "experiment log file, relative to the rootdir, or off (see --xp-log)", default="EXPERIMENT_LOG.md"
    )
    parser.addini("xp_correction", "multiple-comparison correction: holm, bh or none", default="none")
    parser.addini("xp_dirty_git", "ignore, warn or error on uncommitted changes (see --xp-dirty-git)", default="warn")
    parser.addini("xp_dir", "pytest-xp results store directory, relative to the rootdir", default=".xp")
    parser.addini("xp_fail_on", "what makes the session fail (see --xp-fail-on)", default=",".join(DEFAULT_FAIL_ON))
    parser.addini("xp_files", "glob patterns of experiment modules to collect", type="args", default=["xp_*.py"])


def settle_rootdir(config: pytest.Config, args: list[str]) -> None:
    """Find the rootdir again once pytest-xp's options are known, so ``--xp-dir PATH`` means ``--xp-dir=PATH``.

    pytest determines the rootdir and ini file before it loads plugins; an option it does not know
    yet given as two tokens leaves its value looking like a test path, which moves the rootdir to
    it (and with it every module id, so every combination would run again into a second tree).
    pytest has no public way to redo that step, so this calls its own function again with the
    arguments as parsed now, and only when an ``--xp-*`` option was given as two tokens.
    """
    if not any(arg.startswith("--xp-") and "=" not in arg for arg in args):
        return
    try:
        from _pytest.config.findpaths import determine_setup

        ns = config.known_args_namespace
        rootpath, inipath, inicfg, ignored = determine_setup(
            inifile=ns.inifilename,
            override_ini=ns.override_ini,
            args=ns.file_or_dir,
            rootdir_cmd_arg=ns.rootdir or None,
            invocation_dir=config.invocation_params.dir,
        )
        if (rootpath, inipath) == (config.rootpath, config.inipath):
            return
        old_confcutdir = str(config.inipath.parent if config.inipath is not None else config.rootpath)
        config._rootpath = rootpath  # private: pytest has no public API for this (see the docstring)
        config._inipath = inipath
        config._inicfg = inicfg
        config._ignored_config_files = ignored
        config._inicache.clear()
        config._parser.extra_info["rootdir"] = str(rootpath)
        config._parser.extra_info["inifile"] = str(inipath)
        if ns.confcutdir == old_confcutdir:  # pytest's default, derived from the wrong rootdir
            ns.confcutdir = str(inipath.parent if inipath is not None else rootpath)
    except (ImportError, AttributeError, TypeError):  # another pytest: leave its rootdir alone
        return


def build_config(config: pytest.Config) -> XpConfig:
    """Read and check every option; a bad value is a UsageError naming the option and the fix."""
    raw_dir = config.getoption("xp_dir") or config.getini("xp_dir") or ".xp"
    xp_dir = Path(raw_dir).expanduser()
    if not xp_dir.is_absolute():
        base = Path.cwd() if config.getoption("xp_dir") else config.rootpath
        xp_dir = base / xp_dir

    raw_seed, seed_source = setting(config, "xp_seed")
    try:
        seed = int(raw_seed) if raw_seed is not None else 0
    except ValueError:
        raise pytest.UsageError(f"{seed_source}={raw_seed!r}: give an integer, e.g. --xp-seed=0") from None

    raw_fail_on = config.getoption("xp_fail_on")
    source = "--xp-fail-on" if raw_fail_on is not None else "ini xp_fail_on"
    try:
        fail_on = parse_fail_on(raw_fail_on if raw_fail_on is not None else str(config.getini("xp_fail_on")))
    except ValueError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None

    if config.getoption("xp_report"):
        reports = tuple(
            normalize_report_spec(spec, config.invocation_params.dir) for spec in config.getoption("xp_report")
        )
    else:  # ini paths are taken from the rootdir, where the ini file is
        reports = tuple(
            normalize_report_spec(str(spec), config.rootpath, source="ini xp_report")
            for spec in config.getini("xp_report") or ()
        )
    raw_axes, axes_source = setting(config, "xp_report_x")
    if raw_axes is not None and raw_axes not in PLOT_AXES:
        raise pytest.UsageError(f"{axes_source} = {raw_axes!r}: use {', '.join(PLOT_AXES)}")
    report_x = {"step": ("step",), "wallclock": ("wallclock",), "both": ("step", "wallclock")}[raw_axes or "step"]
    raw_cache, cache_source = setting(config, "xp_cache")
    if raw_cache is not None and raw_cache not in ("on", "off"):
        raise pytest.UsageError(f"{cache_source} = {raw_cache!r}: use on or off")
    patterns = tuple(str(p) for p in config.getini("xp_files"))
    dirty_git = config.getoption("xp_dirty_git") or str(config.getini("xp_dirty_git"))
    if dirty_git not in ("ignore", "warn", "error"):
        raise pytest.UsageError(f"ini xp_dirty_git = {dirty_git!r}: use ignore, warn or error")
    correction = config.getoption("xp_correction") or str(config.getini("xp_correction"))
    if correction not in ("holm", "bh", "none"):
        raise pytest.UsageError(f"ini xp_correction = {correction!r}: use holm, bh or none")
    raw_audit, audit_source = setting(config, "xp_audit")
    audit = _positive_int(audit_source, raw_audit) or 0
    env_changes = setting(config, "xp_env_changes")[0] or "warn"
    if env_changes not in ("warn", "rerun", "ignore"):
        raise pytest.UsageError(f"ini xp_env_changes = {env_changes!r}: use warn, rerun or ignore")
    raw_wait, wait_source = setting(config, "xp_wait")
    try:
        wait_s = float(raw_wait) if raw_wait is not None else 3600.0
    except ValueError:
        wait_s = -1.0
    if not 0 <= wait_s <= MAX_TIMEOUT_S:
        raise pytest.UsageError(
            f"{wait_source}={raw_wait!r}: give a number of seconds with 0 <= SECONDS <= {MAX_TIMEOUT_S:g}"
        )
    timeout_s: float | None = None
    raw_timeout, timeout_source = setting(config, "xp_timeout")
    if raw_timeout is not None:
        try:
            timeout_s = float(raw_timeout)
        except ValueError:
            timeout_s = -1.0
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise pytest.UsageError(
                f"{timeout_source}={raw_timeout!r}: give a number of seconds with 0 < SECONDS <= {MAX_TIMEOUT_S:g} "
                "(about a year); leave the option out for no limit"
            )
    max_memory: int | None = None
    raw_memory, memory_source = setting(config, "xp_max_memory")
    if raw_memory is not None:
        try:
            max_memory = parse_memory(raw_memory)
        except ValueError as exc:
            raise pytest.UsageError(f"{memory_source}={raw_memory!r}: {exc}") from None
    isolate, isolate_source = setting(config, "xp_isolate")
    if isolate is not None and isolate not in ISOLATE_METHODS:
        raise pytest.UsageError(f"{isolate_source} = {isolate!r}: use {', '.join(ISOLATE_METHODS)}")
    if isolate is None and (timeout_s is not None or max_memory is not None):
        isolate = "fork"
    if isolate is not None:
        problem = platform_problem(isolate, max_memory)
        if problem is not None:
            raise pytest.UsageError(problem)
    gpus: list[str] = []
    raw_gpus, gpus_source = setting(config, "xp_gpus")
    if raw_gpus is not None:
        try:
            gpus = parse_gpus(raw_gpus) or []
        except ValueError as exc:
            raise pytest.UsageError(f"{gpus_source}={raw_gpus!r}: {exc}") from None
        if not gpus:
            raise pytest.UsageError(
                f"{gpus_source}={raw_gpus!r}: no GPU found on this machine; list device ids instead"
            )
    layers = _config_layers(config)
    try:
        context_overrides = tuple(parse_dotted_override(text) for text in config.getoption("xp_context"))
    except ConfigFileError as exc:
        raise pytest.UsageError(str(exc)) from None
    cli_values = [parse_value_override(text) for text in config.getoption("xp_values")]
    cli_keys = {(v.trial, v.param) for v in cli_values}
    file_values = [v for v in layered_values(layers) if (v.trial, v.param) not in cli_keys]
    pre = [layer.pre_experiment for layer in layers if layer.pre_experiment]
    pre += [_ini_path(config, str(entry)) for entry in config.getini("xp_pre_experiment")]
    return XpConfig(
        config_layers=layers,
        context_overrides=context_overrides,
        value_overrides=(*file_values, *cli_values),
        show_config=bool(config.getoption("xp_show_config")),
        log_path=_log_path(config),
        stream=bool(config.getoption("xp_stream")) or stream_from_env(),
        status_s=_status_seconds(config.getoption("xp_status")),
        note=config.getoption("xp_note") or None,
        pre_experiment=tuple(dict.fromkeys(pre)),
        gpus=tuple(gpus),
        isolate=isolate,
        timeout_s=timeout_s,
        max_memory=max_memory,
        wait_s=wait_s,
        no_wait=flag(config, "xp_no_wait"),
        correction=correction,
        xp_dir=xp_dir,
        seed=seed,
        fail_on=fail_on,
        reports=reports,
        file_patterns=patterns,
        cache=raw_cache != "off",
        rerun=bool(config.getoption("xp_rerun")),
        explain=flag(config, "xp_explain"),
        plan=bool(config.getoption("xp_plan")),
        sample=_positive_int("--xp-sample", config.getoption("xp_sample")),
        shard=parse_shard(config.getoption("xp_shard")),
        dirty_git=dirty_git,
        report_x=report_x,
        name=setting(config, "xp_name")[0],
        env_changes=env_changes,
        audit=audit,
        baseline=config.getoption("xp_baseline") or None,
    )


def setting(config: pytest.Config, dest: str) -> tuple[str | None, str]:
    """A setting's value (None: not set) and where it came from: the option, else its ini key of the same name."""
    value = config.getoption(dest, default=None)
    if value is not None:
        return str(value), "--" + dest.replace("_", "-")
    text = str(config.getini(dest) or "").strip()
    return (text or None), f"ini {dest}"


def flag(config: pytest.Config, dest: str) -> bool:
    """An on/off option: given on the command line, or switched on by its ini key."""
    return bool(config.getoption(dest, default=None)) or bool(config.getini(dest))


#: ``--xp-report`` formats: those that write a file take ``FORMAT:PATH``.
REPORT_FORMATS = {"term": False, "github": False, "md": True, "html": True, "json": True}
_REPORT_ALIASES = {"terminal": "term", "markdown": "md"}


def parse_report_spec(spec: str) -> tuple[str, str | None]:
    """``FORMAT`` or ``FORMAT:PATH`` -> (format, path or None); ValueError saying what is accepted."""
    kind, sep, path = spec.partition(":")
    kind = _REPORT_ALIASES.get(kind.strip().lower(), kind.strip().lower())
    usage = "use term, github, md:PATH, html:PATH or json:PATH (e.g. --xp-report=html:report.html)"
    if kind not in REPORT_FORMATS:
        hint = ""
        if not sep:
            hint = "; write --xp-report=FORMAT with '=': a bare --xp-report takes the next argument as its format"
        raise ValueError(f"unknown report format {spec!r}: {usage}{hint}")
    if REPORT_FORMATS[kind] and not path.strip():
        raise ValueError(f"{kind} report needs a file: --xp-report={kind}:PATH")
    if not REPORT_FORMATS[kind] and sep:
        raise ValueError(f"{kind} report takes no path: --xp-report={kind}")
    return kind, path.strip() or None


def normalize_report_spec(spec: str, base: Path, source: str = "--xp-report") -> str:
    """A validated spec with an absolute path (relative paths are taken from ``base``)."""
    try:
        kind, path = parse_report_spec(spec)
    except ValueError as exc:
        raise pytest.UsageError(f"{source}={spec!r}: {exc}") from None
    if path is None:
        return kind
    target = Path(path).expanduser()
    return f"{kind}:{target if target.is_absolute() else base / target}"


def _positive_int(option: str, raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise pytest.UsageError(f"{option}={raw!r}: give a positive integer")
    return value


def parse_shard(raw: str | None) -> tuple[int, int] | None:
    if raw is None:
        return None
    index, sep, total = raw.partition("/")
    try:
        i, n = int(index), int(total)
    except ValueError:
        i, n = -1, 0
    if not sep or n < 1 or not 0 <= i < n:
        raise pytest.UsageError(f"--xp-shard={raw!r}: use I/N with 0 <= I < N, e.g. --xp-shard 0/4")
    return i, n


#: Environment variables that turn streaming on (the second is the reference document's name).
STREAM_ENV = ("PYTEST_XP_STREAM", "MLX_STREAM_ALL")


def stream_from_env(environ: dict[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return any(env.get(name, "").strip().lower() in ("1", "true", "yes", "on") for name in STREAM_ENV)


def _status_seconds(raw: str | None) -> float:
    if raw is None:
        return 30.0
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if value < 0:
        raise pytest.UsageError(f"--xp-status={raw!r}: give seconds between status lines, or 0 for none")
    return value


def _log_path(config: pytest.Config) -> Path | None:
    raw = config.getoption("xp_log")
    base = Path(config.invocation_params.dir) if raw is not None else config.rootpath
    text = str(raw if raw is not None else config.getini("xp_log")).strip()
    if text.lower() in ("off", "none", "no", ""):
        return None
    path = Path(text).expanduser()
    return path if path.is_absolute() else base / path


def _ini_path(config: pytest.Config, entry: str) -> str:
    """A file named in the ini file, made absolute from the ini file's directory; a module name as is."""
    if not (entry.endswith((".py", ".yaml", ".yml")) or "/" in entry):
        return entry
    base = config.inipath.parent if config.inipath is not None else config.rootpath
    path = Path(entry).expanduser()
    return str(path if path.is_absolute() else base / path)


def _config_layers(config: pytest.Config) -> tuple[ConfigLayer, ...]:
    """The layers of every ``--xp-config`` file (else ini ``xp_config``), each file's parents first."""
    given = [(str(p), Path(config.invocation_params.dir)) for p in config.getoption("xp_config")]
    if not given:
        given = [(_ini_path(config, str(p)), config.rootpath) for p in config.getini("xp_config")]
    layers: list[ConfigLayer] = []
    for raw, base in given:
        path = Path(raw).expanduser()
        try:
            layers.extend(load_config_file(path if path.is_absolute() else base / path))
        except ConfigFileError as exc:
            raise pytest.UsageError(str(exc)) from None
    return tuple(layers)


def parse_value_override(text: str) -> ValueOverride:
    """``trial.param=[...]`` -> (trial, param, values), validated like decorator values."""
    target, sep, raw = text.partition("=")
    trial, dot, param = target.strip().partition(".")
    if not sep or not dot or not trial.isidentifier() or not param.isidentifier():
        raise pytest.UsageError(f"--xp-values {text!r}: use TRIAL.PARAM=LIST, e.g. --xp-values 'train.lr=[0.1, 0.01]'")
    try:
        values = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        raise pytest.UsageError(
            f"--xp-values {text!r}: {raw.strip()!r} is not a Python literal list; quote strings: \"['a', 'b']\""
        ) from None
    if not isinstance(values, list) or not values:
        raise pytest.UsageError(f"--xp-values {text!r}: the value must be a non-empty list, e.g. [{raw.strip()}]")
    try:
        check_literal(values, f"--xp-values {trial}.{param}")
    except GridError as exc:
        raise pytest.UsageError(str(exc)) from None
    return ValueOverride(trial, param, values, "--xp-values")


_MEMORY_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_MEMORY_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*([KMGT]?)(?:I?B)?", re.IGNORECASE)


def parse_memory(text: str) -> int:
    """Bytes from ``"512M"``, ``"2G"``, ``"1.5GiB"`` or ``"1000000"``; every unit is a power of 1024."""
    match = _MEMORY_RE.fullmatch(text.strip())
    number, unit = (match.group(1), match.group(2).upper()) if match else ("", "")
    if not match or (not unit and "." in number):
        raise ValueError(
            f"cannot read {text!r} as a memory size: give whole bytes or a number with K, M, G or T "
            "(powers of 1024, an optional B or iB is ignored), e.g. 512M, 2G, 1.5GiB"
        )
    size = round(float(number) * _MEMORY_UNITS[unit])
    if size <= 0:
        raise ValueError(f"memory size {text!r} must be more than 0 bytes")
    return size


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


def platform_problem(
    start_method: str | None, max_memory: int | None, platform: str = sys.platform, has_proc: bool | None = None
) -> str | None:
    """Why isolation as asked cannot run on this platform (None: it can).

    Isolation watches a child through POSIX process groups and signals, so it needs Linux or macOS;
    the memory limit measures the child through Linux's /proc, so it needs Linux.
    """
    if start_method is None:
        return None
    if platform.startswith(("win", "cygwin", "msys")):
        return (
            f"isolation (--xp-isolate, --xp-timeout, --xp-max-memory, @trial(isolate=/timeout=)) runs each "
            f"combination in a child process watched through POSIX process groups and signals, which {platform} "
            "does not have: run without it here, or on Linux or macOS (WSL works)"
        )
    proc = os.path.isdir("/proc/self") if has_proc is None else has_proc
    if max_memory is not None and not proc:
        return (
            f"--xp-max-memory measures a combination's processes through Linux's /proc, which {platform} does "
            "not have: run without a memory limit here (--xp-timeout still works), or on Linux"
        )
    return None
