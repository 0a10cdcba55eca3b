"""The ``pytest-xp`` console script: reports and session lists from a store, without running anything.

pytest-xp report [XP_DIR] [--format term|md|html|json|github] [-o PATH] [--experiment X] [--trial T]
pytest-xp runs [XP_DIR]
pytest-xp versions [XP_DIR] EXPERIMENT::TRIAL[COMBINATION]
pytest-xp diff [XP_DIR] EXPERIMENT::TRIAL[COMBINATION] [A B]
pytest-xp migrate [XP_DIR]
pytest-xp history [PATTERN] [--dir XP_DIR] [--format term|md|html|json] [-o PATH]
pytest-xp register PATTERN [--dir XP_DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

FORMATS = ("term", "md", "html", "json", "github")
HISTORY_FORMATS = ("term", "md", "html", "json")


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
    versions = commands.add_parser(
        "versions",
        help="list the kept records of one combination (one per cache key), the latest last",
        description="List the records the store keeps of one combination: one per cache key it was run with.",
    )
    _store_and_selector(versions)
    diff = commands.add_parser(
        "diff",
        help="show what differs between two versions of one combination (default: the last two)",
        description="Compare two kept records of one combination: key parts (code, SETUP, context, params, "
        "upstream records) first, then results. Versions are numbered as `pytest-xp versions` lists them.",
    )
    _store_and_selector(diff)
    migrate = commands.add_parser(
        "migrate",
        help="rename combination directories of stores written before pytest-xp kept record history",
        description="Rename old combination directories (<params>-<6 hex>) to the collision-free layout "
        "(<params>-<sha256 of params>). Safe to run twice.",
    )
    migrate.add_argument("xp_dir", nargs="?", default=".xp", metavar="XP_DIR", help="the store (default: .xp)")
    compact = commands.add_parser(
        "compact",
        help="merge each trial's finished record segments into one pack file",
        description="Merge the record segments of processes that have finished into one pack per trial, keeping "
        "one record per combination and cache key. Segments of running sessions are left alone; safe to run "
        "beside them. Sessions do this by themselves when segments pile up.",
    )
    compact.add_argument("xp_dir", nargs="?", default=".xp", metavar="XP_DIR", help="the store (default: .xp)")
    history = commands.add_parser(
        "history",
        help="every session's verdict of each hypothesis, newest first",
        description="One row per session that judged each hypothesis: date, commit (* = uncommitted changes), "
        "verdict, effect with its interval, n and p. Read from the run manifests; nothing is run.",
    )
    history.add_argument(
        "pattern", nargs="?", default=None, metavar="PATTERN", help="node id substring or glob (default: all)"
    )
    history.add_argument("--dir", dest="xp_dir", default=".xp", metavar="XP_DIR", help="the store (default: .xp)")
    history.add_argument(
        "-f", "--format", default="term", choices=HISTORY_FORMATS, help="term (default), md, html, json"
    )
    history.add_argument("-o", "--output", type=Path, default=None, help="file to write (default: standard output)")
    register = commands.add_parser(
        "register",
        help="accept the current analysis of hypotheses as their registration (clears post-hoc)",
        description="Make the verify code and decision settings of each matching hypothesis's latest judgement "
        "its registration, so that later verdicts on the same data are no longer marked post-hoc. The history "
        "keeps when it was done.",
    )
    register.add_argument("pattern", metavar="PATTERN", help="node id substring or glob; '*' for every hypothesis")
    register.add_argument("--dir", dest="xp_dir", default=".xp", metavar="XP_DIR", help="the store (default: .xp)")
    return parser


def _compact(root: Path) -> int:
    from pytest_xp.store.store import Store

    merged = Store(root).compact_all(min_files=1)
    lines = [f"{trial}: merged {count} file(s) into one pack" for trial, count in sorted(merged.items())]
    sys.stdout.write("\n".join(lines or ["nothing to compact"]) + "\n")
    return 0


def _register(args: argparse.Namespace) -> int:
    from pytest_xp.report.history_rows import matches
    from pytest_xp.store.frames import list_manifests, module_slug
    from pytest_xp.store.records import now_iso
    from pytest_xp.store.registry import registration_path, write_registration

    latest: dict[str, tuple[dict[str, object], str, str | None]] = {}
    for manifest in list_manifests(args.xp_dir):
        git = manifest.get("git") if isinstance(manifest.get("git"), dict) else {}
        for entry in manifest.get("hypotheses") or []:
            nodeid = entry.get("nodeid") if isinstance(entry, dict) else None
            if (
                isinstance(nodeid, str)
                and isinstance(entry.get("registration"), dict)
                and matches(nodeid, args.pattern)
            ):
                latest[nodeid] = (entry["registration"], str(manifest.get("session", "")), (git or {}).get("commit"))
    if not latest:
        return _fail(f"no judged hypothesis matches {args.pattern!r} in {args.xp_dir}; see pytest-xp history")
    for nodeid, (observed, session, commit) in sorted(latest.items()):
        module, _, name = nodeid.rpartition("::")
        path = registration_path(Path(args.xp_dir), module_slug(module), name)
        write_registration(
            path, nodeid, dict(observed), how="pytest-xp register", at=now_iso(), session=session, commit=commit
        )
        sys.stdout.write(f"registered {nodeid} (as judged in session {session})\n")
    return 0


def _verdict_history(args: argparse.Namespace) -> int:
    import warnings

    from pytest_xp.report import history as _h
    from pytest_xp.report import history_pages as _pages

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = _h.read_history(args.xp_dir, args.pattern)
    for warning in caught:
        sys.stderr.write(f"{warning.message}\n")
    render = {
        "term": _h.render_history_text,
        "md": _pages.render_history_markdown,
        "html": _pages.render_history_html,
        "json": _h.render_history_json,
    }[args.format]
    text = render(data)
    if args.output is not None:
        args.output.write_text(text, encoding="utf-8")
        sys.stderr.write(f"pytest-xp: {args.format} history written to {args.output}\n")
    else:
        sys.stdout.write(text)
    return 0


def _store_and_selector(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "args",
        nargs="+",
        metavar="ARG",
        help="[XP_DIR] EXPERIMENT::TRIAL[COMBINATION] (the item id); diff also takes two version numbers",
    )


def _history(args: argparse.Namespace) -> int:
    from pytest_xp.store.frames import versions_of
    from pytest_xp.store.history import diff_records, find_combination, format_versions

    positional = list(args.args)
    numbers: list[int] = []  # diff: two version numbers may follow the selector
    if args.command == "diff":
        while positional and positional[-1].isdigit():
            numbers.insert(0, int(positional.pop()))
    if not positional:
        return _fail(f"{args.command}: name a combination, e.g. pytest-xp {args.command} xp_adam.py::train[lr_0.1]")
    selector = positional.pop()
    root = Path(positional[0]) if positional else Path(".xp")
    if not root.is_dir():
        return _fail(f"no store at {root}: name the store: pytest-xp {args.command} DIR {selector}")
    try:
        found = find_combination(root, selector)
    except ValueError as exc:
        return _fail(str(exc))
    versions = versions_of(found.directory)
    if args.command == "versions":
        sys.stdout.write(f"{found.directory}\n" + "\n".join(format_versions(versions)) + "\n")
        return 0
    if len(versions) < 2 and not numbers:
        sys.stdout.write("only one version of this combination is kept; nothing to compare\n")
        return 0
    pair = numbers or [len(versions) - 1, len(versions)]
    if len(pair) != 2 or not all(1 <= n <= len(versions) for n in pair):
        return _fail(f"diff takes two version numbers between 1 and {len(versions)} (see pytest-xp versions)")
    old, new = versions[pair[0] - 1], versions[pair[1] - 1]
    sys.stdout.write(f"version {pair[0]} -> version {pair[1]} of {selector}\n")
    sys.stdout.write("\n".join(f"  {line}" for line in diff_records(old, new)) + "\n")
    return 0


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
    if args.command in ("versions", "diff"):
        return _history(args)
    root = Path(args.xp_dir)
    if not root.is_dir():
        where = "--dir DIR" if args.command == "history" else "DIR"
        return _fail(
            f"no store at {root}: run some experiments first, or name the store: pytest-xp {args.command} {where}"
        )
    if args.command == "runs":
        from pytest_xp.store.provenance import format_runs, list_runs

        sys.stdout.write("\n".join(format_runs(list_runs(root))) + "\n")
        return 0
    if args.command == "migrate":
        from pytest_xp.store.history import migrate

        moved = migrate(root)
        sys.stdout.write("\n".join(moved or ["nothing to migrate: the store already uses the current layout"]) + "\n")
        return 0
    if args.command == "compact":
        return _compact(root)
    if args.command == "history":
        return _verdict_history(args)
    if args.command == "register":
        return _register(args)
    return _report(args)


if __name__ == "__main__":  # pragma: no cover - python -m pytest_xp.cli
    raise SystemExit(main())
