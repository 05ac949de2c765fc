"""The array backend: numpy and torch compute the same primitives; the device and CSR helpers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from cfrec.engines.backend import NumpyArrays, TorchArrays, array_backend, resolve_device, torch_csr
from cfrec.errors import CfrecError


def test_numpy_and_torch_primitives_agree() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(7, 3)).astype(np.float32), rng.normal(size=(7, 3)).astype(np.float32)
    nb, tb = NumpyArrays(), TorchArrays(torch.device("cpu"))
    ta, tbb = tb.asarray(a), tb.asarray(b)
    pairs = [
        (nb.rowdot(a, b), tb.rowdot(ta, tbb)),
        (nb.gram(a), tb.gram(ta)),
        (nb.with_ones(a), tb.with_ones(ta)),
        (nb.transpose(a), tb.transpose(ta)),
        (nb.ratio(a[:, 0], np.maximum(b[:, 0], 0)), tb.ratio(ta[:, 0], tbb[:, 0].clamp(min=0))),
        (nb.col_sqsum(a), tb.col_sqsum(ta)),
        (nb.row_moments(a)[1], tb.row_moments(ta)[1]),
    ]
    for x, y in pairs:
        np.testing.assert_allclose(np.asarray(x), tb.to_numpy(y) if isinstance(y, torch.Tensor) else y,
                                   rtol=1e-5, atol=1e-6)
    assert nb.sum64(a) == pytest.approx(tb.sum64(ta), rel=1e-6)
    assert nb.dot64(a[:, 0], b[:, 0]) == pytest.approx(tb.dot64(ta[:, 0], tbb[:, 0]), rel=1e-6)
    assert nb.sqsum64(a[:, 0]) == pytest.approx(tb.sqsum64(ta[:, 0]), rel=1e-6)
    assert tb.asarray(np.arange(3), np.int32).dtype == torch.int64
    copy = nb.to_numpy(a)
    copy[0, 0] = 99.0
    assert a[0, 0] != 99.0  # to_numpy copies


def test_sparse_products_and_solves_agree() -> None:
    rng = np.random.default_rng(1)
    mat = sp.random_array((6, 4), density=0.5, random_state=2, format="csr", dtype=np.float32)
    v = rng.normal(size=(4, 2)).astype(np.float32)
    m = rng.normal(size=(6, 2)).astype(np.float32)
    nb, tb = NumpyArrays(), TorchArrays(torch.device("cpu"))
    nop, top = nb.sparse(mat), tb.sparse(mat)
    np.testing.assert_allclose(nop.apply(v), top.apply(tb.asarray(v)).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(nop.adjoint(m), top.adjoint(tb.asarray(m)).numpy(), rtol=1e-5, atol=1e-6)
    csr = nb.csr(mat.indptr, mat.indices, mat.data, mat.shape)
    tcsr = tb.csr(mat.indptr, mat.indices, tb.asarray(mat.data), mat.shape)
    np.testing.assert_allclose(csr @ v, (tcsr @ tb.asarray(v)).numpy(), rtol=1e-5, atol=1e-6)
    spd = np.stack([np.eye(3) * (i + 2) + 0.5 for i in range(4)]).astype(np.float32)
    rhs = rng.normal(size=(4, 3)).astype(np.float32)
    np.testing.assert_allclose(nb.spd_solve(spd, rhs, "x"), tb.spd_solve(tb.asarray(spd), tb.asarray(rhs), "x"),
                               rtol=1e-5)
    with pytest.raises(CfrecError, match="^bad systems$"):
        tb.spd_solve(tb.asarray(-spd), tb.asarray(rhs), "bad systems")


def test_torch_csr_accepts_numpy_or_tensors() -> None:
    mat = sp.csr_array(np.array([[0, 2.0], [3.0, 0]], dtype=np.float32))
    a = torch_csr(mat.indptr, mat.indices.astype(np.int64), mat.data, mat.shape)  # mixed int types
    b = torch_csr(torch.as_tensor(mat.indptr), torch.as_tensor(mat.indices), torch.as_tensor(mat.data), mat.shape)
    assert a.to_dense().tolist() == b.to_dense().tolist() == [[0, 2.0], [3.0, 0]]


def test_seeded_draws_repeat() -> None:
    seq = np.random.SeedSequence(3)
    x, y = NumpyArrays(seq).randn(5), NumpyArrays(np.random.SeedSequence(3)).randn(5)
    np.testing.assert_array_equal(x, y)
    t1, t2 = (TorchArrays(torch.device("cpu"), np.random.SeedSequence(4)).randn(5) for _ in range(2))
    assert torch.equal(t1, t2)


def test_devices() -> None:
    assert isinstance(array_backend(torch.device("cpu")), NumpyArrays)
    assert isinstance(array_backend(torch.device("meta")), TorchArrays)
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(CfrecError, match="unknown device"):
        resolve_device("gpu0")
