"""Run the pytest-xp benchmarks and write ``benchmarks/results/latest.md`` and ``latest.json``.

    python benchmarks/run.py            # full sizes, 3-5 interleaved repeats (about 15-20 minutes on 2 cores)
    python benchmarks/run.py --quick    # tiny sizes, 1-2 repeats: a smoke test for CI (< 2 minutes)
    python benchmarks/run.py --only overhead,cached

Every figure is a ratio against a baseline measured in the same run, the two alternating
(A B A B ...); the table shows the median ratio and its min-max. Missed goals are reported, not
failed: the exit status is non-zero only when a benchmark could not run (a subprocess failed,
an output was not what the scenario expects). Not part of the test suite.

By default the pytest-xp package is copied into the temp dir first and that copy is what every
subprocess imports, so edits made to src/ while a run is in progress cannot mix two versions
into one table (``--no-snapshot`` measures the installed package in place).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, distributions, version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _bench import QUIET, BenchError, Row, clean_env, markdown_table
from scale import SCALE_SCENARIOS
from scenarios import SCENARIOS, Ctx, sizes_for, warm_up

SCENARIOS.update(SCALE_SCENARIOS)  # issue 18: huge grids (benchmarks/scale.py)

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_HYDRA = Path.home() / ".cache" / "pytest-xp-bench" / "hydra"
PACKAGES = (
    "pytest",
    "pytest-xdist",
    "execnet",
    "pluggy",
    "pytest-xp",
    "numpy",
    "torch",
    "filelock",
    "hydra-core",
    "hydra-joblib-launcher",
    "omegaconf",
    "joblib",
    "pyinstrument",
)


def snapshot_package(tmp: Path) -> tuple[Path, str]:
    """Copy the importable pytest_xp package to ``tmp/snapshot``; return that root and a source digest."""
    spec = importlib.util.find_spec("pytest_xp")
    if spec is None or spec.origin is None:
        raise SystemExit("pytest_xp is not importable from this interpreter; pip install -e . first")
    src = Path(spec.origin).parent
    root = tmp / "snapshot"
    shutil.copytree(src, root / "pytest_xp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return root, source_digest(root / "pytest_xp")


def source_digest(package: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        h.update(path.relative_to(package).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _read_only_git(*args: str) -> str | None:
    """Read-only git queries (no index refresh, no locks) describing the measured tree."""
    try:
        done = subprocess.run(
            ["git", "--no-optional-locks", *args], cwd=REPO, capture_output=True, text=True, timeout=20, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def machine(env: dict[str, str], digest: str | None, hydra_site: Path) -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions: dict[str, str] = {}
    elsewhere = {d.metadata["Name"].lower(): d.version for d in distributions(path=[str(hydra_site)])}
    for dist in PACKAGES:
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = f"{elsewhere[dist]} (in {hydra_site})" if dist in elsewhere else "not installed"
    status = _read_only_git("status", "--porcelain", "--untracked-files=no", "--", "src")
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": mem_gb,
        "os": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "packages": versions,
        "pytest_xp_commit": _read_only_git("rev-parse", "--short", "HEAD"),
        "pytest_xp_src_dirty": bool(status) if status is not None else None,
        "pytest_xp_source_digest": digest,
        "loadavg_start": list(os.getloadavg()),
    }


def filesystem_of(path: Path) -> str:
    """The mount (type) holding ``path``, from /proc/mounts: the longest mount point above it."""
    best, kind = "", "unknown"
    try:
        for line in Path("/proc/mounts").read_text().splitlines():
            parts = line.split()
            if (
                len(parts) >= 3
                and str(path.resolve()).startswith(parts[1].rstrip("/") + "/")
                and len(parts[1]) > len(best)
            ):
                best, kind = parts[1], parts[2]
    except OSError:
        pass
    return f"{kind} at {best or '?'}"


def fs_probe(tmp: Path, n: int = 2000) -> float:
    """Seconds to create ``n`` directories with one small file each under ``tmp`` (then removed).

    Every pytest-xp combination creates a directory and files; on some virtual machines that cost
    grows through a session (ext4 under heavy create/delete churn), so it is recorded at start and end.
    """
    root = tmp / "fs-probe"
    start = time.perf_counter()
    for i in range(n):
        d = root / f"d{i}"
        d.mkdir(parents=True)
        (d / "f.json").write_text("{}", encoding="utf-8")
    took = time.perf_counter() - start
    shutil.rmtree(root, ignore_errors=True)
    return round(took, 3)


def describe(info: dict[str, Any]) -> str:
    pk = info["packages"]
    names = ", ".join(f"{k} {v}" for k, v in pk.items() if v != "not installed")
    missing = [k for k, v in pk.items() if v == "not installed"]
    src = info["pytest_xp_commit"] or "?"
    if info.get("pytest_xp_src_dirty"):
        src += " + uncommitted changes in src/"
    lines = [
        f"- Machine: {info['cpu']}, {info['usable_cores']} usable cores (of {info['cores']}), "
        f"{info['memory_gb']} GB RAM; {info['os']}",
        f"- Python: {info['python']}",
        f"- Packages: {names}" + (f" (not installed: {', '.join(missing)})" if missing else ""),
        f"- pytest-xp measured: commit {src}, source digest {info['pytest_xp_source_digest'] or 'not snapshotted'}",
        f"- Temp dir: {info['tmp']['filesystem']}; creating 2000 directories with a small file each took "
        f"{info['tmp']['probe_start_s']} s at the start and {info['tmp'].get('probe_end_s', '?')} s at the end",
        f"- Load average at start / end: {' '.join(f'{x:.2f}' for x in info['loadavg_start'])} / "
        f"{' '.join(f'{x:.2f}' for x in info.get('loadavg_end', []))}",
    ]
    return "\n".join(lines)


def merge_previous(
    path: Path, rows: list[Row], chosen: list[str], prof: dict[str, Any] | None, info: dict[str, Any]
) -> tuple[list[Row], dict[str, Any] | None, str]:
    """Rows of the scenarios not re-run now, taken from the previous latest.json, in scenario order."""
    old = json.loads(path.read_text(encoding="utf-8"))
    kept = [Row(**r["raw"]) for r in old.get("rows", []) if r.get("raw") and r["raw"].get("scenario") not in chosen]
    order = {name: i for i, name in enumerate(SCENARIOS)}
    merged = sorted([*kept, *rows], key=lambda r: order.get(r.scenario, len(order)))
    if prof is None and "profile" not in chosen:
        prof = old.get("profile")
    before = old.get("machine", {})
    info["merged_from"] = {
        "date": old.get("date"),
        "commit": before.get("pytest_xp_commit"),
        "source_digest": before.get("pytest_xp_source_digest"),
    }
    when = sorted({r.measured_at for r in kept if r.measured_at})
    note = (
        f" Merged: {', '.join(chosen)} re-measured now; the other rows were measured {f'from {when[0]} to {when[-1]}' if when else 'earlier'} "
        f"(the previous file's pytest-xp source digest: {before.get('pytest_xp_source_digest')})."
    )
    return merged, prof, note


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and 1-2 repeats (CI smoke run)")
    parser.add_argument("--only", default="", help=f"comma list of scenarios: {','.join(SCENARIOS)}")
    parser.add_argument("--repeats", type=int, default=None, help="override every scenario's repeat count")
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="where latest.md/json go")
    parser.add_argument("--no-snapshot", action="store_true", help="measure the installed package in place")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=0.0,
        metavar="S",
        help="before each timed run wait up to S seconds for the machine's CPUs to be idle "
        "(useful on a shared machine; the busy fraction seen is recorded either way)",
    )
    parser.add_argument(
        "--tmp",
        type=Path,
        default=None,
        metavar="DIR",
        help="where the experiment files, stores and baselines' outputs go (default: the system "
        "temp dir). Its file system is part of every figure: see the probe in the machine lines",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the rows of scenarios not re-run from the existing latest.json (each row "
        "says when it was measured); for re-measuring one scenario on a noisy machine",
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (experiment files, stores)")
    parser.add_argument(
        "--store-big-n",
        type=int,
        default=None,
        metavar="N",
        help="records in the store_big scenario (default: a million; --quick: 2000)",
    )
    parser.add_argument(
        "--hydra-site",
        type=Path,
        default=Path(os.environ.get("XP_BENCH_HYDRA_SITE", DEFAULT_HYDRA)),
        help="a `pip install --target` directory holding hydra-core, used when this environment "
        f"lacks it (default: $XP_BENCH_HYDRA_SITE or {DEFAULT_HYDRA})",
    )
    args = parser.parse_args(argv)

    chosen = [s.strip() for s in args.only.split(",") if s.strip()] or list(SCENARIOS)
    unknown = [s for s in chosen if s not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; choose from {', '.join(SCENARIOS)}")

    QUIET["wait_s"] = args.quiet_wait
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="pytest-xp-bench-", dir=args.tmp))
    snapshot, digest = (None, None) if args.no_snapshot else snapshot_package(tmp)
    env = clean_env(snapshot, tmp / "pycache")
    info = machine(env, digest, args.hydra_site)
    info["tmp"] = {"path": str(tmp), "filesystem": filesystem_of(tmp), "probe_start_s": fs_probe(tmp)}
    sizes = sizes_for(args.quick, args.repeats)
    if args.store_big_n is not None:
        sizes = dataclasses.replace(sizes, store_big_n=args.store_big_n)

    def log(msg: str) -> None:
        print(msg, flush=True)

    ctx = Ctx(
        sizes=sizes,
        tmp=tmp,
        env=env,
        log=log,
        quick=args.quick,
        results_dir=args.out,
        snapshot_root=snapshot,
        extras={"hydra_site": args.hydra_site},
    )
    log(f"pytest-xp benchmarks ({'quick' if args.quick else 'full'}), temp dir {tmp}")
    if snapshot is not None:
        where = subprocess.run(
            [sys.executable, "-c", "import pytest_xp; print(pytest_xp.__file__)"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        if not where.startswith(str(snapshot)):
            log(f"warning: subprocesses import pytest_xp from {where}, not the snapshot")
    rows: list[Row] = []
    errors: list[str] = []
    try:
        warm_up(ctx)
    except BenchError as exc:
        log(f"warm-up failed (the scenarios will say more): {str(exc).splitlines()[0]}")
    timings: dict[str, float] = {}
    for name in chosen:
        log(f"== {name}")
        t0 = time.perf_counter()
        try:
            got = SCENARIOS[name](ctx)
        except BenchError as exc:
            errors.append(f"{name}: {exc}")
            log(f"ERROR in {name}: {exc}")
            rows.append(
                Row(id=name, title=name, a_label="–", b_label="–", status="error", note=str(exc).splitlines()[0][:200])
            )
        except Exception as exc:  # noqa: BLE001 - report every scenario, then exit non-zero
            errors.append(f"{name}: {traceback.format_exc()}")
            log(f"ERROR in {name}:\n{traceback.format_exc()}")
            rows.append(
                Row(
                    id=name,
                    title=name,
                    a_label="–",
                    b_label="–",
                    status="error",
                    note=f"{type(exc).__name__}: {exc}"[:200],
                )
            )
        else:
            for row in got:
                row.scenario = name
                row.measured_at = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
                row.evaluate()
                if args.quick and row.status in ("met", "missed"):
                    row.status += "*"
            rows.extend(got)
        timings[name] = round(time.perf_counter() - t0, 1)
        log(f"   {name} took {timings[name]:.0f} s")
    merged_note = ""
    prof = ctx.extras.get("profile")
    if args.merge and (args.out / "latest.json").is_file():
        rows, prof, merged_note = merge_previous(args.out / "latest.json", rows, chosen, prof, info)
    info["loadavg_end"] = list(os.getloadavg())
    info["tmp"]["probe_end_s"] = fs_probe(tmp)
    total = time.perf_counter() - started

    table = markdown_table(rows)
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "quick (tiny sizes, not representative: a smoke test)" if args.quick else "full"
    md = [
        f"# pytest-xp benchmarks — {mode}",
        "",
        f"Run {stamp}, {total:.0f} s in all.{merged_note}",
        "",
        describe(info),
        "",
        "A is what is measured, B the baseline run alternately with it in the same session. "
        "A/B: lower is better (overhead); B/A: speed-up of A over B. Medians of the repeats; "
        "ratio min–max in brackets." + (" `*`: quick sizes, the goals apply to full runs." if args.quick else ""),
        "",
        table,
    ]
    if prof:
        md += [
            "",
            f"## Profile: {prof['n']} trivial combinations, `-n 0` (cProfile; profiled "
            f"{prof['profiled_total_s']} s, unprofiled wall {prof['wall_unprofiled_s']} s)",
            "",
            "| pytest-xp function | calls | cumulative ms per combination | self s |",
            "|---|---:|---:|---:|",
        ]
        for e in prof["top_pytest_xp"][:15]:
            md.append(
                f"| `{e['function']}` | {e['ncalls']} | {e['cum_ms_per_combination']:.3f} | {e['tottime_s']:.3f} |"
            )
    if errors:
        md += ["", "## Errors", ""] + [f"```\n{e}\n```" for e in errors]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.md").write_text("\n".join(md) + "\n", encoding="utf-8")
    payload = {
        "mode": "quick" if args.quick else "full",
        "date": stamp,
        "total_s": round(total, 1),
        "scenario_s": timings,
        "machine": info,
        "sizes": sizes.__dict__,
        "rows": [r.as_dict() for r in rows],
        "profile": prof,
        "errors": errors,
    }
    (args.out / "latest.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    print()
    print(table)
    print(f"wrote {args.out / 'latest.md'} and latest.json ({total:.0f} s)")
    if not args.keep_tmp:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"kept {tmp}")
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
