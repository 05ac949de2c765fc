"""The Gibbs sampler of :class:`~cfrec.models.bayesian_mf.BayesianMF` (see that module's docstring
for the model, the priors and the order of the draws).

:class:`Residuals` keeps the per-rating residuals ``r - mu - w_0 - b_u - b_i - x_u . q_i`` in
user-major order with the per-user and per-item sums the conditionals need; its arithmetic is an
:class:`~cfrec.engines.backend.ArrayBackend` (numpy and scipy.sparse on the CPU, torch on CUDA).
:class:`GibbsChain` holds the chain's state and draws one sweep; :class:`ImplicitSide` draws the
implicit-feedback weights of one side exactly by perturbation, solving its system with the
deflated, preconditioned block conjugate gradients of :func:`block_cg`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.engines.backend import ArrayBackend, NumpyArrays, TorchArrays

#: Ratings per chunk when dotting gathered factor columns (bounds the (k, chunk) temporaries).
_CHUNK = 1 << 20


class Residuals:
    """The ratings' residuals and their per-user / per-item sums, for one backend ``xp``.

    Ratings are held in user-major order. Factor matrices are (k, rows): row ``f`` of a matrix is
    dimension ``f`` of every user (or item), contiguous. On the CPU the residuals are the data
    array of a users x items CSR matrix ``E`` (and of its transpose, a CSC view of the same
    memory), so the per-user sums ``sum_i e_ui v_i`` and per-item sums ``sum_u e_ui v_u`` are
    single-threaded sparse matrix-vector products: on a shared CPU they beat torch's sparse kernels
    and scatter-adds by about 2x (and never stall on torch's thread barrier when the cores are
    busy). On another device they are gathers and ``index_add_``.
    """

    def __init__(self, xp: ArrayBackend, users: np.ndarray, items: np.ndarray, resid: np.ndarray,
                 n_users: int, n_items: int) -> None:
        self.xp = xp
        self.n_users, self.n_items = n_users, n_items
        counts = np.bincount(users, minlength=n_users)
        self.user_counts: Any = xp.asarray(counts.astype(np.float32))
        self.item_counts: Any = xp.asarray(np.bincount(items, minlength=n_items).astype(np.float32))
        self.resid: Any = xp.asarray(np.array(resid, dtype=np.float32))  # a copy: updated in place
        self._cpu = isinstance(xp, NumpyArrays)
        if self._cpu:
            indptr = np.zeros(n_users + 1, dtype=np.int64)
            np.cumsum(counts, out=indptr[1:])
            idx = items.astype(np.int32)
            self._repeat = counts.astype(np.int64)
            self._items: Any = items.astype(np.intp)
            self._e = sp.csr_array((self.resid, idx, indptr), shape=(n_users, n_items))
            self._et = sp.csc_array((self.resid, idx, indptr), shape=(n_items, n_users))
            if not (np.shares_memory(self._e.data, self.resid) and np.shares_memory(self._et.data, self.resid)):
                raise RuntimeError("scipy copied the residual array; the sampler needs it shared")
            self._b = sp.csr_array((np.ones(len(idx), dtype=np.float32), idx, indptr), shape=(n_users, n_items))
            self._bt = self._b.T.tocsr()
        else:
            self._users: Any = xp.index(users)
            self._items = xp.index(items)

    def resid_by_user(self, v_items: Any) -> Any:
        """``sum_i e_ui v_i`` for every user."""
        if self._cpu:
            return np.asarray(self._e @ v_items)
        return self.xp.zeros(self.n_users).index_add_(0, self._users, self.resid * v_items[self._items])

    def resid_by_item(self, v_users: Any) -> Any:
        """``sum_u e_ui v_u`` for every item."""
        if self._cpu:
            return np.asarray(self._et @ v_users)
        return self.xp.zeros(self.n_items).index_add_(0, self._items, self.resid * v_users[self._users])

    def count_by_user(self, m_items: Any) -> Any:
        """``sum_{i rated by u} m_fi`` for every row ``f`` and user ``u``: (rows, n_users)."""
        if self._cpu:
            return np.ascontiguousarray((self._b @ m_items.T).T)
        return self.xp.zeros((m_items.shape[0], self.n_users)).index_add_(1, self._users, m_items[:, self._items])

    def count_by_item(self, m_users: Any) -> Any:
        """``sum_{u who rated i} m_fu`` for every row ``f`` and item ``i``: (rows, n_items)."""
        if self._cpu:
            return np.ascontiguousarray((self._bt @ m_users.T).T)
        return self.xp.zeros((m_users.shape[0], self.n_items)).index_add_(1, self._items, m_users[:, self._users])

    def at_users(self, v: Any) -> Any:
        """A per-user vector at every rating."""
        return np.repeat(v, self._repeat) if self._cpu else v[self._users]

    def at_items(self, v: Any) -> Any:
        """A per-item vector at every rating."""
        return np.take(v, self._items) if self._cpu else v[self._items]

    def sub_resid(self, delta: Any) -> None:
        """Subtract ``delta`` from every residual, in place (on the CPU, E and its transpose see
        the new values)."""
        self.resid -= delta

    def pair_dot(self, xt: Any, qt: Any, users: Any, items: Any) -> Any:
        """``x_u . q_i`` of (user, item) pairs, in chunks."""
        out = self.xp.zeros(len(users))
        for s in range(0, len(users), _CHUNK):
            u, i = users[s:s + _CHUNK], items[s:s + _CHUNK]
            if self._cpu:
                out[s:s + _CHUNK] = np.einsum("kn,kn->n", xt[:, u], qt[:, i])
            else:
                out[s:s + _CHUNK] = (xt[:, u] * qt[:, i]).sum(dim=0)
        return out


def gibbs_residuals(device: torch.device, users: np.ndarray, items: np.ndarray, resid: np.ndarray, n_users: int,
                    n_items: int, seed: np.random.SeedSequence) -> Residuals:
    """:class:`Residuals` on ``device`` whose backend draws its normals from ``seed``."""
    xp: ArrayBackend = NumpyArrays(seed) if device.type == "cpu" else TorchArrays(device, seed)
    return Residuals(xp, users, items, resid, n_users, n_items)


def spectral_basis(mat: sp.csr_array, rank: int = 32) -> tuple[np.ndarray, np.ndarray]:
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


def block_cg(apply: Any, rhs: Any, x0: Any, precond: Any, tol: float, max_iter: int) -> tuple[Any, int]:
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
class Priors:
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


class ImplicitSide:
    """Implicit feedback for the rows of one side (users; or items, the "flipped" model).

    Row ``r``'s bias and vector have prior means shifted by ``N_r . params``: the normalised set
    of other-side entities it has ratings with (``N``, rows x others) times their first-order
    weights and factors (``params``, (n_others, 1 + k)). :meth:`draw` samples ``params`` given
    the rows' biases and vectors, then ``beta`` (see the module docstring).
    """

    def __init__(self, be: Residuals, mat: sp.csr_array, k: int) -> None:
        self.op = be.xp.sparse(mat)
        self.n_rows, self.n_others = mat.shape
        self.eig, basis = spectral_basis(mat)
        self.basis, self.basis_t = be.xp.asarray(basis), be.xp.asarray(np.ascontiguousarray(basis.T))
        self.params = be.xp.zeros((self.n_others, k + 1))
        self.bias_sum = be.xp.zeros(self.n_rows)  # N @ params[:, 0]
        self.factor_sum = be.xp.zeros((k, self.n_rows))  # (N @ params[:, 1:])'
        self.beta = 1.0
        self.iterations = 0

    def sq_norms(self, be: Residuals) -> np.ndarray:
        """Squared norm of each column of ``params`` (1 + k,)."""
        return be.xp.col_sqsum(self.params)

    def draw(self, be: Residuals, bias: Any, factors: Any, mu: np.ndarray, lam: np.ndarray,
             priors: Priors, rng: np.random.Generator, tol: float, max_iter: int) -> None:
        """``params`` given the rows' ``bias`` (n_rows,) and ``factors`` (k, n_rows), whose priors
        have means ``mu`` and precisions ``lam`` ((1 + k,) each: bias first) besides the implicit
        shift; then ``beta`` given ``params``."""
        beta, cols = self.beta, len(lam)
        inv_sd = be.xp.asarray(1.0 / np.sqrt(lam)[None, :])  # (1, 1 + k)
        values = be.xp.transpose(be.xp.vstack([bias[None, :], factors]))  # (n_rows, 1 + k)
        target = values - be.xp.asarray(mu[None, :]) + be.xp.randn(self.n_rows, cols) * inv_sd
        rhs = self.op.adjoint(target) + be.xp.randn(self.n_others, cols) * (inv_sd * math.sqrt(beta))
        # M^-1 = V diag(1/(lam + beta)) V' + (I - V V') / c: exact on the top eigenvectors, the
        # scalar 1/c (c = smallest kept eigenvalue + beta) on the rest
        c = float(self.eig[-1]) + beta
        coef = be.xp.asarray((1.0 / (self.eig + beta) - 1.0 / c)[:, None])
        basis, basis_t = self.basis, self.basis_t

        def precond(r: Any) -> Any:
            return basis @ (coef * (basis_t @ r)) + r * (1.0 / c)

        def apply(v: Any) -> Any:
            return self.op.adjoint(self.op.apply(v)) + v * beta

        self.params, self.iterations = block_cg(apply, rhs, self.params, precond, tol, max_iter)
        sums = be.xp.transpose(self.op.apply(self.params))  # (1 + k, n_rows)
        self.bias_sum, self.factor_sum = sums[0], sums[1:]
        self.beta = priors.gamma(rng, self.n_others * cols, float(np.dot(lam, self.sq_norms(be))))


class GibbsChain:
    """State and one-sweep update of the chain (see the module docstring for the order).

    ``user_sets`` (users x items) and ``item_sets`` (items x users) are the normalised implicit
    feedback matrices of each side, or None where that side has none.
    """

    def __init__(self, be: Residuals, n_ratings: int, k: int, priors: Priors, init_std: float,
                 user_sets: sp.csr_array | None, item_sets: sp.csr_array | None, cg_tol: float,
                 cg_max_iter: int, rng: np.random.Generator) -> None:
        self.be, self.k, self.priors, self.rng = be, k, priors, rng
        self.cg_tol, self.cg_max_iter = cg_tol, cg_max_iter
        self.n = n_ratings
        n_u, n_i = be.n_users, be.n_items
        self.w0 = 0.0
        self.bu, self.bi = be.xp.zeros(n_u), be.xp.zeros(n_i)
        self.xt = be.xp.randn(k, n_u) * init_std
        self.qt = be.xp.randn(k, n_i) * init_std
        self.user_side = None if user_sets is None else ImplicitSide(be, user_sets, k)
        self.item_side = None if item_sets is None else ImplicitSide(be, item_sets, k)
        for f in range(k):
            be.sub_resid(be.at_users(self.xt[f]) * be.at_items(self.qt[f]))
        self.sse = be.xp.sqsum64(be.resid)
        self.alpha = 1.0
        # hyperparameters: bias mean and precision, factor means and precisions, per side
        self.mu_bu = self.lam_bu = self.mu_bi = self.lam_bi = 0.0
        self.mu_x, self.lam_x = np.zeros(k), np.ones(k)
        self.mu_q, self.lam_q = np.zeros(k), np.ones(k)
        self._ones_items = be.xp.zeros(n_i) + 1.0
        self._ones_users = be.xp.zeros(n_u) + 1.0

    def sweep(self) -> None:
        be, pr, rng = self.be, self.priors, self.rng
        self.alpha = pr.gamma(rng, self.n, self.sse)
        a = self.alpha
        prec = pr.reg_0 + a * self.n
        w0 = a * (be.xp.sum64(be.resid) + self.n * self.w0) / prec + float(rng.standard_normal()) / math.sqrt(prec)
        be.sub_resid(w0 - self.w0)
        self.w0 = w0
        for users in (True, False):
            self.bias_step(users)
            self.factor_hyper_step(users)
            self.factor_step(users)
            self.implicit_step(users)
        self.sse = be.xp.sqsum64(be.resid)

    def bias_step(self, users: bool) -> None:
        """Draw the bias hyperparameters of one side, then all its biases at once."""
        be, pr = self.be, self.priors
        b = self.bu if users else self.bi
        side = self.user_side if users else self.item_side
        mean, ss = be.xp.row_moments((b if side is None else b - side.bias_sum)[None, :])
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
        mean, ss = be.xp.row_moments(vt if side is None else vt - side.factor_sum)
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
        return mean + self.be.xp.randn(len(old)) / prec**0.5


def kept_sweeps(n_sweeps: int, burn_in: int, max_samples: int) -> np.ndarray:
    """Sweeps (1-based) whose samples are kept: the post-burn-in sweeps thinned evenly to at most
    ``max_samples``, always ending with the last sweep."""
    post = n_sweeps - burn_in
    n_kept = min(max_samples, post)
    return burn_in + np.ceil(np.arange(1, n_kept + 1) * (post / n_kept) - 1e-9).astype(np.int64)
