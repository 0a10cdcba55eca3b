"""Evidence on data whose truth is known: a treatment that adds 1.0 to a noisy measurement.

One supported hypothesis (treated > control) and one negative control that must be refuted
(control > treated). Paired by seed: both arms share each seed's noise draw offset.
"""

import numpy as np

from pytest_xp import stats, trial, verify

TRUE_EFFECT = 1.0


@trial(1, {"arm": ["control", "treated"], "seed": list(range(12))})
def measure(arm, seed):
    baseline = np.random.default_rng(seed).normal(10.0, 1.0)  # shared by both arms of a seed
    noise = np.random.default_rng([seed, arm == "treated"]).normal(0.0, 0.5)  # differs per arm
    return {"value": float(baseline + noise + (TRUE_EFFECT if arm == "treated" else 0.0))}


def _arms(results):
    runs = sorted(results["measure"], key=lambda r: r["params"]["seed"])
    pick = lambda arm: [r["result"]["value"] for r in runs if r["params"]["arm"] == arm]  # noqa: E731
    return pick("treated"), pick("control")


@verify(["measure"])
def treatment_raises_the_measurement(results):
    treated, control = _arms(results)
    return stats.greater(treated, control, paired=True, min_effect=0.25)


@verify(["measure"], expect="refutes")
def negative_control_control_beats_treated(results):
    treated, control = _arms(results)
    return stats.greater(control, treated, paired=True)
