"""Adaptive seeds: a treatment of half a standard deviation, measured on as few seeds as it takes.

The grid lists 20 seeds per arm, but ``treatment_helps`` judges after 4 seeds, then 8, 12, 16 and
20, and stops at the first look that decides (alpha is shared by the looks: see docs/stats.md,
"Adaptive seeds"); the combinations of the rounds it does not need are reported NOT NEEDED.
"""

import numpy as np

from pytest_xp import Adaptive, stats, trial, verify


@trial(1, {"arm": ["control", "treated"], "seed": list(range(20))})
def measure(arm, seed):
    shared = np.random.default_rng(seed).normal(10.0, 1.0)  # both arms of a seed share this draw
    own = np.random.default_rng([seed, arm == "treated"]).normal(0.0, 0.5)
    return {"value": float(shared + own + (0.5 if arm == "treated" else 0.0))}


@verify(["measure"], adaptive=Adaptive(param="seed", start=4, step=4, max=20))
def treatment_helps(results):
    runs = sorted(results["measure"], key=lambda r: r["params"]["seed"])
    treated = [r["result"]["value"] for r in runs if r["params"]["arm"] == "treated"]
    control = [r["result"]["value"] for r in runs if r["params"]["arm"] == "control"]
    return stats.greater(treated, control, paired=True, min_effect=0.1)
