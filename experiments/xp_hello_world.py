"""Hello world: generate numbers, then compute their statistics from the files of the first stage.

Hypothesis: the mean of 0..n-1 computed from the generated file equals the formula (n - 1) / 2.
"""

import json

from pytest_xp import Verdict, setup, trial, verify


@setup
def init():
    return {"seed": 0, "file_name": "numbers.json"}


@trial(1, {"n": [10, 100, 1000]})
def generate(n, xp):
    numbers = list(range(n))
    (xp.output_path / SETUP["file_name"]).write_text(json.dumps(numbers))
    return {"count": n, "context_update": {"generated": True}}


@trial(2, {"n": [10, 100, 1000]})
def compute_stats(n, xp):
    # Stage 2 starts only once every combination of stage 1 has finished.
    numbers = json.loads((xp.output_of("generate", n=n) / SETUP["file_name"]).read_text())
    mean = sum(numbers) / len(numbers)
    variance = sum((x - mean) ** 2 for x in numbers) / len(numbers)
    return {"mean": mean, "std": variance**0.5, "saw_generated": SETUP.get("generated", False)}


@verify(["compute_stats"])
def mean_matches_formula(results):
    runs = results["compute_stats"]
    if not all(run["success"] for run in runs):
        return Verdict.INVALID, "a stage failed; see the trial failures"
    worst = max(abs(run["result"]["mean"] - (run["params"]["n"] - 1) / 2) for run in runs)
    message = f"largest deviation from (n-1)/2 over {len(runs)} sizes: {worst:g}"
    return (Verdict.SUPPORTS if worst < 1e-9 else Verdict.REFUTES), message
