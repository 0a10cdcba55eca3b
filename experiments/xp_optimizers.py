"""Adam reaches a lower training loss than SGD on a tiny MLP in 200 steps (5 seeds, CPU).

Runs paired by seed: both optimizers see the same data and the same initial weights.
"""

import pytest

from pytest_xp import Verdict, setup, trial, verify

torch = pytest.importorskip("torch")


@setup
def init():
    return {"steps": 200, "lr": 0.01, "samples": 256, "width": 32}


@trial(1, {"optimizer": ["sgd", "adam"], "seed": [0, 1, 2, 3, 4]})
def train(optimizer, seed, xp):
    torch.set_num_threads(1)
    data = torch.Generator().manual_seed(seed)
    inputs = torch.randn(SETUP["samples"], 8, generator=data)
    targets = torch.sin(inputs @ torch.randn(8, 1, generator=data))
    model = torch.nn.Sequential(torch.nn.Linear(8, SETUP["width"]), torch.nn.Tanh(), torch.nn.Linear(SETUP["width"], 1))
    make = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optimizer]
    opt = make(model.parameters(), lr=SETUP["lr"])
    for step in range(SETUP["steps"]):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(inputs), targets)
        loss.backward()
        opt.step()
        if step % 20 == 0:
            xp.log(step, loss=loss.item())
    return {"final_loss": float(loss.item())}


@verify(["train"])
def adam_beats_sgd(results):
    final = {(r["params"]["optimizer"], r["params"]["seed"]): r["result"]["final_loss"] for r in results["train"]}
    seeds = sorted({seed for _, seed in final})
    wins = sum(final[("adam", s)] < final[("sgd", s)] for s in seeds)
    ratio = sum(final[("adam", s)] for s in seeds) / sum(final[("sgd", s)] for s in seeds)
    message = f"adam lower on {wins}/{len(seeds)} seeds; mean loss ratio adam/sgd = {ratio:.3f}"
    if wins == len(seeds):
        return Verdict.SUPPORTS, message
    if wins == 0:
        return Verdict.REFUTES, message
    return Verdict.INCONCLUSIVE, message
