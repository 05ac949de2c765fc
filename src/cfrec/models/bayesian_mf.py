"""Bayesian matrix factorisation by Gibbs sampling, optionally with SVD++-style implicit features.

Model
-----
For a rating of item ``i`` by user ``u``::

    r_ui = mu + w_0 + b_u + b_i + x_u . q_i + eps,        eps ~ N(0, 1 / alpha)

where ``mu`` is the mean training rating (a fixed offset) and ``w_0`` a sampled global offset.
With ``implicit=True`` the user vector is Koren's SVD++ vector
``x_u = p_u + |N(u)|^-1/2 sum_{j in N(u)} y_j`` and the user bias gets the matching first-order
term, ``b_u = c_u + |N(u)|^-1/2 sum_{j in N(u)} w_j``, as the linear weights of implicit-feedback
features in libFM and myFM: ``N(u)`` is the set of items ``u`` rated in the training data (see
``implicit_include_valid`` for the one documented exception) and every item ``j`` carries an
implicit weight ``w_j`` and factor ``y_j``, sampled with the rest. (Without the first-order term
the implicit factors start from zero and grow only as fast as the user factors do, which takes
most of a short chain.) With ``implicit_items=True`` the items get the same from the users who
rated them, ``q_i = q'_i + |N(i)|^-1/2 sum_{u in N(i)} z_u`` and
``b_i = c_i + |N(i)|^-1/2 sum_{u in N(i)} v_u``: the "flipped" model of Rendle, Zhang & Koren
(2019), whose Bayesian SVD++ flipped (with time effects, which this model lacks) was the best
rating model on MovieLens-10M in their study.

Priors and hyperpriors follow the MCMC formulation of libFM and myFM (Freudenthaler,
Schmidt-Thieme & Rendle 2011), i.e. Salakhutdinov & Mnih's Bayesian PMF (2008) with a
Normal-Gamma hyperprior per factor dimension instead of a Normal-Wishart over all of them:

* ``c_u ~ N(mu_bu, 1/lam_bu)`` and ``c_i ~ N(mu_bi, 1/lam_bi)`` (the biases themselves without
  implicit features), and per dimension ``f``: ``p_uf ~ N(mu_pf, 1/lam_pf)``,
  ``q'_if ~ N(mu_qf, 1/lam_qf)``;
* each ``(mu, lam)`` pair is Normal-Gamma: ``lam ~ Gamma(alpha_0/2, rate=beta_0/2)``,
  ``mu | lam ~ N(0, 1/(gamma_0 lam))``; the noise precision ``alpha ~ Gamma(alpha_0/2,
  rate=beta_0/2)``; ``w_0 ~ N(0, 1/reg_0)``;
* implicit weights ``w_j ~ N(0, 1/(beta_y lam_bu))`` and factors
  ``y_jf ~ N(0, 1/(beta_y lam_pf))`` with ``beta_y ~ Gamma(alpha_0/2, rate=beta_0/2)`` (and the
  same for the item side's ``v_u``, ``z_u`` with ``lam_bi``, ``lam_qf`` and its own ``beta``).
  Scaling each column's prior by the precision of what it explains (as Macau does for its link
  matrix, Simm et al. 2015) makes each implicit step solve one linear system for all columns.

Sampler
-------
The sampler works with ``b_u`` and ``x_u`` themselves (the centred parametrisation of SVD++:
``b_u ~ N(mu_bu + |N(u)|^-1/2 sum_j w_j, 1/lam_bu)``, ``x_u ~ N(mu_p + |N(u)|^-1/2 sum_j y_j,
1/lam_p)`` per dimension). One sweep draws, in turn, ``alpha``; ``w_0``; the user-bias
hyperparameters and all user biases at once; the user-factor hyperparameters (Normal-Gamma, exact
joint draws) and, for each dimension ``f``, all users' ``x_uf`` at once (given the items and the
other dimensions users are independent and each ``x_uf`` is Gaussian); with implicit features
``[w, Y]`` given the user biases and vectors, then ``beta_y``; then the same for the items
(biases, factors dimension by dimension, and with ``implicit_items`` the users' ``[v, Z]``).
Residuals are kept per rating and updated after each block, so a sweep costs
``O(ratings x k)`` plus, with implicit features, ``O(ratings x k)`` per conjugate-gradient
iteration; nothing of size users x items is ever formed.

Each column of ``[w, Y]`` given the users is a Bayesian linear regression (of ``b_u - mu_bu``,
or ``x_uf - mu_pf``) on the normalised rated-items matrix ``N`` (users x items). It is drawn
exactly by perturbation (Papandreou & Yuille 2010; as Macau and SMURFF sample side-information
links): the solution of ``(N'N + beta_y I) y_f = N'(x_f - mu_pf) + (N' e_1 + sqrt(beta_y) e_2) /
sqrt(lam_pf)`` with standard normal ``e_1`` (users) and ``e_2`` (items) is a draw from the
conditional (likewise for ``w`` with the bias's ``mu_bu``, ``lam_bu``). The system is
solved for all dimensions at once by conjugate gradients warm-started from the previous draw, to
relative residual ``cg_tol`` (at most ``cg_max_iter`` iterations): the draw is exact up to that
tolerance. ``N'N`` is the same in every sweep, so its top eigenvectors are computed once per fit
(Lanczos, a few dozen products with ``N``) and deflate the system: the preconditioner inverts
``N'N + beta_y I`` exactly on them, which on ML-100K cuts the iterations from about 20 to 8.
``history_`` records the iterations used.

Predictions
-----------
Predictions are posterior predictive means: the average over kept samples ``s`` of
``mu + w_0^s + b_u^s + b_i^s + x_u^s . q_i^s`` (never the score of averaged factors). The
sweeps after ``burn_in`` are thinned evenly to at most ``max_samples`` kept samples ``S``; since
``(1/S) sum_s x^s . q^s = [x^1 .. x^S]/sqrt(S) . [q^1 .. q^S]/sqrt(S)``, ``user_factors_`` and
``item_factors_`` hold the concatenated, scaled samples (``S * n_factors`` columns) and every
factor-model path (predict, recommend, the top-k engine) computes that average exactly. Biases
are the sample averages. :meth:`BayesianMF.item_embeddings` and
:meth:`BayesianMF.user_embeddings` are the posterior-mean vectors (``n_factors`` columns), for
``similar_items``, t-SNE maps and export.
"""

from __future__ import annotations

import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.data.interactions import Interactions
from cfrec.errors import CfrecError, ModelFileError, TrainingDiverged
from cfrec.models.base import EpochCallback, FoldedUser
from cfrec.models.factor import FactorRecommender, RidgeFoldIn
from cfrec.models.params import hyperparameters, invalid, param
from cfrec.models.torch_engine import resolve_device

logger = logging.getLogger(__name__)

#: Ratings per chunk when dotting gathered factor columns (bounds the (k, chunk) temporaries).
_CHUNK = 1 << 20


# ---------------------------------------------------------------------- backends
class _Backend(Protocol):
    """The arithmetic the sampler needs over one array type (numpy arrays or torch tensors).

    Ratings are held in user-major order; ``resid`` is the per-rating residual
    ``r - mu - w_0 - b_u - b_i - x_u . q_i``. Factor matrices are (k, rows): row ``f`` of a
    matrix is dimension ``f`` of every user (or item), contiguous. The implicit steps work on
    (rows, columns) blocks through :meth:`sparse` operators.
    """

    n_users: int
    n_items: int
    resid: Any
    user_counts: Any  # float32 (n_users,)
    item_counts: Any  # float32 (n_items,)

    def randn(self, *shape: int) -> Any: ...

    def zeros(self, *shape: int) -> Any: ...

    def asarray(self, a: np.ndarray) -> Any: ...

    def index(self, a: np.ndarray) -> Any: ...

    def to_numpy(self, a: Any) -> np.ndarray: ...

    def resid_by_user(self, v_items: Any) -> Any: ...

    def resid_by_item(self, v_users: Any) -> Any: ...

    def count_by_user(self, m_items: Any) -> Any: ...

    def count_by_item(self, m_users: Any) -> Any: ...

    def at_users(self, v: Any) -> Any: ...

    def at_items(self, v: Any) -> Any: ...

    def sub_resid(self, delta: Any) -> None: ...

    def sum64(self, a: Any) -> float: ...

    def sqsum64(self, a: Any) -> float: ...

    def row_moments(self, m: Any) -> tuple[np.ndarray, np.ndarray]: ...

    def col_sqsum(self, m: Any) -> np.ndarray: ...

    def transpose(self, m: Any) -> Any: ...

    def vstack(self, rows: list[Any]) -> Any: ...

    def pair_dot(self, xt: Any, qt: Any, users: Any, items: Any) -> Any: ...

    def sparse(self, mat: sp.csr_array) -> _Operator: ...


class _Operator(Protocol):
    """A fixed sparse matrix ``A`` (rows x cols) on a backend: ``apply`` maps (cols, c) blocks to
    ``A @ v`` (rows, c), ``adjoint`` maps (rows, c) blocks to ``A' @ m`` (cols, c)."""

    def apply(self, v: Any) -> Any: ...

    def adjoint(self, m: Any) -> Any: ...


class _NumpyBackend:
    """CPU arithmetic with numpy and scipy.sparse.

    The residuals are the data array of a users x items CSR matrix ``E`` (and of its transpose,
    a CSC view of the same memory), so the per-user sums ``sum_i e_ui v_i`` and per-item sums
    ``sum_u e_ui v_u`` are single-threaded sparse matrix-vector products: on a shared CPU they
    beat torch's sparse kernels and scatter-adds by about 2x (and never stall on torch's thread
    barrier when the cores are busy).
    """

    def __init__(self, users: np.ndarray, items: np.ndarray, resid: np.ndarray, n_users: int,
                 n_items: int, seed: np.random.SeedSequence) -> None:
        self.n_users, self.n_items = n_users, n_items
        self.rng = np.random.default_rng(seed)
        counts = np.bincount(users, minlength=n_users)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        idx = items.astype(np.int32)
        self._repeat = counts.astype(np.int64)
        self._items = items.astype(np.intp)
        self.resid = np.array(resid, dtype=np.float32)  # a copy: updated in place
        self._e = sp.csr_array((self.resid, idx, indptr), shape=(n_users, n_items))
        self._et = sp.csc_array((self.resid, idx, indptr), shape=(n_items, n_users))
        if not (np.shares_memory(self._e.data, self.resid) and np.shares_memory(self._et.data, self.resid)):
            raise RuntimeError("scipy copied the residual array; the sampler needs it shared")
        ones = np.ones(len(idx), dtype=np.float32)
        self._b = sp.csr_array((ones, idx, indptr), shape=(n_users, n_items))
        self._bt = self._b.T.tocsr()
        self.user_counts = counts.astype(np.float32)
        self.item_counts = np.bincount(items, minlength=n_items).astype(np.float32)

    def randn(self, *shape: int) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32)

    def zeros(self, *shape: int) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def asarray(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, dtype=np.float32)

    def index(self, a: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.intp)

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, dtype=np.float32)

    def resid_by_user(self, v_items: np.ndarray) -> np.ndarray:
        return np.asarray(self._e @ v_items)

    def resid_by_item(self, v_users: np.ndarray) -> np.ndarray:
        return np.asarray(self._et @ v_users)

    def count_by_user(self, m_items: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((self._b @ m_items.T).T)

    def count_by_item(self, m_users: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray((self._bt @ m_users.T).T)

    def at_users(self, v: np.ndarray) -> np.ndarray:
        return np.repeat(v, self._repeat)

    def at_items(self, v: np.ndarray) -> np.ndarray:
        return np.take(v, self._items)

    def sub_resid(self, delta: Any) -> None:
        self.resid -= delta  # in place: E and its transpose see the new values

    def sum64(self, a: np.ndarray) -> float:
        return float(np.sum(a, dtype=np.float64))

    def sqsum64(self, a: np.ndarray) -> float:
        return float(sum(float(np.dot(c, c)) for c in np.array_split(a, max(1, len(a) // 65536))))

    def row_moments(self, m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean = m.mean(axis=1, dtype=np.float64)
        dev = m - mean[:, None].astype(np.float32)
        return mean, np.einsum("ij,ij->i", dev, dev, dtype=np.float64)

    def col_sqsum(self, m: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->j", m, m, dtype=np.float64)

    def transpose(self, m: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(m.T)

    def vstack(self, rows: list[np.ndarray]) -> np.ndarray:
        return np.vstack(rows)

    def pair_dot(self, xt: np.ndarray, qt: np.ndarray, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        out = np.empty(len(users), dtype=np.float32)
        for s in range(0, len(users), _CHUNK):
            u, i = users[s:s + _CHUNK], items[s:s + _CHUNK]
            out[s:s + _CHUNK] = np.einsum("kn,kn->n", xt[:, u], qt[:, i])
        return out

    def sparse(self, mat: sp.csr_array) -> _ScipyOperator:
        return _ScipyOperator(mat)


class _ScipyOperator:
    """A fixed sparse matrix and its transpose, both CSR (scipy's fast multi-column kernel)."""

    def __init__(self, mat: sp.csr_array) -> None:
        self.mat, self.mat_t = mat, mat.T.tocsr()

    def apply(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.mat @ v)

    def adjoint(self, m: np.ndarray) -> np.ndarray:
        return np.asarray(self.mat_t @ m)


class _TorchBackend:
    """The same arithmetic with torch (used on CUDA): gathers, ``index_add_`` and sparse CSR
    products."""

    def __init__(self, users: np.ndarray, items: np.ndarray, resid: np.ndarray, n_users: int,
                 n_items: int, seed: np.random.SeedSequence, device: torch.device) -> None:
        self.n_users, self.n_items = n_users, n_items
        self.device = device
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(int(seed.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        self._users = torch.as_tensor(users.astype(np.int64), device=device)
        self._items = torch.as_tensor(items.astype(np.int64), device=device)
        self.resid = torch.as_tensor(np.array(resid, dtype=np.float32), device=device)
        self.user_counts = torch.as_tensor(np.bincount(users, minlength=n_users).astype(np.float32),
                                           device=device)
        self.item_counts = torch.as_tensor(np.bincount(items, minlength=n_items).astype(np.float32),
                                           device=device)

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.randn(shape, generator=self.gen, device=self.device)

    def zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def asarray(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.array(a, dtype=np.float32), device=self.device)

    def index(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def to_numpy(self, a: torch.Tensor) -> np.ndarray:
        return np.array(a.detach().cpu().numpy(), dtype=np.float32)

    def resid_by_user(self, v_items: torch.Tensor) -> torch.Tensor:
        return self.zeros(self.n_users).index_add_(0, self._users, self.resid * v_items[self._items])

    def resid_by_item(self, v_users: torch.Tensor) -> torch.Tensor:
        return self.zeros(self.n_items).index_add_(0, self._items, self.resid * v_users[self._users])

    def count_by_user(self, m_items: torch.Tensor) -> torch.Tensor:
        return self.zeros(m_items.shape[0], self.n_users).index_add_(1, self._users, m_items[:, self._items])

    def count_by_item(self, m_users: torch.Tensor) -> torch.Tensor:
        return self.zeros(m_users.shape[0], self.n_items).index_add_(1, self._items, m_users[:, self._users])

    def at_users(self, v: torch.Tensor) -> torch.Tensor:
        return v[self._users]

    def at_items(self, v: torch.Tensor) -> torch.Tensor:
        return v[self._items]

    def sub_resid(self, delta: Any) -> None:
        self.resid.sub_(delta)

    def sum64(self, a: torch.Tensor) -> float:
        return float(a.sum(dtype=torch.float64))

    def sqsum64(self, a: torch.Tensor) -> float:
        d = a.double()
        return float(torch.dot(d, d))

    def row_moments(self, m: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        d = m.double()
        mean = d.mean(dim=1)
        dev = d - mean[:, None]
        return mean.cpu().numpy(), (dev * dev).sum(dim=1).cpu().numpy()

    def col_sqsum(self, m: torch.Tensor) -> np.ndarray:
        d = m.double()
        return (d * d).sum(dim=0).cpu().numpy()

    def transpose(self, m: torch.Tensor) -> torch.Tensor:
        return m.T.contiguous()

    def vstack(self, rows: list[torch.Tensor]) -> torch.Tensor:
        return torch.vstack(rows)

    def pair_dot(self, xt: torch.Tensor, qt: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        out = torch.empty(len(users), dtype=torch.float32, device=self.device)
        for s in range(0, len(users), _CHUNK):
            u, i = users[s:s + _CHUNK], items[s:s + _CHUNK]
            out[s:s + _CHUNK] = (xt[:, u] * qt[:, i]).sum(dim=0)
        return out

    def sparse(self, mat: sp.csr_array) -> _TorchOperator:
        return _TorchOperator(mat, self.device)


class _TorchOperator:
    """A fixed sparse matrix and its transpose as torch CSR tensors on a device."""

    def __init__(self, mat: sp.csr_array, device: torch.device) -> None:
        self.mat, self.mat_t = _torch_csr(mat, device), _torch_csr(mat.T.tocsr(), device)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.mat @ v

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:
        return self.mat_t @ m


def _torch_csr(mat: sp.csr_array, device: torch.device) -> torch.Tensor:
    """A torch CSR tensor from a valid scipy CSR matrix (silences torch's beta-feature warning)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*")
        return torch.sparse_csr_tensor(
            torch.as_tensor(mat.indptr.astype(np.int64)), torch.as_tensor(mat.indices.astype(np.int64)),
            torch.as_tensor(mat.data.astype(np.float32)), size=mat.shape, device=device,
            check_invariants=False)


def _implicit_matrix(rows: np.ndarray, others: np.ndarray, n_rows: int, n_others: int) -> sp.csr_array:
    """Rows x others CSR with ``|N(r)|^-1/2`` in each cell of the set ``N(r)`` of others that row
    ``r`` has ratings with (duplicates merged): users x items for user-side implicit feedback,
    items x users for the item side."""
    mat = sp.csr_array((np.ones(len(rows), dtype=np.float32), (rows, others)), shape=(n_rows, n_others))
    mat.sum_duplicates()
    counts = np.diff(mat.indptr)
    inv = np.zeros(n_rows, dtype=np.float64)
    inv[counts > 0] = counts[counts > 0] ** -0.5
    mat.data = np.repeat(inv, counts).astype(np.float32)
    return mat


def _spectral_basis(mat: sp.csr_array, rank: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """The ``rank`` largest eigenvalues (float64, descending) and eigenvectors (float32 columns) of
    ``mat' mat``: dense for small sizes, else by Lanczos (``eigsh``, from a fixed start so the
    result is reproducible; a preconditioner needs no high accuracy)."""
    from scipy.sparse.linalg import LinearOperator, eigsh

    n = mat.shape[1]
    if n <= 8 * rank:
        vals, vecs = np.linalg.eigh((mat.T @ mat).toarray().astype(np.float64))
        top = np.argsort(vals)[::-1][:min(rank, n)]
        return np.maximum(vals[top], 0.0), vecs[:, top].astype(np.float32)
    op = LinearOperator((n, n), matvec=lambda v: mat.T @ (mat @ v), dtype=np.float32)
    vals, vecs = eigsh(op, k=rank, which="LA", tol=1e-2, v0=np.ones(n, dtype=np.float32))
    order = np.argsort(vals)[::-1]
    return np.maximum(vals[order].astype(np.float64), 0.0), vecs[:, order].astype(np.float32)


def _block_cg(apply: Any, rhs: Any, x0: Any, precond: Any, tol: float, max_iter: int) -> tuple[Any, int]:
    """Solve ``A x_f = rhs_f`` for every column ``f`` at once (A symmetric positive definite, given
    as ``apply`` on (n, k) blocks) by preconditioned conjugate gradients from ``x0``.

    ``precond`` maps a residual block to ``M^-1`` times it (M symmetric positive definite). Stops
    when every column's residual norm is at most ``tol`` times its right-hand side's, or after
    ``max_iter`` iterations; returns the solution and the iterations used.
    """
    x = x0
    r = rhs - apply(x)
    z = precond(r)
    p = z
    rz = (r * z).sum(0)
    bnorm = (rhs * rhs).sum(0) ** 0.5 + 1e-30
    for it in range(max_iter):
        if float(((r * r).sum(0) ** 0.5 / bnorm).max()) <= tol:
            return x, it
        ap = apply(p)
        step = rz / ((p * ap).sum(0) + 1e-30)
        x = x + step[None, :] * p
        r = r - step[None, :] * ap
        z = precond(r)
        rz_new = (r * z).sum(0)
        p = z + (rz_new / (rz + 1e-30))[None, :] * p
        rz = rz_new
    return x, max_iter


# ---------------------------------------------------------------------- the sampler
@dataclass(frozen=True)
class _Priors:
    """Hyperprior constants (libFM / myFM names)."""

    alpha_0: float
    beta_0: float
    gamma_0: float
    reg_0: float

    def normal_gamma(self, rng: np.random.Generator, n: int, mean: np.ndarray, ss: np.ndarray,
                     extra_shape: float = 0.0, extra_rate: Any = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Exact draw of ``(mu, lam)`` given ``n`` values with sample mean ``mean`` and centred
        sum of squares ``ss`` (arrays: one group per entry).

        Prior ``lam ~ Gamma(alpha_0/2, rate=beta_0/2)``, ``mu | lam ~ N(0, 1/(gamma_0 lam))``;
        ``extra_shape``/``extra_rate`` add the terms of other values whose prior precision is
        proportional to ``lam`` (the implicit weights and factors).
        """
        g0 = self.gamma_0
        shape = self.alpha_0 / 2 + n / 2 + extra_shape
        rate = self.beta_0 / 2 + ss / 2 + g0 * n * mean**2 / (2 * (g0 + n)) + extra_rate
        lam = rng.gamma(shape, 1.0 / rate)
        mu = n * mean / (g0 + n) + rng.standard_normal(np.shape(mean)) / np.sqrt((g0 + n) * lam)
        return mu, lam

    def gamma(self, rng: np.random.Generator, n: float, ss: float) -> float:
        """Draw a precision with ``Gamma(alpha_0/2, rate=beta_0/2)`` prior given ``n`` Gaussian
        values whose squared deviations (times the other factor of their precision) sum to ``ss``."""
        return float(rng.gamma(self.alpha_0 / 2 + n / 2, 1.0 / (self.beta_0 / 2 + ss / 2)))


class _ImplicitSide:
    """Implicit feedback for the rows of one side (users; or items, the "flipped" model).

    Row ``r``'s bias and vector have prior means shifted by ``N_r . params``: the normalised set
    of other-side entities it has ratings with (``N``, rows x others) times their first-order
    weights and factors (``params``, (n_others, 1 + k)). :meth:`draw` samples ``params`` given
    the rows' biases and vectors, then ``beta`` (see the module docstring).
    """

    def __init__(self, be: _Backend, mat: sp.csr_array, k: int) -> None:
        self.op = be.sparse(mat)
        self.n_rows, self.n_others = mat.shape
        self.eig, basis = _spectral_basis(mat)
        self.basis, self.basis_t = be.asarray(basis), be.asarray(np.ascontiguousarray(basis.T))
        self.params = be.zeros(self.n_others, k + 1)
        self.bias_sum = be.zeros(self.n_rows)  # N @ params[:, 0]
        self.factor_sum = be.zeros(k, self.n_rows)  # (N @ params[:, 1:])'
        self.beta = 1.0
        self.iterations = 0

    def sq_norms(self, be: _Backend) -> np.ndarray:
        """Squared norm of each column of ``params`` (1 + k,)."""
        return be.col_sqsum(self.params)

    def draw(self, be: _Backend, bias: Any, factors: Any, mu: np.ndarray, lam: np.ndarray,
             priors: _Priors, rng: np.random.Generator, tol: float, max_iter: int) -> None:
        """``params`` given the rows' ``bias`` (n_rows,) and ``factors`` (k, n_rows), whose priors
        have means ``mu`` and precisions ``lam`` ((1 + k,) each: bias first) besides the implicit
        shift; then ``beta`` given ``params``."""
        beta, cols = self.beta, len(lam)
        inv_sd = be.asarray(1.0 / np.sqrt(lam)[None, :])  # (1, 1 + k)
        values = be.transpose(be.vstack([bias[None, :], factors]))  # (n_rows, 1 + k)
        target = values - be.asarray(mu[None, :]) + be.randn(self.n_rows, cols) * inv_sd
        rhs = self.op.adjoint(target) + be.randn(self.n_others, cols) * (inv_sd * math.sqrt(beta))
        # M^-1 = V diag(1/(lam + beta)) V' + (I - V V') / c: exact on the top eigenvectors, the
        # scalar 1/c (c = smallest kept eigenvalue + beta) on the rest
        c = float(self.eig[-1]) + beta
        coef = be.asarray((1.0 / (self.eig + beta) - 1.0 / c)[:, None])
        basis, basis_t = self.basis, self.basis_t

        def precond(r: Any) -> Any:
            return basis @ (coef * (basis_t @ r)) + r * (1.0 / c)

        def apply(v: Any) -> Any:
            return self.op.adjoint(self.op.apply(v)) + v * beta

        self.params, self.iterations = _block_cg(apply, rhs, self.params, precond, tol, max_iter)
        sums = be.transpose(self.op.apply(self.params))  # (1 + k, n_rows)
        self.bias_sum, self.factor_sum = sums[0], sums[1:]
        self.beta = priors.gamma(rng, self.n_others * cols, float(np.dot(lam, self.sq_norms(be))))


class _Gibbs:
    """State and one-sweep update of the chain (see the module docstring for the order).

    ``user_sets`` (users x items) and ``item_sets`` (items x users) are the normalised implicit
    feedback matrices of each side, or None where that side has none.
    """

    def __init__(self, be: _Backend, n_ratings: int, k: int, priors: _Priors, init_std: float,
                 user_sets: sp.csr_array | None, item_sets: sp.csr_array | None, cg_tol: float,
                 cg_max_iter: int, rng: np.random.Generator) -> None:
        self.be, self.k, self.priors, self.rng = be, k, priors, rng
        self.cg_tol, self.cg_max_iter = cg_tol, cg_max_iter
        self.n = n_ratings
        n_u, n_i = be.n_users, be.n_items
        self.w0 = 0.0
        self.bu, self.bi = be.zeros(n_u), be.zeros(n_i)
        self.xt = be.randn(k, n_u) * init_std
        self.qt = be.randn(k, n_i) * init_std
        self.user_side = None if user_sets is None else _ImplicitSide(be, user_sets, k)
        self.item_side = None if item_sets is None else _ImplicitSide(be, item_sets, k)
        for f in range(k):
            be.sub_resid(be.at_users(self.xt[f]) * be.at_items(self.qt[f]))
        self.sse = be.sqsum64(be.resid)
        self.alpha = 1.0
        # hyperparameters: bias mean and precision, factor means and precisions, per side
        self.mu_bu = self.lam_bu = self.mu_bi = self.lam_bi = 0.0
        self.mu_x, self.lam_x = np.zeros(k), np.ones(k)
        self.mu_q, self.lam_q = np.zeros(k), np.ones(k)
        self._ones_items = be.zeros(n_i) + 1.0
        self._ones_users = be.zeros(n_u) + 1.0

    def sweep(self) -> None:
        be, pr, rng = self.be, self.priors, self.rng
        self.alpha = pr.gamma(rng, self.n, self.sse)
        a = self.alpha
        prec = pr.reg_0 + a * self.n
        w0 = a * (be.sum64(be.resid) + self.n * self.w0) / prec + float(rng.standard_normal()) / math.sqrt(prec)
        be.sub_resid(w0 - self.w0)
        self.w0 = w0
        for users in (True, False):
            self.bias_step(users)
            self.factor_hyper_step(users)
            self.factor_step(users)
            self.implicit_step(users)
        self.sse = be.sqsum64(be.resid)

    def bias_step(self, users: bool) -> None:
        """Draw the bias hyperparameters of one side, then all its biases at once."""
        be, pr = self.be, self.priors
        b = self.bu if users else self.bi
        side = self.user_side if users else self.item_side
        mean, ss = be.row_moments((b if side is None else b - side.bias_sum)[None, :])
        extra_shape, extra_rate = 0.0, np.zeros(1)
        if side is not None:
            extra_shape, extra_rate = side.n_others / 2, side.beta * side.sq_norms(be)[:1] / 2
        mu_arr, lam_arr = pr.normal_gamma(self.rng, len(b), mean, ss, extra_shape, extra_rate)
        mu, lam = float(mu_arr[0]), float(lam_arr[0])
        prior_mean: Any = mu if side is None else side.bias_sum + mu
        if users:
            new = self._draw(be.resid_by_user(self._ones_items), b, be.user_counts, prior_mean, lam)
            be.sub_resid(be.at_users(new - b))
            self.bu, self.mu_bu, self.lam_bu = new, mu, lam
        else:
            new = self._draw(be.resid_by_item(self._ones_users), b, be.item_counts, prior_mean, lam)
            be.sub_resid(be.at_items(new - b))
            self.bi, self.mu_bi, self.lam_bi = new, mu, lam

    def factor_hyper_step(self, users: bool) -> None:
        """Draw one side's per-dimension factor means and precisions (Normal-Gamma)."""
        be = self.be
        vt = self.xt if users else self.qt
        side = self.user_side if users else self.item_side
        mean, ss = be.row_moments(vt if side is None else vt - side.factor_sum)
        extra_shape, extra_rate = 0.0, np.zeros(self.k)
        if side is not None:
            extra_shape, extra_rate = side.n_others / 2, side.beta * side.sq_norms(be)[1:] / 2
        mu, lam = self.priors.normal_gamma(self.rng, vt.shape[1], mean, ss, extra_shape, extra_rate)
        if users:
            self.mu_x, self.lam_x = mu, lam
        else:
            self.mu_q, self.lam_q = mu, lam

    def factor_step(self, users: bool) -> None:
        """Draw every user's (or item's) vector, one dimension at a time, given the other side and
        the prior ``N(mu + implicit shift, 1/lam)``."""
        be = self.be
        dot: Callable[[Any], Any]
        if users:
            vt, other, mu, lam, side = self.xt, self.qt, self.mu_x, self.lam_x, self.user_side
            h2, dot = be.count_by_user(other * other), be.resid_by_user
        else:
            vt, other, mu, lam, side = self.qt, self.xt, self.mu_q, self.lam_q, self.item_side
            h2, dot = be.count_by_item(other * other), be.resid_by_item
        for f in range(self.k):
            prior_mean: Any = float(mu[f]) if side is None else side.factor_sum[f] + float(mu[f])
            new = self._draw(dot(other[f]), vt[f], h2[f], prior_mean, float(lam[f]))
            if users:
                be.sub_resid(be.at_users(new - vt[f]) * be.at_items(other[f]))
            else:
                be.sub_resid(be.at_users(other[f]) * be.at_items(new - vt[f]))
            vt[f] = new

    def implicit_step(self, users: bool) -> None:
        """Draw one side's implicit weights and factors given its biases and vectors."""
        side = self.user_side if users else self.item_side
        if side is None:
            return
        if users:
            bias, factors, mu, lam = self.bu, self.xt, np.r_[self.mu_bu, self.mu_x], np.r_[self.lam_bu, self.lam_x]
        else:
            bias, factors, mu, lam = self.bi, self.qt, np.r_[self.mu_bi, self.mu_q], np.r_[self.lam_bi, self.lam_q]
        side.draw(self.be, bias, factors, mu, lam, self.priors, self.rng, self.cg_tol, self.cg_max_iter)

    def _draw(self, resid_dot: Any, old: Any, h2: Any, prior_mean: Any, lam: float) -> Any:
        """All rows' new value of one coordinate: Gaussian with precision ``lam + alpha sum h^2``
        and mean ``(lam m + alpha sum h (e + old h)) / precision``."""
        a = self.alpha
        prec = h2 * a + lam
        mean = ((resid_dot + old * h2) * a + prior_mean * lam) / prec
        return mean + self.be.randn(len(old)) / prec**0.5


def _kept_sweeps(n_sweeps: int, burn_in: int, max_samples: int) -> np.ndarray:
    """Sweeps (1-based) whose samples are kept: the post-burn-in sweeps thinned evenly to at most
    ``max_samples``, always ending with the last sweep."""
    post = n_sweeps - burn_in
    n_kept = min(max_samples, post)
    return burn_in + np.ceil(np.arange(1, n_kept + 1) * (post / n_kept) - 1e-9).astype(np.int64)


# ---------------------------------------------------------------------- the model
@hyperparameters
class BayesianMF(FactorRecommender):
    """Bayesian (SVD++-style, with ``implicit=True``) matrix factorisation fitted by Gibbs sampling.

    See the module docstring for the model, the priors and the sampler. No learning rate, no
    regularisation to tune and no early stopping: the hyperpriors adapt every prior precision and
    the noise level to the data, and predictions average the model over posterior samples.

    Defaults were chosen on a random 20% validation carve of ML-100K's ``u1.base`` (never on a
    test file; RMSE, mean of two seeds): the defaults 0.8889; implicit feedback on the user side
    only 0.9032, none 0.9083; 20 factors 0.8914 and 5 factors 0.8936 against 10; burn-in 50
    0.8900 and 100 0.8939 against 25 (the early samples of the chain still help the average);
    400 sweeps or keeping every post-burn-in sample changed under 0.0003. ``benchmarks/myfm_folds.py``
    measures the model against myFM on the official folds.

    Parameters
    ----------
    n_factors
        Latent dimension ``k``. A sweep costs ``O(ratings x k)`` (plus the implicit step).
    n_sweeps
        Gibbs sweeps in all, burn-in included.
    burn_in
        Sweeps discarded before samples are kept (``0 <= burn_in < n_sweeps``).
    max_samples
        At most this many post-burn-in samples are kept (evenly thinned). Prediction cost and the
        size of ``user_factors_``/``item_factors_`` grow as ``max_samples * n_factors`` (4 bytes
        each per user and item: 4 KB per row with the defaults).
    implicit
        Bayesian SVD++: the items each user rated give the user's bias and vector an implicit
        term (first-order weights ``w_j`` and factors ``y_j`` of those items).
    implicit_items
        The flipped counterpart: the users who rated each item give the item's bias and vector an
        implicit term (weights and factors per user). With both, the model is Rendle, Zhang &
        Koren's Bayesian SVD++ flipped without the time effects.
    implicit_include_valid
        Also count the pairs in ``valid`` (passed to ``fit``; never their ratings) in the implicit
        sets: which items each user rated there, and which users rated each item. Published
        ML-100K results with implicit feedback (myFM's examples) use the test-time rated sets
        this way; it tells the model which held-out pairs exist, so it is off by default and must
        be asked for explicitly.
    alpha_0, beta_0
        Shape and rate (halved, as in libFM/myFM) of the Gamma hyperprior on every precision.
    gamma_0
        Prior strength of the Normal hyperprior on every group mean (in units of ``lam``).
    reg_0
        Prior precision of the global offset ``w_0``.
    init_std
        Standard deviation of the random initial factors.
    cg_tol, cg_max_iter
        Relative tolerance and iteration cap of the conjugate-gradient solve in the implicit step.
    seed
        Seeds every draw (``None``: fresh entropy). Same seed, data and device: same model.
    device
        ``None``/``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``. CPU runs on numpy and
        scipy.sparse; CUDA on torch. Both run the same sampler (with different random streams).

    Attributes
    ----------
    user_factors_, item_factors_
        Concatenated kept samples ``[v^1 .. v^S] / sqrt(S)``: (n_users, S * k), (n_items, S * k).
    user_mean_factors_, item_mean_factors_
        Posterior-mean vectors (n_users, k), (n_items, k): the embeddings.
    sample_global_
        ``mu + w_0`` per kept sample (S,).
    sample_noise_precision_
        ``alpha`` per kept sample (S,).
    sample_item_bias_
        Item biases per kept sample (S, n_items).
    sample_user_prior_
        Per kept sample ``[mu_bu, lam_bu, mu_p (k), lam_p (k)]`` (S, 2 + 2k): the prior a new
        user's bias and vector get in :meth:`fold_in`.
    sample_implicit_
        Implicit weights and factors ``[w_j, y_j]`` per kept sample (S, n_items, 1 + k), with
        ``implicit=True`` only (a new user's implicit term in :meth:`fold_in`). The item side's
        per-user weights are not kept: the item vectors already include their term.
    """

    name = "bmf"

    n_factors: int = param(default=10, ge=1)
    n_sweeps: int = param(default=200, ge=1)
    burn_in: int = param(default=25, ge=0)
    max_samples: int = param(default=100, ge=1)
    implicit: bool = True
    implicit_items: bool = True
    implicit_include_valid: bool = False
    alpha_0: float = param(default=1.0, gt=0)
    beta_0: float = param(default=1.0, gt=0)
    gamma_0: float = param(default=1.0, gt=0)
    reg_0: float = param(default=1.0, ge=0)
    init_std: float = param(default=0.1, ge=0)
    cg_tol: float = param(default=1e-3, gt=0, lt=1)
    cg_max_iter: int = param(default=100, ge=1)
    seed: int | None = param(default=0, ge=0)
    device: str | None = None

    def _check_combination(self) -> None:
        if self.burn_in >= self.n_sweeps:
            raise invalid(self, "burn_in", f"< n_sweeps ({self.n_sweeps})")
        if self.implicit_include_valid and not (self.implicit or self.implicit_items):
            raise invalid(self, "implicit_include_valid", "False unless implicit or implicit_items is True "
                          "(it adds the pairs in valid to the implicit feedback)")

    # ------------------------------------------------------------------ fitting
    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        dev = resolve_device(self.device)
        k = int(self.n_factors)
        n_users, n_items = train.n_users, train.n_items
        order = np.argsort(train.users, kind="stable")
        users, items = train.users[order], train.items[order]
        resid = train.ratings[order].astype(np.float32) - np.float32(self.global_mean_)
        # the implicit feedback: who rated what in train (and in valid, when asked to)
        pu, pi = users, items
        if self.implicit_include_valid and valid is not None and len(valid):
            pu, pi = np.concatenate([pu, valid.users]), np.concatenate([pi, valid.items])
        user_sets = _implicit_matrix(pu, pi, n_users, n_items) if self.implicit else None
        item_sets = _implicit_matrix(pi, pu, n_items, n_users) if self.implicit_items else None
        seeds = np.random.SeedSequence(self.seed).spawn(2)
        be: _Backend
        if dev.type == "cpu":
            be = _NumpyBackend(users, items, resid, n_users, n_items, seeds[1])
        else:
            be = _TorchBackend(users, items, resid, n_users, n_items, seeds[1], dev)
        priors = _Priors(float(self.alpha_0), float(self.beta_0), float(self.gamma_0), float(self.reg_0))
        chain = _Gibbs(be, len(resid), k, priors, float(self.init_std), user_sets, item_sets,
                       float(self.cg_tol), int(self.cg_max_iter), np.random.default_rng(seeds[0]))
        self._run(chain, be, valid, on_epoch)

    def _run(self, chain: _Gibbs, be: _Backend, valid: Interactions | None,
             on_epoch: EpochCallback | None) -> None:
        """Run the sweeps, keep the thinned samples and set the learned state."""
        k, n_sweeps = chain.k, int(self.n_sweeps)
        n_users, n_items = be.n_users, be.n_items
        kept = _kept_sweeps(n_sweeps, int(self.burn_in), int(self.max_samples))
        slot_of = {int(s): j for j, s in enumerate(kept)}
        n_kept = len(kept)
        user_samples = np.empty((n_users, n_kept * k), dtype=np.float32)
        item_samples = np.empty((n_items, n_kept * k), dtype=np.float32)
        bu_sum, bi_sum = np.zeros(n_users), np.zeros(n_items)
        self.sample_global_ = np.empty(n_kept, dtype=np.float32)
        self.sample_noise_precision_ = np.empty(n_kept, dtype=np.float32)
        self.sample_item_bias_ = np.empty((n_kept, n_items), dtype=np.float32)
        self.sample_user_prior_ = np.empty((n_kept, 2 + 2 * k), dtype=np.float32)
        self.sample_implicit_ = np.empty((n_kept, n_items, 1 + k), dtype=np.float32) if self.implicit else None
        v_sum = None
        if valid is not None:
            v_u, v_i = be.index(valid.users), be.index(valid.items)
            v_r = valid.ratings.astype(np.float64)
            v_sum = np.zeros(len(v_r))
        v_rmse = math.nan
        lo, hi = self.rating_scale_
        n = chain.n
        for sweep in range(1, n_sweeps + 1):
            start = time.perf_counter()
            chain.sweep()
            if not math.isfinite(chain.sse):
                raise TrainingDiverged("BayesianMF", sweep, None, chain.sse)
            slot = slot_of.get(sweep)
            if slot is not None:
                cols = slice(slot * k, (slot + 1) * k)
                user_samples[:, cols] = be.to_numpy(chain.xt).T
                item_samples[:, cols] = be.to_numpy(chain.qt).T
                bu, bi = be.to_numpy(chain.bu), be.to_numpy(chain.bi)
                bu_sum += bu
                bi_sum += bi
                self.sample_global_[slot] = self.global_mean_ + chain.w0
                self.sample_noise_precision_[slot] = chain.alpha
                self.sample_item_bias_[slot] = bi
                self.sample_user_prior_[slot] = np.concatenate(
                    [[chain.mu_bu, chain.lam_bu], chain.mu_x, chain.lam_x])
                if self.sample_implicit_ is not None and chain.user_side is not None:
                    self.sample_implicit_[slot] = be.to_numpy(chain.user_side.params)
            record: dict[str, Any] = {"epoch": sweep, "train_loss": chain.sse / n,
                                      "train_rmse": math.sqrt(chain.sse / n),
                                      "noise_std": 1.0 / math.sqrt(chain.alpha),
                                      "kept_samples": int(np.searchsorted(kept, sweep, side="right"))}
            for key, side in (("cg_iterations_users", chain.user_side), ("cg_iterations_items", chain.item_side)):
                if side is not None:
                    record[key] = side.iterations
            if v_sum is not None:
                # the posterior predictive mean of the samples kept so far (the current sample's
                # prediction during burn-in)
                if slot is not None or sweep <= kept[0]:
                    pred = (self.global_mean_ + chain.w0 + be.to_numpy(chain.bu[v_u] + chain.bi[v_i])
                            + be.to_numpy(be.pair_dot(chain.xt, chain.qt, v_u, v_i))).astype(np.float64)
                    if slot is not None:
                        v_sum += pred
                        pred = v_sum / (slot + 1)
                    v_rmse = float(np.sqrt(np.mean((np.clip(pred, lo, hi) - v_r) ** 2)))
                record["valid_rmse"] = v_rmse
            record["seconds"] = time.perf_counter() - start
            self.history_.append(record)
            logger.debug("BayesianMF sweep %d: %s", sweep, record)
            if on_epoch is not None:
                on_epoch(dict(record, epochs=n_sweeps))
        self.user_mean_factors_ = user_samples.reshape(n_users, n_kept, k).mean(axis=1)
        self.item_mean_factors_ = item_samples.reshape(n_items, n_kept, k).mean(axis=1)
        scale = np.float32(1.0 / math.sqrt(n_kept))
        user_samples *= scale  # in place: the sample matrices are the largest arrays of the model
        item_samples *= scale
        self.user_factors_, self.item_factors_ = user_samples, item_samples
        self.user_bias_ = (bu_sum / n_kept).astype(np.float32)
        self.item_bias_ = (bi_sum / n_kept).astype(np.float32)
        # Fallbacks and scores build on mu + mean(w_0): the linear terms average exactly.
        self.global_mean_ = float(np.mean(self.sample_global_, dtype=np.float64))

    # ------------------------------------------------------------------ embeddings and scoring
    def item_embeddings(self) -> np.ndarray:
        """Posterior-mean item vectors (n_items, n_factors)."""
        self._check_fitted()
        return self.item_mean_factors_

    def user_embeddings(self) -> np.ndarray:
        """Posterior-mean user vectors (n_users, n_factors); with ``implicit=True`` the SVD++
        vectors ``x_u`` (explicit part plus implicit term)."""
        self._check_fitted()
        return self.user_mean_factors_

    def _score_folded(self, user: FoldedUser, items: np.ndarray) -> np.ndarray:
        """Posterior predictive mean for a folded-in user: its ``factors`` are concatenated per-sample
        vectors, scored against the concatenated item samples like a training user."""
        score = self.global_mean_ + user.bias + self.item_bias_[items]
        if user.factors.size:
            score = score + self.item_factors_[items] @ user.factors
        return np.asarray(score, dtype=np.float32)

    # ------------------------------------------------------------------ cold start
    def fold_in(self, items: Any, ratings: Any = None, *, reg: float | None = None) -> FoldedUser:
        """A new user, solved against every kept posterior sample of the item side.

        For each kept sample ``s`` the user's ``[b_u, x_u]`` is the mean of its conditional
        posterior given that sample: a ridge regression of the ratings minus ``mu + w_0^s + b_i^s``
        on ``[1, q_i^s]`` with noise precision ``alpha^s`` and the sample's prior for a user
        (``N(mu_bu^s, 1/lam_bu^s)`` and ``N(mu_p^s, 1/lam_p^s)``, with implicit features shifted by
        ``|N|^-1/2 sum_j w_j^s`` and ``|N|^-1/2 sum_j y_j^s`` over the given known items). The folded user then scores like a training
        user (an average over the same samples), so folding in a training user's own ratings
        gives back (close to) their learned predictions. ``reg`` replaces the sampled prior
        precisions by ``reg * alpha^s`` (an L2 strength in rating units, as the ridge fold-in of
        other models); prior means are kept. Unknown items are ignored and reported. With
        ``implicit_items=True`` the item vectors are the sampled ones, whose implicit term counts
        the users who rated each item in training; a new user does not join those sets.
        """
        self._check_fitted()
        given = self._fold_in_input(items, ratings)
        if reg is not None and not (math.isfinite(float(reg)) and float(reg) > 0):
            raise CfrecError(f"fold-in regularisation must be a positive number, got {reg!r}")
        idx, r = given.items, given.ratings
        n_kept = len(self.sample_global_)
        k = self.item_mean_factors_.shape[1]
        if not len(idx):
            return self._empty_folded(given, n_kept * k)
        q = self.item_factors_[idx].astype(np.float64).reshape(len(idx), n_kept, k) * math.sqrt(n_kept)
        h = np.concatenate([np.ones((n_kept, len(idx), 1)), q.transpose(1, 0, 2)], axis=2)  # (S, n, 1+k)
        y = r[None, :] - self.sample_global_[:, None].astype(np.float64) - self.sample_item_bias_[:, idx]
        prior = self.sample_user_prior_.astype(np.float64)
        alpha = self.sample_noise_precision_.astype(np.float64)
        mean0 = np.concatenate([prior[:, :1], prior[:, 2:2 + k]], axis=1)  # (S, 1+k)
        if self.sample_implicit_ is not None:  # the implicit terms [w, y] of the given items
            mean0 += self.sample_implicit_[:, idx].sum(axis=1) / math.sqrt(len(idx))
        prec0 = (np.concatenate([prior[:, 1:2], prior[:, 2 + k:]], axis=1) if reg is None
                 else np.full((n_kept, 1 + k), float(reg)) * alpha[:, None])
        a = alpha[:, None, None] * np.einsum("snj,snl->sjl", h, h)
        a[:, np.arange(k + 1), np.arange(k + 1)] += prec0
        rhs = alpha[:, None] * np.einsum("snj,sn->sj", h, y) + prec0 * mean0
        theta = np.linalg.solve(a, rhs[:, :, None])[:, :, 0]  # (S, 1+k)
        factors = (theta[:, 1:].reshape(-1) / math.sqrt(n_kept)).astype(np.float32)
        return FoldedUser(float(theta[:, 0].mean()), factors, idx.astype(np.int32), len(idx),
                          unknown_items=given.unknown, duplicate_items=given.duplicates)

    def fold_in_ridge(self, reg: float | None = None) -> RidgeFoldIn | None:
        """None: the fold-in is a per-sample posterior solve, not one ridge on fixed item factors."""
        return None

    # ------------------------------------------------------------------ persistence
    def _state(self) -> dict[str, np.ndarray]:
        state = super()._state()
        state.update({
            "user_mean_factors": self.user_mean_factors_.astype(np.float32),
            "item_mean_factors": self.item_mean_factors_.astype(np.float32),
            "sample_global": self.sample_global_.astype(np.float32),
            "sample_noise_precision": self.sample_noise_precision_.astype(np.float32),
            "sample_item_bias": self.sample_item_bias_.astype(np.float32),
            "sample_user_prior": self.sample_user_prior_.astype(np.float32),
        })
        if self.sample_implicit_ is not None:
            state["sample_implicit"] = self.sample_implicit_.astype(np.float32)
        return state

    def _set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        super()._set_state(arrays, meta)
        try:
            self.user_mean_factors_ = arrays["user_mean_factors"]
            self.item_mean_factors_ = arrays["item_mean_factors"]
            self.sample_global_ = arrays["sample_global"]
            self.sample_noise_precision_ = arrays["sample_noise_precision"]
            self.sample_item_bias_ = arrays["sample_item_bias"]
            self.sample_user_prior_ = arrays["sample_user_prior"]
            self.sample_implicit_ = arrays.get("sample_implicit")
        except KeyError as exc:
            raise ModelFileError(f"BayesianMF weights lack the array {exc.args[0]!r}") from None
        n_u, n_i = len(self.user_map_), len(self.item_map_)
        k, s = int(self.n_factors), len(self.sample_global_)
        expected = {
            "user_factors": (self.user_factors_.shape, (n_u, s * k)),
            "item_factors": (self.item_factors_.shape, (n_i, s * k)),
            "user_mean_factors": (self.user_mean_factors_.shape, (n_u, k)),
            "item_mean_factors": (self.item_mean_factors_.shape, (n_i, k)),
            "sample_global": (self.sample_global_.shape, (s,)),
            "sample_noise_precision": (self.sample_noise_precision_.shape, (s,)),
            "sample_item_bias": (self.sample_item_bias_.shape, (s, n_i)),
            "sample_user_prior": (self.sample_user_prior_.shape, (s, 2 + 2 * k)),
        }
        if self.implicit or self.sample_implicit_ is not None:
            got = None if self.sample_implicit_ is None else self.sample_implicit_.shape
            expected["sample_implicit"] = (got, (s, n_i, 1 + k))
        for key, (got_shape, want) in expected.items():
            if got_shape != want:
                raise ModelFileError(f"BayesianMF array {key!r} has shape {got_shape}, expected {want} "
                                     f"({n_u} users, {n_i} items, {s} kept samples of {k} factors)")

    def _extra_meta(self) -> dict[str, Any]:
        return {"kept_sweeps": _kept_sweeps(int(self.n_sweeps), int(self.burn_in),
                                            int(self.max_samples)).tolist()}
