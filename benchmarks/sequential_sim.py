"""Simulation of the adaptive-seeds design: its false-SUPPORTS rate, its power and the seeds it uses.

The design is what ``@verify(..., adaptive=Adaptive(param="seed", start=S, step=T, max=M))`` runs
with a paired one-sided t-test (``stats.greater(a, b, paired=True)``, min_effect 0): judge after
S, S+T, ... , M seeds; stop at SUPPORTS (the look's p below its spent alpha, see
``pytest_xp.stats.sequential``) or REFUTES (p in the other direction below alpha), else extend.

1. Under the null (no effect), the rate of SUPPORTS at any look: the claim is <= alpha + 1.5 points.
2. Under an effect, the power of the adaptive design and its mean number of seeds, against the
   smallest *fixed* number of seeds whose t-test has at least that power: the ratio of seeds.

The bulk is vectorized (the t statistic of every replicate at every look, compared with the
critical value the decision rule implies); ``--check N`` re-runs N replicates of each scenario
through the real API (``stats.greater`` + ``judge_look``) and counts disagreements, which must be 0.

    python benchmarks/sequential_sim.py                  # 20 000 replicates per scenario
    python benchmarks/sequential_sim.py --quick          # 2 000 replicates (what CI runs)
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import numpy as np

from pytest_xp import stats
from pytest_xp.stats.distributions import t_isf
from pytest_xp.stats.sequential import judge_look, nominal_levels


def design_sizes(start: int, step: int, maximum: int) -> list[int]:
    sizes = list(range(start, maximum + 1, step))
    return sizes if sizes[-1] == maximum else [*sizes, maximum]


def simulate(effect: float, sizes: list[int], alpha: float, spending: str, reps: int, seed: int) -> dict[str, Any]:
    """Vectorized adaptive runs: per replicate the verdict (1 SUPPORTS, -1 REFUTES, 0 none) and seeds used."""
    rng = np.random.default_rng(seed)
    diffs = rng.normal(effect, 1.0, size=(reps, sizes[-1]))
    levels = nominal_levels(sizes, alpha, spending)
    verdict = np.zeros(reps, dtype=int)
    used = np.full(reps, sizes[-1])
    open_ = np.ones(reps, dtype=bool)
    for n, level in zip(sizes, levels, strict=True):
        d = diffs[:, :n]
        t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
        supports = open_ & (t > t_isf(level, n - 1))
        refutes = open_ & ~supports & (t < -t_isf(alpha, n - 1))
        verdict[supports], verdict[refutes] = 1, -1
        used[supports | refutes] = n
        open_ &= ~(supports | refutes)
    return {"supports": float((verdict == 1).mean()), "mean_seeds": float(used.mean()), "verdicts": verdict}


def fixed_power(effect: float, n: int, alpha: float, reps: int, seed: int) -> float:
    d = np.random.default_rng(seed).normal(effect, 1.0, size=(reps, n))
    t = d.mean(axis=1) / (d.std(axis=1, ddof=1) / np.sqrt(n))
    return float((t > t_isf(alpha, n - 1)).mean())


def check_against_api(effect: float, sizes: list[int], alpha: float, spending: str, reps: int, seed: int) -> int:
    """Replicates where the real ``stats.greater`` + ``judge_look`` loop disagrees with :func:`simulate`."""
    expected = simulate(effect, sizes, alpha, spending, reps, seed)["verdicts"]
    diffs = np.random.default_rng(seed).normal(effect, 1.0, size=(reps, sizes[-1]))
    disagreements = 0
    for row, want in zip(diffs, expected, strict=True):
        got = 0
        for look, n in enumerate(sizes):
            b = np.zeros(n)
            evidence = judge_look(stats.greater(b + row[:n], b, paired=True, alpha=alpha), look, sizes, spending)
            if evidence.verdict.value in ("supports", "refutes"):
                got = 1 if evidence.verdict.value == "supports" else -1
                break
        disagreements += int(got != want)
    return disagreements


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=20_000)
    parser.add_argument("--quick", action="store_true", help="2 000 replicates and a 50-replicate API check")
    parser.add_argument("--check", type=int, default=200, help="replicates re-run through the real API")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--effect", type=float, default=0.8, help="true paired effect in SDs (Cohen's d_z)")
    parser.add_argument("--start", type=int, default=3)
    parser.add_argument("--step", type=int, default=2)
    parser.add_argument("--max", type=int, default=20)
    parser.add_argument("--spending", default="pocock")
    args = parser.parse_args()
    reps, check = (2_000, 50) if args.quick else (args.reps, args.check)
    sizes = design_sizes(args.start, args.step, args.max)
    null = simulate(0.0, sizes, args.alpha, args.spending, reps, seed=1)
    alt = simulate(args.effect, sizes, args.alpha, args.spending, reps, seed=2)
    n_fixed = next(
        (n for n in range(2, 200) if fixed_power(args.effect, n, args.alpha, reps, seed=3) >= alt["supports"]), None
    )
    out = {
        "design": {"looks": sizes, "alpha": args.alpha, "spending": args.spending, "effect": args.effect},
        "replicates": reps,
        "type_1": round(null["supports"], 4),
        "type_1_goal": round(args.alpha + 0.015, 4),
        "type_1_mean_seeds": round(null["mean_seeds"], 2),
        "power": round(alt["supports"], 4),
        "mean_seeds": round(alt["mean_seeds"], 2),
        "fixed_seeds_same_power": n_fixed,
        "seeds_ratio": round(alt["mean_seeds"] / n_fixed, 3) if n_fixed else None,
        "api_disagreements": check_against_api(0.0, sizes, args.alpha, args.spending, check, 4)
        + check_against_api(args.effect, sizes, args.alpha, args.spending, check, 5),
        "api_checked": 2 * check,
    }
    print(json.dumps(out))
    ok = out["type_1"] <= out["type_1_goal"] and out["api_disagreements"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
