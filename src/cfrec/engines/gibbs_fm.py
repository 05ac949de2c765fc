"""Gibbs sampling of a factorization machine over two relational blocks (numba, CPU).

Every rating ``n`` of user ``u`` and item ``i`` has the design row ``x_n = [B_u[u], B_i[i]]``:
one row of the *user block* ``B_u`` (users x user-side columns: the user's one-hot id, its side
features, its normalised rated-items set ...) beside one row of the *item block* ``B_i``. The
factorization machine (Rendle 2010) predicts::

    y_n = w_0 + sum_l x_nl w_l + sum_{l < l'} x_nl x_nl' <v_l, v_l'>

which, per side, splits into an entity bias ``b = B w + 1/2 sum_f ((B V)_f^2 - (B^2 V^2)_f)``
and an entity vector ``a = B V``: ``y_n = w_0 + b_u + b_i + a_u . a_i``. This is the
"relational" form of myFM (Ohtsuki's myFM; Rendle's libFM for block structure, 2013): nothing of
size ratings x columns is ever formed, each coordinate update costs the nonzeros of its column in
its block, and the per-rating work is ``O(ratings)`` per factor dimension and side.

The sampler is libFM's MCMC (Freudenthaler, Schmidt-Thieme & Rendle 2011): every ``w_l`` and
every ``v_lf`` is drawn from its Gaussian conditional in turn (columns in order), with a
Normal-Gamma hyperprior per column *group* (its own ``mu_w, lam_w`` and per dimension
``mu_vf, lam_vf``) and a Gamma prior on the noise precision ``alpha``. For a column ``l`` of the
user block and dimension ``f``, the derivative of ``y_n`` with respect to ``v_lf`` is
``h_n = x_ul (a_uf - x_ul v_lf + a_if)``, so the conditional needs, per user, the sums over its
ratings of ``e_n``, ``a_if e_n``, ``a_if`` and ``a_if^2``; they are formed once per (side,
dimension) and then kept current in ``O(1)`` per touched user as the column's draw changes
``y_n``. Residuals ``e_n`` are brought up to date once per (side, dimension) from the change of
the entity terms.

An optional third *context* block holds entities that belong to the rating itself (a user's day
of rating): its columns interact with both sides' as every FM column does, and a column's
conditional then uses, per rating, the sum of the other blocks' coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from cfrec.engines.compiled import kernel
from cfrec.engines.gibbs import Priors


# ---------------------------------------------------------------------- compiled kernels
@kernel
def entity_sums(ptr: np.ndarray, pos: np.ndarray, other: np.ndarray, e: np.ndarray,
                c: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover
    """Per entity ``r``, over its ratings ``pos[ptr[r]:ptr[r+1]]``: ``sum e``, ``sum c e``, ``sum c``,
    ``sum c^2`` with ``c`` the other side's current coordinate at each rating."""
    n_ent = len(ptr) - 1
    s_e = np.zeros(n_ent)
    s_ce = np.zeros(n_ent)
    s_c = np.zeros(n_ent)
    s_c2 = np.zeros(n_ent)
    for r in range(n_ent):
        a0 = 0.0
        a1 = 0.0
        a2 = 0.0
        a3 = 0.0
        for t in range(ptr[r], ptr[r + 1]):
            p = pos[t]
            cv = c[other[p]]
            ev = e[p]
            a0 += ev
            a1 += cv * ev
            a2 += cv
            a3 += cv * cv
        s_e[r] = a0
        s_ce[r] = a1
        s_c[r] = a2
        s_c2[r] = a3
    return s_e, s_ce, s_c, s_c2


@kernel
def coordinate_step(col_ptr: np.ndarray, col_rows: np.ndarray, col_vals: np.ndarray, groups: np.ndarray,
                    v: np.ndarray, a: np.ndarray, sq: np.ndarray, s_e: np.ndarray, s_ce: np.ndarray,
                    s_c: np.ndarray, s_c2: np.ndarray, cnt: np.ndarray, mu: np.ndarray, lam: np.ndarray,
                    alpha: float, z: np.ndarray, linear: bool) -> None:  # pragma: no cover
    """Draw one coordinate of every column of a block in column order: dimension ``f`` of the
    vectors (``v``: that dimension), keeping each entity's ``a = (B V)_f``, ``sq = (B^2 V^2)_f``
    and residual sums current; or, with ``linear``, the first-order weights (``v``: ``w``, ``a``:
    the entities' linear terms ``B w``; ``sq``, ``s_ce``, ``s_c``, ``s_c2`` unused), whose
    derivative ``x`` is the factor case's ``x (a' + c)`` with ``a' + c`` fixed to 1."""
    for col in range(len(v)):
        old = v[col]
        num = 0.0
        den = 0.0
        for t in range(col_ptr[col], col_ptr[col + 1]):
            r = col_rows[t]
            x = col_vals[t]
            if linear:
                num += x * s_e[r] + old * x * x * cnt[r]
                den += x * x * cnt[r]
            else:
                ap = a[r] - x * old
                hh = ap * ap * cnt[r] + 2.0 * ap * s_c[r] + s_c2[r]
                num += x * (ap * s_e[r] + s_ce[r]) + old * x * x * hh
                den += x * x * hh
        g = groups[col]
        prec = alpha * den + lam[g]
        new = (alpha * num + lam[g] * mu[g]) / prec + z[col] / np.sqrt(prec)
        d = new - old
        for t in range(col_ptr[col], col_ptr[col + 1]):
            r = col_rows[t]
            x = col_vals[t]
            if linear:
                s_e[r] -= cnt[r] * x * d
            else:
                ap = a[r] - x * old
                s_e[r] -= d * x * (ap * cnt[r] + s_c[r])
                s_ce[r] -= d * x * (ap * s_c[r] + s_c2[r])
                sq[r] += x * x * (new * new - old * old)
            a[r] += x * d
        v[col] = new


# ---------------------------------------------------------------------- one side
class Block:
    """One relational block: the entities of a side (rows) by its columns, with the columns'
    groups, parameters and the entities' cached terms."""

    def __init__(self, mat: sp.csr_array, groups: np.ndarray, n_groups: int, ent: np.ndarray,
                 other: np.ndarray, k: int, init_std: float, rng: np.random.Generator) -> None:
        csc = sp.csc_array(mat)
        csc.sort_indices()
        self.shape = mat.shape
        self.col_ptr = csc.indptr.astype(np.int64)
        self.col_rows = csc.indices.astype(np.int64)
        self.col_vals = csc.data.astype(np.float64)
        self.mat = sp.csr_array(mat).astype(np.float64)
        self.mat_sq = self.mat.multiply(self.mat).tocsr()
        self.groups = np.asarray(groups, dtype=np.int64)
        self.n_groups = n_groups
        self.group_sizes = np.bincount(self.groups, minlength=n_groups).astype(np.float64)
        n_ent, n_cols = mat.shape
        # ratings of each entity: positions into the (user-ordered) rating arrays
        self.ent = ent  # entity of each rating
        self.other = other  # the other side's entity of each rating
        order = np.argsort(ent, kind="stable")
        self.pos = order.astype(np.int64)
        self.ptr = np.zeros(n_ent + 1, dtype=np.int64)
        np.cumsum(np.bincount(ent, minlength=n_ent), out=self.ptr[1:])
        self.cnt = np.diff(self.ptr).astype(np.float64)
        self.w = np.zeros(n_cols)
        self.v = rng.standard_normal((k, n_cols)) * init_std  # (k, cols): one contiguous row per dimension
        self.mu_w, self.lam_w = np.zeros(n_groups), np.ones(n_groups)
        self.mu_v, self.lam_v = np.zeros((n_groups, k)), np.ones((n_groups, k))
        self.lin = self.mat @ self.w
        self.a = np.ascontiguousarray((self.mat @ self.v.T).T)  # (k, n_ent)
        self.sq = np.ascontiguousarray((self.mat_sq @ (self.v * self.v).T).T)

    def bias(self) -> np.ndarray:
        """Each entity's bias: its linear term plus the interactions within its own row."""
        return self.lin + 0.5 * (self.a * self.a - self.sq).sum(axis=0)

    def draw_hyper(self, priors: Priors, rng: np.random.Generator) -> None:
        """Normal-Gamma draws of every group's ``(mu_w, lam_w)`` and ``(mu_vf, lam_vf)``."""
        n = np.maximum(self.group_sizes, 1e-12)
        sizes: Any = self.group_sizes  # one count per group (normal_gamma broadcasts)
        mean_w = np.bincount(self.groups, self.w, self.n_groups) / n
        ss_w = np.bincount(self.groups, (self.w - mean_w[self.groups]) ** 2, self.n_groups)
        self.mu_w, self.lam_w = priors.normal_gamma(rng, sizes, mean_w, ss_w)
        for f in range(self.v.shape[0]):
            mean = np.bincount(self.groups, self.v[f], self.n_groups) / n
            ss = np.bincount(self.groups, (self.v[f] - mean[self.groups]) ** 2, self.n_groups)
            self.mu_v[:, f], self.lam_v[:, f] = priors.normal_gamma(rng, sizes, mean, ss)


@dataclass
class FMChain:
    """State and one sweep of the block FM sampler; ``e`` holds the residual of every rating.

    ``context`` is an optional third block whose entity is a property of the rating itself (a
    user's day of rating, say): its columns interact with both sides' columns as every FM
    column does, so ``y_n = w_0 + b_u + b_i + b_c + a_u . a_i + a_u . a_c + a_i . a_c``."""

    users: Block
    items: Block
    y: np.ndarray
    priors: Priors
    rng: np.random.Generator
    w0: float = 0.0
    alpha: float = 1.0
    context: Block | None = None

    def __post_init__(self) -> None:
        self.blocks = [self.users, self.items] + ([] if self.context is None else [self.context])
        self.e = self.y - self.predict_all()
        self.k = self.users.v.shape[0]
        self._rating_pos = np.arange(len(self.y), dtype=np.int64)

    def predict_all(self) -> np.ndarray:
        out = self.w0 + self.users.bias()[self.users.ent] + self.items.bias()[self.items.ent]
        if self.context is not None:
            out += self.context.bias()[self.context.ent]
        for f in range(self.users.a.shape[0]):
            for j, b in enumerate(self.blocks):
                for o in self.blocks[j + 1:]:
                    out += b.a[f][b.ent] * o.a[f][o.ent]
        return np.asarray(out)

    def sweep(self) -> None:
        pr, rng = self.priors, self.rng
        n = len(self.e)
        self.alpha = pr.gamma(rng, n, float(self.e @ self.e))
        prec = pr.reg_0 + self.alpha * n
        w0 = self.alpha * (float(self.e.sum()) + n * self.w0) / prec + float(rng.standard_normal()) / np.sqrt(prec)
        self.e -= w0 - self.w0
        self.w0 = w0
        for block in self.blocks:
            block.draw_hyper(pr, rng)
        for block in self.blocks:
            self._linear(block)
        for f in range(self.k):
            for block in self.blocks:
                self._factor(block, f)

    def _linear(self, b: Block) -> None:
        s_e = np.bincount(b.ent, self.e, b.shape[0])
        old = b.lin.copy()
        unused = np.zeros(0)
        coordinate_step(b.col_ptr, b.col_rows, b.col_vals, b.groups, b.w, b.lin, unused, s_e, unused, unused,
                        unused, b.cnt, b.mu_w, b.lam_w, self.alpha, self.rng.standard_normal(b.shape[1]), True)
        self.e -= (b.lin - old)[b.ent]

    def _factor(self, b: Block, f: int) -> None:
        others = [o for o in self.blocks if o is not b]
        if len(others) == 1:  # two blocks: the other side's coordinate, looked up per rating
            c, at = others[0].a[f], others[0].ent
        else:  # the sum of the other blocks' coordinates at each rating
            c, at = sum(o.a[f][o.ent] for o in others), self._rating_pos
        s_e, s_ce, s_c, s_c2 = entity_sums(b.ptr, b.pos, at, self.e, c)
        a_old, sq_old = b.a[f].copy(), b.sq[f].copy()
        coordinate_step(b.col_ptr, b.col_rows, b.col_vals, b.groups, b.v[f], b.a[f], b.sq[f], s_e, s_ce, s_c,
                        s_c2, b.cnt, b.mu_v[:, f], b.lam_v[:, f], self.alpha, self.rng.standard_normal(b.shape[1]),
                        False)
        d_a = b.a[f] - a_old
        d_self = 0.5 * ((b.a[f] ** 2 - b.sq[f]) - (a_old ** 2 - sq_old))
        self.e -= d_a[b.ent] * c[at] + d_self[b.ent]


def entity_terms(mat: sp.csr_array, w: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bias (n,) and vector (n, k) of entities with design rows ``mat`` under one sample's
    first-order weights ``w`` (cols,) and vectors ``v`` (cols, k)."""
    m = sp.csr_array(mat).astype(np.float64)
    a = m @ v
    sq = m.multiply(m) @ (v * v)
    bias = m @ w + 0.5 * (a * a - sq).sum(axis=1)
    return np.asarray(bias), np.asarray(a)
