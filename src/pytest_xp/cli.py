"""The ``pytest-xp`` console script: reports and session lists from a store, without running anything.

pytest-xp report [XP_DIR] [--format term|md|html|json|github] [-o PATH] [--experiment X] [--trial T]
pytest-xp runs [XP_DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

FORMATS = ("term", "md", "html", "json", "github")


def _parser() -> argparse.ArgumentParser:
    from pytest_xp import __version__

    parser = argparse.ArgumentParser(prog="pytest-xp", description="Read a pytest-xp results store.")
    parser.add_argument("--version", action="version", version=f"pytest-xp {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report = commands.add_parser(
        "report",
        help="render a report of the stored combinations and the latest verdicts",
        description="Render a report from the store: every stored combination, and each verify's latest verdict "
        "from the run manifests. Nothing is run.",
    )
    report.add_argument("xp_dir", nargs="?", default=".xp", metavar="XP_DIR", help="the store (default: .xp)")
    report.add_argument(
        "-f",
        "--format",
        default="term",
        metavar="FORMAT",
        help="term (default), md, html, json or github; FORMAT:PATH writes to PATH like --xp-report does",
    )
    report.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: standard output)")
    report.add_argument("--experiment", default=None, help="only this module (path, file name or stem)")
    report.add_argument("--trial", default=None, help="only this trial name")
    report.add_argument(
        "--x",
        choices=("step", "wallclock", "both"),
        default="step",
        help="x axis of the metric figures (default: step)",
    )
    runs = commands.add_parser("runs", help="list the sessions recorded in the store")
    runs.add_argument("xp_dir", nargs="?", default=".xp", metavar="XP_DIR", help="the store (default: .xp)")
    return parser


def _fail(message: str) -> int:
    sys.stderr.write(f"pytest-xp: {message}\n")
    return 2


def _report(args: argparse.Namespace) -> int:
    from pytest_xp.config import parse_report_spec

    try:
        kind, spec_path = parse_report_spec(args.format)
    except ValueError:
        kind, spec_path = args.format, None
    if kind not in FORMATS:
        return _fail(f"--format {args.format!r}: choose from {', '.join(FORMATS)}")
    output = args.output or (Path(spec_path) if spec_path else None)
    if args.experiment is not None or args.trial is not None:
        from pytest_xp.store.frames import selection_problem

        problem = selection_problem(args.xp_dir, args.experiment, args.trial)
        if problem is not None:
            return _fail(problem)
    try:
        from pytest_xp.report.data import gather
        from pytest_xp.report.render import (
            append_github_summary,
            render_html,
            render_json,
            render_markdown,
            render_text,
            write_report,
        )

        axes = {"step": ("step",), "wallclock": ("wallclock",), "both": ("step", "wallclock")}[args.x]
        data = gather(args.xp_dir, experiment=args.experiment, trial=args.trial, plot_x=axes)
    except ImportError as exc:
        return _fail(f"{exc}; reports need pandas and matplotlib: pip install 'pytest-xp[reports]'")
    if kind == "github":
        where = append_github_summary(data)
        if where is None:
            sys.stdout.write(render_markdown(data))
            sys.stderr.write("pytest-xp: $GITHUB_STEP_SUMMARY is not set; printed the summary instead\n")
        return 0
    if output is not None:
        try:
            where = write_report(kind, output, data)
        except (OSError, ValueError) as exc:
            return _fail(f"the {kind} report could not be written: {exc}")
        sys.stderr.write(f"pytest-xp: {kind} report written to {where}\n")
        return 0
    render = {"term": render_text, "md": render_markdown, "html": render_html, "json": render_json}[kind]
    sys.stdout.write(render(data))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``pytest-xp``; returns the exit status (2 for a usage problem)."""
    args = _parser().parse_args(argv)
    root = Path(args.xp_dir)
    if not root.is_dir():
        return _fail(f"no store at {root}: run some experiments first, or name the store: pytest-xp {args.command} DIR")
    if args.command == "runs":
        from pytest_xp.store.provenance import format_runs, list_runs

        sys.stdout.write("\n".join(format_runs(list_runs(root))) + "\n")
        return 0
    return _report(args)


if __name__ == "__main__":  # pragma: no cover - python -m pytest_xp.cli
    raise SystemExit(main())
