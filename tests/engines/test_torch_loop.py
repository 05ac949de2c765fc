"""The PyTorch training loop (cfrec.engines.torch_loop): batches, row-sparse optimisers, epochs."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cfrec.data import Interactions
from cfrec.engines.backend import make_generator, resolve_device
from cfrec.engines.torch_loop import (
    SGD,
    Adagrad,
    Adam,
    TrainConfig,
    UniqueRows,
    batched_rmse,
    csr_segments,
    grouped_batches,
    make_optimizer,
    row_grad,
    shuffled_batches,
    train_loop,
)
from cfrec.errors import CfrecError, TrainingDiverged

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


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
def _trajectory(opt_factory, steps: int = 25, dtype: torch.dtype = torch.float64) -> list[torch.Tensor]:
    torch.manual_seed(0)
    params = [nn.Parameter(torch.randn(6, 3, dtype=torch.float64).to(dtype)),
              nn.Parameter(torch.randn(4, dtype=torch.float64).to(dtype))]
    opt = opt_factory(params)
    weights = torch.arange(4, dtype=dtype)
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


@pytest.mark.parametrize("wd", [0.0, 1e-2])
def test_adagrad_matches_torch_adagrad(wd: float) -> None:
    ours = _trajectory(lambda ps: Adagrad(ps, lr=0.05, weight_decay=wd))
    ref = _trajectory(lambda ps: torch.optim.Adagrad(ps, lr=0.05, weight_decay=wd))
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_make_optimizer_names_and_errors() -> None:
    p = [nn.Parameter(torch.zeros(2))]
    assert isinstance(make_optimizer("adam", p, lr=0.1), Adam)
    assert isinstance(make_optimizer("Adagrad", p, lr=0.1), Adagrad)
    assert isinstance(make_optimizer("SGD", p, lr=0.1), SGD)
    with pytest.raises(CfrecError, match="unknown optimizer 'rmsprop'"):
        make_optimizer("rmsprop", p, lr=0.1)
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(CfrecError, match="learning rate"):
            make_optimizer("adam", p, lr=bad)
    with pytest.raises(CfrecError, match="weight_decay"):
        make_optimizer("adam", p, lr=0.1, weight_decay=-1.0)


# ---------------------------------------------------------------------- row-sparse steps
def test_unique_rows_finds_distinct_rows_and_inverse() -> None:
    gen = torch.Generator().manual_seed(3)
    unique = UniqueRows(50)
    for size in (0, 1, 7, 200):  # the scratch slots are reused: stale values must not matter
        index = torch.randint(0, 50, (size,), generator=gen)
        rows, inverse = unique(index)
        assert torch.equal(rows[inverse], index)
        assert sorted(rows.tolist()) == sorted(set(index.tolist()))
        assert len(rows) == len(set(rows.tolist()))
        # rows keep the index's order, so a sorted index gives sorted rows
        rows_sorted, inverse_sorted = unique(index.sort().values)
        assert rows_sorted.tolist() == sorted(set(index.tolist()))
        assert torch.equal(rows_sorted[inverse_sorted], index.sort().values)


def test_csr_segments_lists_the_rows_entries_in_order() -> None:
    indptr = torch.tensor([0, 2, 2, 5, 6])  # row 1 is empty
    rows = torch.tensor([2, 0, 1, 2, 3])  # any order, repeats allowed
    positions, segment, offsets = csr_segments(indptr, rows)
    assert positions.tolist() == [2, 3, 4, 0, 1, 2, 3, 4, 5]
    assert segment.tolist() == [0, 0, 0, 1, 1, 3, 3, 3, 4]
    assert offsets.tolist() == [0, 3, 5, 5, 8]
    empty = csr_segments(indptr, torch.zeros(0, dtype=torch.int64))
    assert all(len(t) == 0 for t in empty)


def _sparse_problem(steps: int = 12, seed: int = 0):
    """A (10, 3) table, a bias vector and per-step row gradients touching a few rows (with repeats)."""
    gen = torch.Generator().manual_seed(seed)
    table = torch.randn(10, 3, generator=gen, dtype=torch.float64)
    bias = torch.randn(10, generator=gen, dtype=torch.float64)
    grads = []
    for step in range(steps):
        n = 6 if step % 4 else 0  # every 4th step touches nothing in the table
        index = torch.randint(0, 7, (n,), generator=gen)  # rows 7..9 are never touched
        index[:1] = 0  # row 0 is touched in every step that touches anything
        grads.append((index, torch.randn(n, 3, generator=gen, dtype=torch.float64),
                      torch.randn(n, generator=gen, dtype=torch.float64)))
    return table, bias, grads


def _run_sparse(factory, table, bias, grads):
    params = [nn.Parameter(table.clone()), nn.Parameter(bias.clone())]
    opt = factory(params)
    for index, g_table, g_bias in grads:
        opt.zero_grad()
        if len(index):
            params[0].grad = row_grad(index, g_table, params[0].shape)
            params[1].grad = row_grad(index, g_bias, params[1].shape)
        opt.step()
    return [p.detach() for p in params]


def _dense_reference(rule: str, table, bias, grads, *, lr, wd, betas=(0.9, 0.999), eps=1e-8):
    """The row-wise rules written densely with masks: untouched rows and their state keep still."""
    out = []
    for k, start in enumerate((table, bias)):
        p = start.clone()
        m, v, s = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
        t = 0
        for index, g_table, g_bias in grads:
            if not len(index):
                continue
            g = torch.zeros_like(p).index_add_(0, index, g_table if k == 0 else g_bias)
            mask = torch.zeros(len(p), dtype=torch.bool)
            mask[index] = True
            mask = mask.view(-1, *([1] * (p.dim() - 1)))
            g = torch.where(mask, g + wd * p, g)
            t += 1
            if rule == "sgd":
                p = torch.where(mask, p - lr * g, p)
            elif rule == "adagrad":
                s = torch.where(mask, s + g * g, s)
                p = torch.where(mask, p - lr * g / (s.sqrt() + eps), p)
            else:
                b1, b2 = betas
                m = torch.where(mask, b1 * m + (1 - b1) * g, m)
                v = torch.where(mask, b2 * v + (1 - b2) * g * g, v)
                denom = (v / (1 - b2 ** t)).sqrt() + eps
                p = torch.where(mask, p - lr / (1 - b1 ** t) * m / denom, p)
        out.append(p)
    return out


@pytest.mark.parametrize("wd", [0.0, 0.05])
@pytest.mark.parametrize("rule", ["sgd", "adagrad", "adam"])
def test_row_sparse_steps_equal_the_masked_dense_reference(rule: str, wd: float) -> None:
    """Only the touched rows move, repeats are summed, the decay reaches touched rows only, and
    Adam's moments of untouched rows do not move (lazy Adam)."""
    table, bias, grads = _sparse_problem()
    eps = {"adagrad": 1e-10, "adam": 1e-8}.get(rule, 0.0)
    factory = {"sgd": lambda ps: SGD(ps, lr=0.1, weight_decay=wd),
               "adagrad": lambda ps: Adagrad(ps, lr=0.1, weight_decay=wd),
               "adam": lambda ps: Adam(ps, lr=0.1, weight_decay=wd)}[rule]
    ours = _run_sparse(factory, table, bias, grads)
    ref = _dense_reference(rule, table, bias, grads, lr=0.1, wd=wd, eps=eps)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    assert torch.equal(ours[0][7:], table[7:]) and torch.equal(ours[1][7:], bias[7:])  # never touched


@pytest.mark.parametrize("wd", [0.0, 0.05])
def test_float32_cpu_adam_takes_the_compiled_row_pass_and_the_fused_dense_pass(
        wd: float, monkeypatch: pytest.MonkeyPatch) -> None:
    """float32 tables on the CPU: rows through the compiled loop, dense gradients through torch's
    fused kernel; both give the masked dense reference to float32 rounding."""
    from cfrec.engines import compiled

    monkeypatch.setattr("cfrec.engines.torch_loop._COMPILED_ROWS_MIN", 1)  # the toy problem's rows too
    calls: list[str] = []
    for name in ("_adam_rows", "_adam_entries"):
        kernel = getattr(compiled, name)
        monkeypatch.setattr(compiled, name, lambda *a, _k=kernel, _n=name: (calls.append(_n), _k(*a))[1])
    table, bias, grads = _sparse_problem(seed=3)
    as32 = [(i, gt.float(), gb.float()) for i, gt, gb in grads]
    ours = _run_sparse(lambda ps: Adam(ps, lr=0.1, weight_decay=wd), table.float(), bias.float(), as32)
    ref = _dense_reference("adam", table, bias, grads, lr=0.1, wd=wd)
    for a, b in zip(ours, ref, strict=True):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5)
    assert torch.equal(ours[0][7:], table[7:].float())  # never touched
    assert {"_adam_rows", "_adam_entries"} <= set(calls)
    dense = _trajectory(lambda ps: Adam(ps, lr=0.01, weight_decay=wd))
    dense32 = _trajectory(lambda ps: Adam(ps, lr=0.01, weight_decay=wd), dtype=torch.float32)
    for a, b in zip(dense32, dense, strict=True):
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-5)


def test_lazy_adam_equals_torch_sparse_adam() -> None:
    """With a negligible eps the two eps conventions agree: the lazy rows are SparseAdam's."""
    table, bias, grads = _sparse_problem(seed=1)
    ours = _run_sparse(lambda ps: Adam(ps, lr=0.05, eps=1e-30), table, bias, grads)
    ref = _run_sparse(lambda ps: torch.optim.SparseAdam(ps, lr=0.05, eps=1e-30), table, bias, grads)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rule", ["sgd", "adagrad"])
def test_row_sparse_sgd_and_adagrad_equal_torch_on_sparse_gradients(rule: str) -> None:
    table, bias, grads = _sparse_problem(seed=2)
    ours_cls, ref_cls = {"sgd": (SGD, torch.optim.SGD), "adagrad": (Adagrad, torch.optim.Adagrad)}[rule]
    ours = _run_sparse(lambda ps: ours_cls(ps, lr=0.1), table, bias, grads)
    ref = _run_sparse(lambda ps: ref_cls(ps, lr=0.1), table, bias, grads)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_a_row_touched_every_step_follows_dense_adam() -> None:
    """Lazy Adam differs from dense Adam only for rows a step leaves out."""
    gen = torch.Generator().manual_seed(4)
    start = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    sparse_p, dense_p = nn.Parameter(start.clone()), nn.Parameter(start.clone())
    lazy, dense = Adam([sparse_p], lr=0.1, weight_decay=0.01), torch.optim.Adam([dense_p], lr=0.1, weight_decay=0.01)
    for _ in range(10):
        g = torch.randn(5, 2, generator=gen, dtype=torch.float64)
        sparse_p.grad = row_grad(torch.arange(5), g, (5, 2))
        dense_p.grad = g.clone()
        lazy.step()
        dense.step()
    torch.testing.assert_close(sparse_p.detach(), dense_p.detach(), rtol=1e-12, atol=1e-12)


def test_optimizer_step_merges_gradients_accumulated_twice() -> None:
    """Two sparse gradients of one parameter in a backward (two lookups) are summed per row."""
    emb = nn.Embedding(6, 2, sparse=True)
    ref = nn.Embedding(6, 2)
    ref.weight.data.copy_(emb.weight.data)
    ours, theirs = SGD(emb.parameters(), lr=0.5), SGD(ref.parameters(), lr=0.5, weight_decay=0.0)
    idx = torch.tensor([1, 3, 3])
    for module, opt in ((emb, ours), (ref, theirs)):
        opt.zero_grad()
        (module(idx).sum() + module(torch.tensor([3, 5])).square().sum()).backward()
        opt.step()
    assert emb.weight.grad is not None and emb.weight.grad.is_sparse
    torch.testing.assert_close(emb.weight.detach(), ref.weight.detach())


def test_shuffled_batches_partition_rows_and_sort_by_key() -> None:
    keys = torch.tensor([5, 1, 4, 1, 3, 9, 2, 6, 5, 3, 5])
    plain = list(shuffled_batches(11, 4, "cpu")(make_generator(0)))
    ordered = list(shuffled_batches(11, 4, "cpu", sort_by=keys)(make_generator(0)))
    assert [len(b) for b in plain] == [4, 4, 3]
    assert sorted(torch.cat(plain).tolist()) == list(range(11))
    for a, b in zip(plain, ordered, strict=True):  # the same rows per batch, in key order
        assert sorted(a.tolist()) == sorted(b.tolist())
        assert keys[b].tolist() == sorted(keys[b].tolist())


def test_grouped_batches_keep_groups_together() -> None:
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 30, 400)
    batches = list(grouped_batches(groups, 30, 50, "cpu")(make_generator(1)))
    rows = torch.cat(batches)
    assert sorted(rows.tolist()) == list(range(400))
    assert all(len(b) == 50 for b in batches)
    sequence = groups[rows.numpy()]
    # each group's rows form one run of the epoch's sequence, so it spans at most two batches
    runs = sequence[np.r_[True, sequence[1:] != sequence[:-1]]]
    assert len(runs) == len(set(runs.tolist())) == 30
    other_epoch = torch.cat(list(grouped_batches(groups, 30, 50, "cpu")(make_generator(2))))
    assert not torch.equal(rows, other_epoch)  # the group order is drawn afresh


@pytest.mark.parametrize("sort", [False, True], ids=["any-order", "in-group-order"])
def test_grouped_batches_equal_the_whole_epoch_sequence_cut(sort: bool) -> None:
    """Built a batch at a time, the batches are the permuted groups' runs laid end to end and cut
    every ``batch_size`` rows (empty groups and a short last batch included)."""
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 25, 333)
    groups[groups == 7] = 8  # an empty group
    if sort:
        groups = np.sort(groups)
    batches = list(grouped_batches(groups, 25, 40, "cpu")(make_generator(5)))
    perm = torch.randperm(25, generator=make_generator(5)).numpy()
    by_group = np.argsort(groups, kind="stable")
    starts = np.concatenate([[0], np.cumsum(np.bincount(groups, minlength=25))])
    sequence = np.concatenate([by_group[starts[g]:starts[g + 1]] for g in perm])
    assert [b.tolist() for b in batches] == [sequence[s:s + 40].tolist() for s in range(0, 333, 40)]


@needs_cuda
def test_row_sparse_adam_on_cuda_matches_cpu() -> None:
    table, bias, grads = _sparse_problem(seed=5)
    cpu = _run_sparse(lambda ps: Adam(ps, lr=0.1, weight_decay=0.01), table, bias, grads)
    cuda_grads = [(i.cuda(), g.cuda(), b.cuda()) for i, g, b in grads]
    gpu = _run_sparse(lambda ps: Adam(ps, lr=0.1, weight_decay=0.01), table.cuda(), bias.cuda(), cuda_grads)
    for a, b in zip(cpu, gpu, strict=True):
        torch.testing.assert_close(a, b.cpu(), rtol=1e-9, atol=1e-12)


def test_make_optimizer_does_not_import_dynamo() -> None:
    """torch.optim's first optimiser imports torch._dynamo (~1 s); ours must not need it."""
    import subprocess
    import sys

    code = ("import sys, torch; from cfrec.engines.torch_loop import make_optimizer, row_grad;"
            "p=[torch.nn.Parameter(torch.zeros(3)), torch.nn.Parameter(torch.zeros(4, 2))];"
            "o=make_optimizer('adam', p, lr=0.1); p[0].sum().backward();"
            "p[1].grad=row_grad(torch.tensor([1, 1, 3]), torch.ones(3, 2), (4, 2)); o.step();"
            "print('torch._dynamo' in sys.modules)")
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
