"""Learning-rate warmup rescues a tiny post-LN transformer trained at a high learning rate (CPU, 3 seeds).

Task: reverse a sequence of 8 tokens (vocabulary 16). Adam at lr 0.05 without warmup stalls near
chance (cross-entropy ln 16 = 2.77); with a linear warmup over the first half of training the same
model, data and initial weights learn the task. Both arms of a seed share data and initial weights,
so the comparison is paired by seed.

Each combination logs its loss and learning rate: `pytest experiments/xp_warmup.py --xp-report=html:warmup.html`
shows the curves, mean ± SD over seeds, coloured by warmup.
"""

import pytest

from pytest_xp import setup, stats, trial, verify

torch = pytest.importorskip("torch")


@setup
def init():
    return {"steps": 200, "warmup_steps": 100, "lr": 0.05, "batch": 64, "length": 8, "vocab": 16, "width": 32}


def _model(vocab, length, width):
    layer = torch.nn.TransformerEncoderLayer(width, 4, dim_feedforward=2 * width, dropout=0.0, batch_first=True)
    return torch.nn.ModuleDict(
        {
            "embed": torch.nn.Embedding(vocab, width),
            "encoder": torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False),
            "head": torch.nn.Linear(width, vocab),
        }
    ), torch.nn.Parameter(0.1 * torch.randn(length, width))


@trial(1, {"warmup": [False, True], "seed": [0, 1, 2]})
def train(warmup, seed, xp):
    torch.set_num_threads(1)
    steps, vocab, length = SETUP["steps"], SETUP["vocab"], SETUP["length"]
    model, position = _model(vocab, length, SETUP["width"])  # torch is seeded from `seed` by pytest-xp
    data = torch.Generator().manual_seed(1000 + seed)  # the same batches for both arms of a seed
    optimizer = torch.optim.Adam([*model.parameters(), position], lr=SETUP["lr"])
    ramp = SETUP["warmup_steps"]
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / ramp) if warmup else 1.0)
    recent = []
    for step in range(steps):
        tokens = torch.randint(0, vocab, (SETUP["batch"], length), generator=data)
        logits = model["head"](model["encoder"](model["embed"](tokens) + position))
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), tokens.flip(1).reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        schedule.step()
        recent = [*recent[-9:], loss.item()]
        if step % 5 == 0 or step == steps - 1:
            xp.log(step, loss=loss.item(), lr=lr)
    return {"final_loss": sum(recent) / len(recent)}  # mean of the last 10 steps


@verify(["train"])
def warmup_lowers_final_loss(results):
    final = {(r["params"]["warmup"], r["params"]["seed"]): r["result"]["final_loss"] for r in results["train"]}
    seeds = sorted({seed for _, seed in final})
    with_warmup = [final[(True, s)] for s in seeds]
    without = [final[(False, s)] for s in seeds]
    # Lower by more than 0.5 nats, paired by seed: a difference that matters, not just any difference.
    return stats.less(with_warmup, without, paired=True, min_effect=0.5)
