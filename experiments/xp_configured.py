"""Configured from YAML: a quadratic fitted by gradient descent, its settings layered from files.

The setup function gives defaults; ``configs/base.yaml`` and its child ``configs/child.yaml`` layer
settings on top, and the command line overrides one nested key::

    pytest experiments/xp_configured.py --xp-config experiments/configs/child.yaml \\
        --xp-context model.depth=3 --xp-show-config

prints the merged SETUP with the file and line (or option) that set each key; drop
``--xp-show-config`` to run it.
"""

import itertools

from pytest_xp import Verdict, setup, trial, verify


@setup
def defaults():
    return {"steps": 20, "target": 3.0, "model": {"width": 8, "depth": 1}}


@trial(1, {"lr": [0.1, 0.01]})
def fit(lr, xp):
    """Minimise (w - target)^2 from w = 0 with plain gradient descent for SETUP's number of steps."""
    target, w = SETUP["target"], 0.0
    for step in range(SETUP["steps"]):
        w -= lr * 2 * (w - target)
        xp.log(step, loss=(w - target) ** 2)
    model = SETUP["model"]
    return {"loss": (w - target) ** 2, "steps": SETUP["steps"], "size": model["width"] * model["depth"]}


@verify(["fit"])
def larger_rate_fits_better(results):
    """With the same number of steps, the larger learning rate ends with the lower loss."""
    runs = {run["params"]["lr"]: run for run in results["fit"]}
    if not all(run["success"] for run in runs.values()):
        return Verdict.INVALID, "a fit failed"
    ordered = [runs[lr]["result"]["loss"] for lr in sorted(runs, reverse=True)]
    better = all(a <= b for a, b in itertools.pairwise(ordered))
    return better, f"final losses from the largest rate down: {', '.join(f'{x:.3g}' for x in ordered)}"
