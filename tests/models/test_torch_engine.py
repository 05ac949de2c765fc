"""The shared PyTorch training engine (cfrec.models.torch_engine)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cfrec.data import Interactions
from cfrec.errors import CfrecError, TrainingDiverged
from cfrec.models.torch_engine import (
    SGD,
    Adam,
    TrainConfig,
    batched_rmse,
    make_generator,
    make_optimizer,
    resolve_device,
    train_loop,
)


def _ratings(n_users: int = 40, n_items: int = 30, per_user: int = 10, seed: int = 0) -> Interactions:
    rng = np.random.default_rng(seed)
    rows = [(u, i, float(rng.integers(1, 6))) for u in range(n_users)
            for i in rng.choice(n_items, per_user, replace=False)]
    df = pd.DataFrame(rows, columns=["user_id", "item_id", "rating"])
    return Interactions.from_frame(df, rating_scale=(1.0, 5.0))


# ---------------------------------------------------------------------- devices and seeds
def test_resolve_device_cpu_and_auto() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device(None).type == expected
    assert resolve_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_cuda_unavailable_is_a_clear_error() -> None:
    with pytest.raises(CfrecError, match="CUDA is not available"):
        resolve_device("cuda")


def test_resolve_device_rejects_unknown_names() -> None:
    with pytest.raises(CfrecError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")


def test_make_generator_is_reproducible() -> None:
    a = torch.randperm(100, generator=make_generator(7))
    b = torch.randperm(100, generator=make_generator(7))
    c = torch.randperm(100, generator=make_generator(8))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    # None draws fresh entropy: still a working generator
    assert len(torch.randperm(10, generator=make_generator(None))) == 10


# ---------------------------------------------------------------------- optimisers
def _trajectory(opt_factory, steps: int = 25) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(6, 3, dtype=torch.float64)), nn.Parameter(torch.randn(4, dtype=torch.float64))]
    opt = opt_factory(params)
    weights = torch.arange(4, dtype=torch.float64)
    for step in range(steps):
        opt.zero_grad()
        loss = (params[0] ** 3).sum() + (params[1] * weights).sum()
        if step % 3 == 0:  # a step where one parameter gets no gradient: moments still apply
            loss = (params[0] ** 3).sum()
        loss.backward()
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adam_matches_torch_adam(wd: float) -> None:
    ours = _trajectory(lambda ps: Adam(ps, lr=0.01, weight_decay=wd))
    ref = _trajectory(lambda ps: torch.optim.Adam(ps, lr=0.01, weight_decay=wd))
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_sgd_matches_torch_sgd(wd: float) -> None:
    ours = _trajectory(lambda ps: SGD(ps, lr=0.001, weight_decay=wd))
    ref = _trajectory(lambda ps: torch.optim.SGD(ps, lr=0.001, weight_decay=wd))
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_make_optimizer_names_and_errors() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("adam", p, lr=0.1), Adam)
    assert isinstance(make_optimizer("SGD", p, lr=0.1), SGD)
    with pytest.raises(CfrecError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", p, lr=0.1)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(CfrecError, match="learning rate"):
            make_optimizer("adam", p, lr=bad)


def test_make_optimizer_does_not_import_dynamo() -> None:
    """torch.optim's first optimiser imports torch._dynamo (~1 s); ours must not need it."""
    import subprocess
    import sys

    code = ("import sys, torch; from cfrec.models.torch_engine import make_optimizer;"
            "p=[torch.nn.Parameter(torch.zeros(3))]; o=make_optimizer('adam', p, lr=0.1);"
            "p[0].sum().backward(); o.step(); print('torch._dynamo' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ---------------------------------------------------------------------- train_loop
class _Line(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w * x


def _line_problem():
    x = torch.linspace(-1, 1, 64)
    y = 3.0 * x
    net = _Line()

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return ((net(x[batch]) - y[batch]) ** 2).mean()

    return net, loss_fn


def test_train_loop_learns_and_records_history() -> None:
    net, loss_fn = _line_problem()
    seen: list[dict] = []
    config = TrainConfig("Line", epochs=40, batch_size=16, lr=0.1)
    hist = train_loop(net, make_optimizer("adam", net.parameters(), lr=0.1), 64, loss_fn, config,
                      generator=make_generator(0), device=torch.device("cpu"), on_epoch=seen.append)
    assert len(hist) == 40
    assert hist[-1]["train_loss"] < hist[0]["train_loss"] / 10
    assert abs(net.w.detach().item() - 3.0) < 0.1
    assert set(hist[0]) == {"epoch", "train_loss", "seconds"}
    assert [r["epoch"] for r in seen] == list(range(1, 41))
    assert all(r["epochs"] == 40 for r in seen)


def test_train_loop_early_stopping_restores_best_epoch() -> None:
    net, loss_fn = _line_problem()
    scripted = iter([3.0, 2.0, 2.5, 2.6, 2.7, 2.8])
    weights: dict[int, float] = {}

    def validate() -> float:
        return next(scripted)

    def record(rec: dict) -> None:
        weights[rec["epoch"]] = net.w.detach().item()

    config = TrainConfig("Line", epochs=6, batch_size=16, lr=0.05, patience=2)
    hist = train_loop(net, make_optimizer("sgd", net.parameters(), lr=0.05), 64, loss_fn, config,
                      generator=make_generator(0), device=torch.device("cpu"), validate=validate,
                      on_epoch=record)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4]  # two epochs without improvement after epoch 2
    assert [r["valid_rmse"] for r in hist] == [3.0, 2.0, 2.5, 2.6]
    assert [r["best"] for r in hist] == [False, True, False, False]
    assert net.w.detach().item() == weights[2] != weights[4]


def test_train_loop_raises_training_diverged_naming_the_lr() -> None:
    net, _ = _line_problem()

    def loss_fn(batch: torch.Tensor) -> torch.Tensor:
        return net.w.sum() * float("nan")

    config = TrainConfig("Line", epochs=3, batch_size=16, lr=123.0)
    with pytest.raises(TrainingDiverged, match="learning rate 123") as info:
        train_loop(net, make_optimizer("sgd", net.parameters(), lr=123.0), 64, loss_fn, config,
                   generator=make_generator(0), device=torch.device("cpu"))
    assert info.value.epoch == 1 and info.value.lr == 123.0


def test_train_loop_lr_decay() -> None:
    net, loss_fn = _line_problem()
    opt = make_optimizer("sgd", net.parameters(), lr=0.1)
    config = TrainConfig("Line", epochs=3, batch_size=64, lr=0.1, lr_decay=0.5)
    train_loop(net, opt, 64, loss_fn, config, generator=make_generator(0), device=torch.device("cpu"))
    assert math.isclose(opt.param_groups[0]["lr"], 0.1 * 0.5 ** 3)


def test_batched_rmse_clips_and_batches() -> None:
    users = torch.arange(5)
    items = torch.zeros(5, dtype=torch.int64)
    ratings = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    raw = torch.tensor([0.0, 2.0, 3.0, 4.0, 9.0])  # clipped to [1, 5]: errors 0,0,0,0,0

    def predict(u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return raw[u]

    assert batched_rmse(predict, users, items, ratings, (1.0, 5.0), batch_size=2) == 0.0
    shifted = lambda u, i: ratings[u] + 0.5  # noqa: E731
    assert math.isclose(batched_rmse(shifted, users, items, ratings, (0.0, 10.0), batch_size=3), 0.5,
                        rel_tol=1e-6)
