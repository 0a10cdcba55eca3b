"""Command-line options and ini keys, validated once into a frozen config object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from ._verdicts import DEFAULT_FAIL_ON, parse_fail_on


@dataclass(frozen=True)
class XpConfig:
    """Validated pytest-xp settings of one session (identical in controller and workers)."""

    xp_dir: Path
    seed: int
    fail_on: frozenset[str]
    reports: tuple[str, ...]
    file_patterns: tuple[str, ...]


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
        help="base seed for combinations that get no seed from SETUP or their parameters (default 0)",
    )
    group.addoption(
        "--xp-fail-on",
        dest="xp_fail_on",
        default=None,
        metavar="LIST",
        help="comma list of what makes the session fail: refutes, invalid, inconclusive, continue, "
        f"trial-failures (default: ini xp_fail_on, else {','.join(DEFAULT_FAIL_ON)})",
    )
    group.addoption(
        "--xp-report",
        dest="xp_report",
        action="append",
        nargs="?",
        const="term",
        default=None,
        metavar="FORMAT",
        help="after the run, print a summary of every verify and trial",
    )
    parser.addini("xp_dir", "pytest-xp results store directory, relative to the rootdir", default=".xp")
    parser.addini("xp_fail_on", "what makes the session fail (see --xp-fail-on)", default=",".join(DEFAULT_FAIL_ON))
    parser.addini("xp_files", "glob patterns of experiment modules to collect", type="args", default=["xp_*.py"])


def build_config(config: pytest.Config) -> XpConfig:
    """Read and check every option; a bad value is a UsageError naming the option and the fix."""
    raw_dir = config.getoption("xp_dir") or config.getini("xp_dir") or ".xp"
    xp_dir = Path(raw_dir).expanduser()
    if not xp_dir.is_absolute():
        base = Path.cwd() if config.getoption("xp_dir") else config.rootpath
        xp_dir = base / xp_dir

    raw_seed = config.getoption("xp_seed")
    try:
        seed = int(raw_seed) if raw_seed is not None else 0
    except ValueError:
        raise pytest.UsageError(f"--xp-seed={raw_seed!r}: give an integer, e.g. --xp-seed=0") from None

    raw_fail_on = config.getoption("xp_fail_on")
    source = "--xp-fail-on" if raw_fail_on is not None else "ini xp_fail_on"
    try:
        fail_on = parse_fail_on(raw_fail_on if raw_fail_on is not None else str(config.getini("xp_fail_on")))
    except ValueError as exc:
        raise pytest.UsageError(f"{source}: {exc}") from None

    reports = tuple(config.getoption("xp_report") or ())
    for spec in reports:
        if spec != "term":
            raise pytest.UsageError(f"--xp-report={spec!r}: use --xp-report (terminal summary)")
    patterns = tuple(str(p) for p in config.getini("xp_files"))
    return XpConfig(xp_dir=xp_dir, seed=seed, fail_on=fail_on, reports=reports, file_patterns=patterns)
