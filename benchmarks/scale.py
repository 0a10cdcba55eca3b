"""Scenarios for huge grids (issue 18): a batched 10⁶-combination grid, and controller memory per combination.

``batched``: the grid collects (wall time, peak RSS) and runs end to end under ``-n 2`` (batched
automatically: no ``batch=`` in the module); the per-combination cost is compared with a plain Python
loop, run in the same round, that seeds ``random``, calls the same function and writes the same JSON
record into one directory per combination.

``memory_per_combination``: the controller's peak RSS growth per combination, unbatched and batched,
against plain pytest-xdist's growth per item.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass

from _bench import PYTHON, Cmd, Outcome, Row
from scenarios import Ctx, clear, done_count, expect, pytest_cmd, round_robin, walls, with_cpu, workdir


@dataclass(frozen=True)
class ScaleSizes:
    batched_n: int  # combinations of the end-to-end grid (a multiple of 1000)
    batch: int | None  # batch= written in the module (None: rely on automatic batching)
    plain_small: int  # items for the per-item growth of plain xdist and unbatched pytest-xp
    plain_big: int
    batched_small: int  # combinations for the batched growth
    batched_big: int
    repeats: int


FULL = ScaleSizes(10**6, None, 1_000, 10_000, 10_000, 100_000, 1)
QUICK = ScaleSizes(2_000, 500, 50, 200, 200, 2_000, 1)

LOOP = '''
"""The baseline: what a hand-written loop does for each combination, and nothing more."""
import hashlib, json, os, random, sys, time

n, out = int(sys.argv[1]), sys.argv[2]
VERSIONS = {"python": "3", "pytest": "9", "pytest-xdist": "3", "pytest-xp": "0.1.0"}

def point(a, b):
    return {"y": a * b}

for i in range(n):
    a, b = divmod(i, 1000)
    params = {"a": a, "b": b}
    text = json.dumps(params, sort_keys=True)
    digest = hashlib.sha256(text.encode()).hexdigest()
    seed = int(digest[:8], 16)
    random.seed(seed)
    start = time.time()
    result = point(**params)
    cid = f"a_{a}-b_{b}"
    record = {
        "schema_version": 1, "module": "xp_huge.py", "trial": "point", "combination": cid, "index": i,
        "params": params, "key": digest, "seeds": {"seed": seed, "derived": True, "seeded": ["random"]},
        "session": "baseline", "started_at": start, "ended_at": time.time(), "duration_s": time.time() - start,
        "hostname": "host", "versions": VERSIONS,
        "key_parts": {"module": "xp_huge.py", "trial": "point", "params": params, "context": {},
                      "seeds": {"seed": seed}, "version": "code", "code": {"trial": digest}},
        "env": {}, "success": True, "result": result,
    }
    directory = os.path.join(out, "point", f"{cid}-{digest}")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "record.json"), "w") as fh:
        fh.write(json.dumps(record))
'''


def _grid(n: int, batch: int | None) -> str:
    option = f", batch={batch}" if batch is not None else ""
    return f"""
        from pytest_xp import trial


        @trial(1, {{"a": list(range({n // 1000})), "b": list(range(1000))}}{option})
        def point(a, b):
            return {{"y": a * b}}
        """


def _plain(n: int) -> str:
    return f"""
        import pytest


        @pytest.mark.parametrize("x", range({n}))
        def test_item(x):
            pass
        """


def _collected(n: int, label: str) -> Callable[[Outcome], None]:
    return expect(label, collected=n)


def batched(ctx: Ctx) -> list[Row]:
    s = QUICK if ctx.quick else FULL
    n = s.batched_n
    items = n // (s.batch or 1000)
    per_item = s.batch or 1000
    files = {
        "xp_huge.py": _grid(n, s.batch),
        "xp_one.py": _grid(1000, per_item).replace("def point", "def point_one"),  # one batch: the fixed cost
        "test_items.py": _plain(items),
        "loop.py": LOOP,
    }
    d = workdir(ctx, "batched", files)
    store, out = d / "store", d / "loop_out"
    collect = pytest_cmd(
        ctx,
        "xp collect",
        d,
        ["xp_huge.py", "--collect-only", "--xp-dir", str(store)],
        poll_rss=True,
        check=_collected(items, "xp collect"),
    )
    collect_plain = pytest_cmd(
        ctx,
        "plain collect",
        d,
        ["test_items.py", "--collect-only", "-p", "no:xp"],
        poll_rss=True,
        check=_collected(items, "plain collect"),
    )
    got_collect = round_robin(ctx, [collect, collect_plain], s.repeats)

    def xp_run(label: str, module: str, count: int) -> Cmd:
        args = [module, "-n", "2", "--xp-dir", str(store), "--xp-status", "0"]
        cmd = pytest_cmd(ctx, label, d, args, prepare=clear(store), check=done_count(count, label))
        cmd.timeout_s = max(cmd.timeout_s, 6 * 3600.0)
        return cmd

    loop = Cmd("plain loop", [PYTHON, str(d / "loop.py"), str(n), str(out)], d, ctx.env, prepare=clear(out))
    loop.timeout_s = 6 * 3600.0
    got = round_robin(
        ctx, [xp_run("xp -n 2", "xp_huge.py", items), xp_run("xp one batch", "xp_one.py", 1), loop], s.repeats
    )
    wall = statistics.median(walls(got_collect["xp collect"]))
    rss = statistics.median(o.peak_rss_mb or 0.0 for o in got_collect["xp collect"])
    fixed = statistics.median(walls(got["xp one batch"]))
    per_xp = (statistics.median(walls(got["xp -n 2"])) - fixed) / (n - 1000) * 1e3
    per_loop = statistics.median(walls(got["plain loop"])) / n * 1e3
    times = per_xp / per_loop if per_loop > 0 else float("inf")
    # The same per-combination figure in CPU time (user+sys of every process, workers included): on a
    # shared machine the wall time of two workers and of one loop process depend on the others' load.
    fixed_cpu = statistics.median(o.cpu_s for o in got["xp one batch"])
    cpu_xp = (statistics.median(o.cpu_s for o in got["xp -n 2"]) - fixed_cpu) / (n - 1000) * 1e3
    cpu_loop = statistics.median(o.cpu_s for o in got["plain loop"]) / n * 1e3
    cpu_times = cpu_xp / cpu_loop if cpu_loop > 0 else float("inf")
    how = "batched automatically" if s.batch is None else f"batch={s.batch}"
    tag = f"10^{len(str(n)) - 1}" if str(n).strip("0") == "1" else f"{n:,}"
    return [
        Row(
            id="9a",
            title=f"Collect a {tag}-combination grid, {how} (wall time)",
            a_label=f"pytest-xp --collect-only ({items} batches)",
            b_label=f"plain pytest --collect-only, {items} items",
            a_values=walls(got_collect["xp collect"]),
            b_values=walls(got_collect["plain collect"]),
            repeats=s.repeats,
            goal="≤ 60 s",
            goal_op="<=",
            goal_value=60.0,
            goal_on="derived",
            derived_value=wall,
            derived_text=f"{wall:.1f} s",
        ),
        Row(
            id="9b",
            title=f"Collect a {tag}-combination grid: peak RSS",
            a_label="pytest-xp --collect-only",
            b_label=f"plain pytest --collect-only, {items} items",
            unit="MB",
            a_values=[o.peak_rss_mb or 0.0 for o in got_collect["xp collect"]],
            b_values=[o.peak_rss_mb or 0.0 for o in got_collect["plain collect"]],
            repeats=s.repeats,
            goal="≤ 1 GB",
            goal_op="<=",
            goal_value=1024.0,
            goal_on="derived",
            derived_value=rss,
            derived_text=f"{rss:.0f} MB",
        ),
        with_cpu(
            Row(
                id="9c",
                title=f"Run a {tag}-combination trivial grid end to end, `-n 2`, against a plain loop",
                a_label="pytest-xp -n 2 (batched)",
                b_label="plain Python loop: seed, call, write the record",
                a_values=walls(got["xp -n 2"]),
                b_values=walls(got["plain loop"]),
                repeats=s.repeats,
                goal="per combination ≤ 3× the loop's",
                goal_op="<=",
                goal_value=3.0,
                goal_on="derived",
                derived_value=times,
                derived_text=f"{per_xp:.3f} ms vs {per_loop:.3f} ms per combination "
                f"(pytest-xp's minus its {fixed:.1f} s start-up with one batch): {times:.2f}×; "
                f"CPU {cpu_xp:.3f} ms vs {cpu_loop:.3f} ms (minus {fixed_cpu:.1f} s): {cpu_times:.2f}×",
            ),
            got["xp -n 2"],
            got["plain loop"],
        ),
    ]


def memory_per_combination(ctx: Ctx) -> list[Row]:
    s = QUICK if ctx.quick else FULL
    files = {
        "xp_small.py": _grid_1d(s.plain_small, 1),
        "xp_big.py": _grid_1d(s.plain_big, 1),
        "xp_bsmall.py": _grid_1d(s.batched_small, 1000 if not ctx.quick else 100),
        "xp_bbig.py": _grid_1d(s.batched_big, 1000 if not ctx.quick else 100),
        "test_small.py": _plain(s.plain_small),
        "test_big.py": _plain(s.plain_big),
    }
    d = workdir(ctx, "memory_per_combination", files)
    store = d / "store"

    def xp(label: str, file: str, items: int) -> Cmd:
        args = [file, "-n", "2", "--xp-dir", str(store), "--xp-status", "0"]
        return pytest_cmd(ctx, label, d, args, prepare=clear(store), check=done_count(items, label), poll_rss=True)

    def plain(label: str, file: str, items: int) -> Cmd:
        args = [file, "-n", "2", "-p", "no:xp"]
        return pytest_cmd(ctx, label, d, args, check=expect(label, passed=items), poll_rss=True)

    per_batch = 1000 if not ctx.quick else 100
    cmds = [
        plain("plain small", "test_small.py", s.plain_small),
        plain("plain big", "test_big.py", s.plain_big),
        xp("xp small", "xp_small.py", s.plain_small),
        xp("xp big", "xp_big.py", s.plain_big),
        xp("batched small", "xp_bsmall.py", s.batched_small // per_batch),
        xp("batched big", "xp_bbig.py", s.batched_big // per_batch),
    ]
    got = round_robin(ctx, cmds, s.repeats)

    def growth(small: str, big: str, n_small: int, n_big: int) -> list[float]:
        pairs = zip(got[small], got[big], strict=True)
        return [((b.peak_rss_mb or 0.0) - (a.peak_rss_mb or 0.0)) * 1024 / (n_big - n_small) for a, b in pairs]

    plain_kb = growth("plain small", "plain big", s.plain_small, s.plain_big)
    xp_kb = growth("xp small", "xp big", s.plain_small, s.plain_big)
    batched_kb = growth("batched small", "batched big", s.batched_small, s.batched_big)
    batched_median = statistics.median(batched_kb)
    return [
        Row(
            id="9d",
            title=f"Controller RSS growth per combination, unbatched, {s.plain_small}→{s.plain_big}, `-n 2`",
            a_label="pytest-xp controller",
            b_label="plain pytest-xdist controller, per item",
            unit="KB",
            a_values=xp_kb,
            b_values=plain_kb,
            repeats=s.repeats,
            goal="A/B ≤ 1",
            goal_op="<=",
            goal_value=1.0,
            derived_text=f"{statistics.median(xp_kb):.2f} KB vs {statistics.median(plain_kb):.2f} KB",
        ),
        Row(
            id="9e",
            title=f"Controller RSS growth per combination, batched ({per_batch} per item), "
            f"{s.batched_small}→{s.batched_big}, `-n 2`",
            a_label="pytest-xp controller, batched",
            b_label="plain pytest-xdist controller, per item",
            unit="KB",
            a_values=batched_kb,
            b_values=plain_kb,
            repeats=s.repeats,
            goal="≤ 1 KB per combination",
            goal_op="<=",
            goal_value=1.0,
            goal_on="derived",
            derived_value=batched_median,
            derived_text=f"{batched_median:.3f} KB per combination",
        ),
    ]


def _grid_1d(n: int, batch: int) -> str:
    return f"""
        from pytest_xp import trial


        @trial(1, {{"x": list(range({n}))}}, batch={batch})
        def work(x):
            return {{"y": x * 2}}
        """


SCALE_SCENARIOS = {"batched": batched, "memory_per_combination": memory_per_combination}
