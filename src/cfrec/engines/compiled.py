"""Compiled (numba) training loops of the factor models, for the CPU.

Imported on first use by the models that train with them (importing numba costs a few tenths
of a second, which a fit pays and ``import cfrec`` does not). Each function is compiled once per
argument types and kept in numba's disk cache, so later processes load it; where no cache
folder is writable it is compiled in memory in each process.

* :func:`stable_key_order`: a counting sort of integer keys (users in order, their rows in order).
* :func:`funk_slice`: Funk's per-rating SGD over a slice of ratings (BiasedMF's default).
* :func:`svdpp_adam_step`: one minibatch step of SVD++'s batch-mean loss with lazy Adam, the
  same update as :class:`~cfrec.models.svdpp._SVDppLoss` followed by
  :class:`~cfrec.engines.torch_loop.Adam` on its row-sparse gradients, in one pass that reads
  and writes the batch's rows only.
* :func:`cg_chunk_products`: the products of ALS's and iALS's conjugate-gradient steps over one
  chunk of ratings (:class:`~cfrec.engines.cg.NumpyCG`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np


def _jit(fastmath: bool, parallel: bool = False) -> Callable[[Callable[..., Any]], Any]:
    """``numba.njit`` with the disk cache where a cache folder is writable, in memory otherwise.

    ``fastmath`` lets the compiler reassociate float sums (vectorised dot products), so results
    may differ from the written order in the last bits. Division follows numpy's rules (no
    zero check, which would keep the loops from being vectorised: Adam's update ran 7x slower
    with it); no division here can meet a zero. ``parallel``: ``prange`` loops run on numba's
    thread pool."""

    def compile_(fn: Callable[..., Any]) -> Any:
        try:
            return numba.njit(cache=True, nogil=True, fastmath=fastmath, error_model="numpy", parallel=parallel)(fn)
        except RuntimeError:  # pragma: no cover - no writable cache folder anywhere
            return numba.njit(nogil=True, fastmath=fastmath, error_model="numpy", parallel=parallel)(fn)

    return compile_


#: ``numba.njit`` as cfrec's compiled CPU kernels use it without fastmath (the disk cache where
#: writable, the GIL released, numpy's division rules): the decorator of the other engines' kernels.
kernel = _jit(fastmath=False)


@_jit(fastmath=False)
def stable_key_order(keys: np.ndarray, n_keys: int) -> np.ndarray:  # pragma: no cover - compiled
    """``np.argsort(keys, kind="stable")`` for integer keys in ``0..n_keys-1``, by counting:
    O(len + n_keys) where a comparison sort of 10M keys takes a second or more."""
    start = np.zeros(n_keys + 1, np.int64)
    for key in keys:
        start[key + 1] += 1
    for key in range(n_keys):
        start[key + 1] += start[key]
    order = np.empty(len(keys), np.int64)
    for position in range(len(keys)):
        key = keys[position]
        order[start[key]] = position
        start[key] += 1
    return order


@_jit(fastmath=True)
def funk_slice(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, p: np.ndarray,
               q: np.ndarray, bu: np.ndarray, bi: np.ndarray, mu: float, lr: float, reg: float,
               bias_reg: float) -> float:  # pragma: no cover - compiled; tested through fit
    """Per-rating SGD over the ratings in order, in place; returns their squared error sum
    (each error taken before its own move).

    Float32 arithmetic throughout (the tables' type) with fastmath, so the dot product and the
    row moves are vectorised: 3-4x faster than float64 scalar arithmetic at 128 factors, the
    results differing in the last bits only."""
    k = p.shape[1]
    f32 = np.float32
    rate, lam, bias_lam, mean = f32(lr), f32(reg), f32(bias_reg), f32(mu)
    sse = 0.0
    for n in range(len(users)):
        u, i = users[n], items[n]
        dot = f32(0.0)
        for f in range(k):
            dot += p[u, f] * q[i, f]
        e = mean + bu[u] + bi[i] + dot - ratings[n]
        sse += float(e * e)
        bu[u] -= rate * (e + bias_lam * bu[u])
        bi[i] -= rate * (e + bias_lam * bi[i])
        for f in range(k):
            pf, qf = p[u, f], q[i, f]
            p[u, f] = pf - rate * (e * qf + lam * pf)
            q[i, f] = qf - rate * (e * pf + lam * qf)
    return sse


@_jit(fastmath=False)
def grouped_shuffle(keys: np.ndarray, n_keys: int, seed: int) -> np.ndarray:  # pragma: no cover - compiled
    """An order of the rows with keys (users) in increasing order and each key's rows in a
    random order (Fisher-Yates within each key's run, drawn from a splitmix64 stream seeded by
    ``seed``): a counting sort and one shuffle, O(rows), no global random state."""
    order = stable_key_order(keys, n_keys)
    start = np.zeros(n_keys + 1, np.int64)
    for key in keys:
        start[key + 1] += 1
    for key in range(n_keys):
        start[key + 1] += start[key]
    state = np.uint64(seed)
    golden, c1, c2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
    s30, s27, s31 = np.uint64(30), np.uint64(27), np.uint64(31)
    for key in range(n_keys):
        lo = start[key]
        for j in range(start[key + 1] - 1, lo, -1):  # swap row j with a uniform pick among lo..j
            state += golden
            z = state
            z = (z ^ (z >> s30)) * c1
            z = (z ^ (z >> s27)) * c2
            z = z ^ (z >> s31)
            pick = lo + np.int64(z % np.uint64(j - lo + 1))
            order[j], order[pick] = order[pick], order[j]
    return order


@_jit(fastmath=True)
def _adam_rows(table: np.ndarray, m: np.ndarray, v: np.ndarray, rows: np.ndarray, n_rows: int,
               grad: np.ndarray, grad_scale: float, extra: np.ndarray, extra_scale: float,
               step_size: float, root_bc2: float, b1: float, b2: float, eps: float,
               weight_decay: float) -> None:  # pragma: no cover - compiled
    """Lazy Adam on rows ``rows[:n_rows]`` of a 2-D float32 ``table``: row ``rows[c]`` gets the
    gradient ``grad_scale * grad[c] + extra_scale * extra[c] * table[row]`` (plus the coupled
    weight decay), and only those rows and their moments move. Float32 arithmetic, as torch's."""
    k = table.shape[1]
    f32 = np.float32
    keep1, take1, keep2, take2 = f32(b1), f32(1.0 - b1), f32(b2), f32(1.0 - b2)
    rate, inv_root, epsilon, gs = f32(step_size), f32(1.0 / root_bc2), f32(eps), f32(grad_scale)
    for c in range(n_rows):
        r = rows[c]
        coupled = f32(extra_scale * extra[c] + weight_decay)
        for f in range(k):
            x = table[r, f]
            g = gs * grad[c, f] + coupled * x
            mf = keep1 * m[r, f] + take1 * g
            vf = keep2 * v[r, f] + take2 * g * g
            m[r, f] = mf
            v[r, f] = vf
            table[r, f] = x - rate * mf / (np.sqrt(vf) * inv_root + epsilon)


@_jit(fastmath=True)
def _adam_entries(table: np.ndarray, m: np.ndarray, v: np.ndarray, rows: np.ndarray, n_rows: int,
                  grad: np.ndarray, grad_scale: float, extra: np.ndarray, extra_scale: float,
                  step_size: float, root_bc2: float, b1: float, b2: float, eps: float,
                  weight_decay: float) -> None:  # pragma: no cover - compiled
    """:func:`_adam_rows` for a 1-D table (the biases)."""
    f32 = np.float32
    keep1, take1, keep2, take2 = f32(b1), f32(1.0 - b1), f32(b2), f32(1.0 - b2)
    rate, inv_root, epsilon, gs = f32(step_size), f32(1.0 / root_bc2), f32(eps), f32(grad_scale)
    for c in range(n_rows):
        r = rows[c]
        x = table[r]
        g = gs * grad[c] + f32(extra_scale * extra[c] + weight_decay) * x
        mf = keep1 * m[r] + take1 * g
        vf = keep2 * v[r] + take2 * g * g
        m[r] = mf
        v[r] = vf
        table[r] = x - rate * mf / (np.sqrt(vf) * inv_root + epsilon)


@_jit(fastmath=False)
def _distinct(index: np.ndarray, batch: np.ndarray, slot: np.ndarray, rows: np.ndarray,
              count: np.ndarray) -> int:  # pragma: no cover - compiled
    """The distinct values of ``index[batch]`` into ``rows`` (first appearance first), each
    one's number of entries into ``count`` and its position in ``rows`` into ``slot`` (-1
    elsewhere); returns how many there are."""
    n_distinct = 0
    for b in range(len(batch)):
        v = index[batch[b]]
        if slot[v] < 0:
            slot[v] = n_distinct
            rows[n_distinct] = v
            count[n_distinct] = 0.0
            n_distinct += 1
        count[slot[v]] += 1.0
    return n_distinct


@_jit(fastmath=True)
def svdpp_adam_step(batch: np.ndarray, users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                    indptr: np.ndarray, indices: np.ndarray, norm: np.ndarray, y_weight: np.ndarray,
                    user_weight: np.ndarray, tables: tuple, first: tuple, second: tuple,
                    mu: float, step_size: float, root_bc2: float, betas: tuple, eps: float,
                    reg: float, implicit_reg: float, bias_reg: float, weight_decay: float,
                    scratch: tuple) -> float:  # pragma: no cover - compiled; tested against torch
    """One SVD++ step on rows ``batch`` of the training ratings; returns the step's loss.

    The loss is :class:`~cfrec.models.svdpp._SVDppLoss`'s: the batch mean of
    ``e^2 + reg (|p_u|^2 + |q_i|^2) + bias_reg (b_u^2 + b_i^2)`` with
    ``e = mu + b_u + b_i + q_i . (p_u + z_u) - r`` and ``z_u = |N(u)|^-1/2 sum_{j in N(u)} y_j``,
    plus ``implicit_reg sum_j y_weight_j c_j |y_j|^2`` over the ``y_j`` the step sums (``c_j``:
    the ``user_weight`` of the batch users who rated ``j``). Every gradient is taken at the
    values before the step; then lazy Adam moves the touched rows of ``p, q, b_u, b_i, y``
    (``tables``) and their first and second moments (``first``, ``second``). The penalties'
    gradients ride along as per-row coefficients (a user in ``n`` rows of the batch gets
    ``n reg p_u``), so the loop over the batch's rows does only the data term.

    ``scratch`` holds three (n_users,), (n_items,), (n_items,) int64 slot vectors that are -1
    on entry and are left so, then the work buffers of :class:`~cfrec.models.svdpp._CompiledAdam`.
    """
    p, q, bu, bi, y = tables
    mp, mq, mbu, mbi, my = first
    vp, vq, vbu, vbi, vy = second
    b1, b2 = betas
    user_slot, item_slot, y_slot, u_rows, i_rows, j_rows, u_count, i_count, x, gp, gq, gbu, gbi, gy, y_coef = scratch
    f32 = np.float32
    n = len(batch)
    k = p.shape[1]
    scale = 2.0 / max(n, 1)
    mu32 = f32(mu)
    # the batch's distinct users and items, in order of first appearance, and their row counts
    nu = _distinct(users, batch, user_slot, u_rows, u_count)
    ni = _distinct(items, batch, item_slot, i_rows, i_count)
    # x_u = p_u + z_u for the batch users only; the penalties at the values before the step
    factor_sq = 0.0
    bias_sq = 0.0
    for a in range(nu):
        u = u_rows[a]
        w = norm[u]
        gbu[a] = 0.0
        for f in range(k):
            x[a, f] = 0.0
            gp[a, f] = 0.0
        for s in range(indptr[u], indptr[u + 1]):
            j = indices[s]
            for f in range(k):
                x[a, f] += w * y[j, f]
        sq = f32(0.0)
        for f in range(k):
            sq += p[u, f] * p[u, f]
            x[a, f] += p[u, f]
        factor_sq += u_count[a] * sq
        bias_sq += u_count[a] * bu[u] * bu[u]
    for c in range(ni):
        i = i_rows[c]
        gbi[c] = 0.0
        sq = f32(0.0)
        for f in range(k):
            gq[c, f] = 0.0
            sq += q[i, f] * q[i, f]
        factor_sq += i_count[c] * sq
        bias_sq += i_count[c] * bi[i] * bi[i]
    # the data term: errors, and the gradient sums gp = sum e q_i (= dz_u), gq = sum e x_u
    sse = 0.0
    for b in range(n):
        row = batch[b]
        u = users[row]
        i = items[row]
        a = user_slot[u]
        c = item_slot[i]
        dot = f32(0.0)
        for f in range(k):
            dot += x[a, f] * q[i, f]
        e = mu32 + bu[u] + bi[i] + dot - ratings[row]
        sse += e * e
        gbu[a] += e
        gbi[c] += e
        for f in range(k):
            gp[a, f] += e * q[i, f]
            gq[c, f] += e * x[a, f]
    # y_j: dz_u |N(u)|^-1/2 over the pairs (u, j) of the batch users, and their L2 weights
    nj = 0
    for a in range(nu):
        u = u_rows[a]
        w = f32(norm[u] * scale)
        pair_weight = user_weight[u]
        for s in range(indptr[u], indptr[u + 1]):
            j = indices[s]
            d = y_slot[j]
            if d < 0:
                d = nj
                y_slot[j] = d
                j_rows[d] = j
                y_coef[d] = 0.0
                for f in range(k):
                    gy[d, f] = 0.0
                nj += 1
            y_coef[d] += pair_weight
            for f in range(k):
                gy[d, f] += w * gp[a, f]
    y_sq = 0.0
    for d in range(nj):
        j = j_rows[d]
        coef = y_weight[j] * y_coef[d]
        y_coef[d] = 2.0 * implicit_reg * coef  # from here on: the weight of the L2 gradient
        sq = f32(0.0)
        for f in range(k):
            sq += y[j, f] * y[j, f]
        y_sq += coef * sq
    loss = (sse + reg * factor_sq + bias_reg * bias_sq) / max(n, 1) + implicit_reg * y_sq
    _adam_rows(p, mp, vp, u_rows, nu, gp, scale, u_count, scale * reg, step_size, root_bc2, b1, b2, eps,
               weight_decay)
    _adam_rows(q, mq, vq, i_rows, ni, gq, scale, i_count, scale * reg, step_size, root_bc2, b1, b2, eps,
               weight_decay)
    _adam_entries(bu, mbu, vbu, u_rows, nu, gbu, scale, u_count, scale * bias_reg, step_size, root_bc2, b1, b2,
                  eps, weight_decay)
    _adam_entries(bi, mbi, vbi, i_rows, ni, gbi, scale, i_count, scale * bias_reg, step_size, root_bc2, b1, b2,
                  eps, weight_decay)
    _adam_rows(y, my, vy, j_rows, nj, gy, 1.0, y_coef, 1.0, step_size, root_bc2, b1, b2, eps, weight_decay)
    for a in range(nu):
        user_slot[u_rows[a]] = -1
    for c in range(ni):
        item_slot[i_rows[c]] = -1
    for d in range(nj):
        y_slot[j_rows[d]] = -1
    return loss


@_jit(fastmath=True)
def cg_chunk_products(ptr: np.ndarray, idx: np.ndarray, weight: np.ndarray, target: np.ndarray,
                      v: np.ndarray, fixed: np.ndarray, start: int, by_rows: bool, with_residual: bool,
                      out: np.ndarray) -> tuple[float, float]:  # pragma: no cover - compiled
    """The conjugate-gradient products of one chunk of a user-major CSR layout, in one pass.

    For every rating ``o`` of the chunk's rows ``start + r`` (``ptr``: the chunk's row
    pointers, ``idx``: its columns), ``s = f . x`` with ``x`` the unknown vector of the side
    being solved (``v``) and ``f`` the fixed side's, then ``val * f`` is added to the unknown's
    row of ``out``: ``val = t - w s`` ``with_residual``, else ``w s``. ``by_rows``: the unknowns
    are the rows (``v``, ``out``: n_rows x k; the chunk's rows of ``out`` are overwritten);
    otherwise the columns (``v``, ``out``: n_cols x k; ``out`` is overwritten whole with this
    chunk's part). ``weight`` and ``target`` hold the chunk's ratings, or are empty for
    ``w = 1`` and ``t = 1 + w``. Returns ``(sum t s, sum w s^2)`` (zeros without the
    residual). The same values as :class:`~cfrec.engines.cg.NumpyCG`'s sampled and
    sparse products, without the sampled values' round trip through memory.
    """
    k = v.shape[1]
    has_weight, has_target = len(weight) > 0, len(target) > 0
    f32 = np.float32
    one = f32(1.0)
    t_s = 0.0
    w_ss = 0.0
    if not by_rows:
        out[:] = 0.0
    acc = np.zeros(k, np.float32)
    for r in range(len(ptr) - 1):
        row = start + r
        if by_rows:
            acc[:] = 0.0
        for e in range(ptr[r], ptr[r + 1]):
            col = idx[e]
            s = f32(0.0)
            if by_rows:
                for f in range(k):
                    s += v[row, f] * fixed[col, f]
            else:
                for f in range(k):
                    s += v[col, f] * fixed[row, f]
            w = weight[e] if has_weight else one
            ws = w * s
            if with_residual:
                t = target[e] if has_target else one + w if has_weight else one
                val = t - ws
                t_s += float(t * s)
                w_ss += float(ws * s)
            else:
                val = ws
            if by_rows:
                for f in range(k):
                    acc[f] += val * fixed[col, f]
            else:
                for f in range(k):
                    out[col, f] += val * fixed[row, f]
        if by_rows:
            for f in range(k):
                out[row, f] = acc[f]
    return t_s, w_ss


@_jit(fastmath=True)
def _ridge_times(diag: np.ndarray, row: int, gram: np.ndarray, v: np.ndarray,
                 out: np.ndarray) -> None:  # pragma: no cover - compiled
    """``out = diag[row] * v + v @ gram`` (``diag[row]`` one value or one a column; ``gram``
    (0, 0) for none): the part of ``A_r v`` that does not read the ratings."""
    d = len(v)
    per_column = diag.shape[1] > 1
    for a in range(d):
        out[a] = (diag[row, a] if per_column else diag[row, 0]) * v[a]
    if gram.shape[0] > 0:
        for b in range(d):
            vb = v[b]
            for a in range(d):
                out[a] += vb * gram[b, a]


@_jit(fastmath=True)
def cg_rows_half_step(ptr: np.ndarray, idx: np.ndarray, weight: np.ndarray, target: np.ndarray,
                      fixed: np.ndarray, x0: np.ndarray, start: int, gram: np.ndarray, diag: np.ndarray,
                      steps: int, x: np.ndarray) -> float:  # pragma: no cover - compiled
    """The conjugate-gradient half-step of one chunk of rows, row after row, all steps at once.

    The same steps as :func:`~cfrec.engines.cg.cg_half_step` (whose docstring gives
    the system: ``A_r = gram + sum_o w_o f_o f_o' + diag_r``, ``b_r = sum_o t_o f_o``), but each
    row runs its residual and every step before the next row starts, so the fixed side's rows
    it rated stay in the cache across its steps instead of being read again from memory for
    each step over all rows. Rows ``start + r`` of ``x`` get the new vectors (``x0``: the
    start); ``gram`` is (0, 0) for none, ``diag`` (n_rows, d) or (n_rows, 1); ``weight`` and
    ``target`` as in :func:`cg_chunk_products`. Returns ``sum_r f_r`` over the chunk's rows.
    """
    d = fixed.shape[1]
    has_weight, has_target = len(weight) > 0, len(target) > 0
    f32 = np.float32
    one = f32(1.0)
    total = 0.0
    xr = np.empty(d, np.float32)
    res = np.empty(d, np.float32)
    p = np.empty(d, np.float32)
    ap = np.empty(d, np.float32)
    rest = np.empty(d, np.float32)
    for r in range(len(ptr) - 1):
        row = start + r
        lo, hi = ptr[r], ptr[r + 1]
        for a in range(d):
            xr[a] = x0[row, a]
            res[a] = 0.0
        # residual b - A x0 (data part), and sum t s, sum w s^2
        t_s = 0.0
        w_ss = 0.0
        for e in range(lo, hi):
            col = idx[e]
            s = f32(0.0)
            for a in range(d):
                s += fixed[col, a] * xr[a]
            w = weight[e] if has_weight else one
            t = target[e] if has_target else one + w if has_weight else one
            t_s += float(t * s)
            w_ss += float(w * s * s)
            c = t - w * s
            for a in range(d):
                res[a] += c * fixed[col, a]
        _ridge_times(diag, row, gram, xr, rest)  # rest = diag x0 + x0 G
        x_rest = 0.0
        rs = 0.0
        for a in range(d):
            res[a] -= rest[a]
            x_rest += float(xr[a] * rest[a])
            p[a] = res[a]
            rs += float(res[a] * res[a])
        f_r = 0.5 * (w_ss + x_rest) - t_s
        for step in range(steps):
            _ridge_times(diag, row, gram, p, ap)  # ap = A p: the ridge part, then the data part
            for e in range(lo, hi):
                col = idx[e]
                s = f32(0.0)
                for a in range(d):
                    s += fixed[col, a] * p[a]
                ws = (weight[e] if has_weight else one) * s
                for a in range(d):
                    ap[a] += ws * fixed[col, a]
            pr = 0.0
            pap = 0.0
            for a in range(d):
                pr += float(p[a] * res[a])
                pap += float(p[a] * ap[a])
            alpha = pr / pap if pap > 0 else 0.0
            alpha32 = f32(alpha)
            for a in range(d):
                xr[a] += alpha32 * p[a]
            f_r -= 0.5 * alpha * pr
            if step == steps - 1:
                break
            rs_new = 0.0
            for a in range(d):
                res[a] -= alpha32 * ap[a]
                rs_new += float(res[a] * res[a])
            beta = f32(rs_new / rs if rs > 0 else 0.0)
            for a in range(d):
                p[a] = beta * p[a] + res[a]
            rs = rs_new
        for a in range(d):
            x[row, a] = xr[a]
        total += f_r
    return total


@_jit(fastmath=False)
def splitmix64(x: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """SplitMix64's finaliser: a 64-bit mix in which every input bit moves about half the output
    bits (the hash of one value of :func:`row_fingerprints`, the seeding of the Hogwild streams)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@_jit(fastmath=False)
def row_fingerprints(users: np.ndarray, items: np.ndarray, user_new: np.ndarray, item_new: np.ndarray,
                     timestamps: np.ndarray, ratings: np.ndarray, weights: np.ndarray,
                     has_weights: bool) -> np.ndarray:  # pragma: no cover - compiled
    """The 64-bit hash of every row that :meth:`cfrec.data.Interactions.fingerprint` digests, in
    one pass (numpy's version makes a dozen passes over 10M-row temporaries): ``users``/``items``
    are mapped through ``user_new``/``item_new`` (the compacted indices), ``timestamps`` is the
    int64 data viewed as uint64, ``ratings``/``weights`` the float32 data viewed as uint32."""
    n = len(users)
    out = np.empty(n, np.uint64)
    s32 = np.uint64(32)
    k_time, k_rating = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xD1B54A32D192ED03)
    k_weight = np.uint64(0x8CB92BA72F3D8DD7)
    for r in range(n):
        h = splitmix64((np.uint64(user_new[users[r]]) << s32) | np.uint64(item_new[items[r]]))
        h ^= splitmix64(timestamps[r] ^ k_time)
        h ^= splitmix64(np.uint64(ratings[r]) + k_rating)
        if has_weights:
            h ^= splitmix64(np.uint64(weights[r]) + k_weight)
        out[r] = h
    return out



@_jit(fastmath=False)
def weigh_rows(users: np.ndarray, items: np.ndarray, values: np.ndarray, idf: np.ndarray, lengths: np.ndarray,
               bm25: bool, k1: float, b: float, mean_length: float,
               out: np.ndarray) -> None:  # pragma: no cover - compiled; tested against numpy
    """:func:`cfrec.engines.matrix.row_weighting`'s TF-IDF (``sqrt(v) idf_i``) or BM25 (``v (k1 +
    1) / (k1 L_u + v) idf_i``) of every row into ``out`` (float32), in one pass with numpy's
    float64 arithmetic in its order (the same values) and no per-row temporaries."""
    for r in range(len(values)):
        v = np.float64(values[r])
        if bm25:
            norm = (1.0 - b) + b * lengths[users[r]] / mean_length
            denom = k1 * norm + v
            out[r] = np.float32((v * (k1 + 1.0) / denom if denom > 0 else 0.0) * idf[items[r]])
        else:
            out[r] = np.float32(np.sqrt(v) * idf[items[r]])


@_jit(fastmath=False)
def row_sums(rows: np.ndarray, values: np.ndarray, n_rows: int) -> np.ndarray:  # pragma: no cover - compiled
    """``np.bincount(rows, weights=values, minlength=n_rows)`` (float64 sums in the same order)
    without its float64 copy of the values."""
    out = np.zeros(n_rows, np.float64)
    for r in range(len(rows)):
        out[rows[r]] += np.float64(values[r])
    return out


@_jit(fastmath=False)
def bias_sweeps(users: np.ndarray, items: np.ndarray, ratings: np.ndarray, global_mean: float, n_users: int,
                n_items: int, reg_user: float, reg_item: float,
                iterations: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """:func:`cfrec.models._bias.fit_biases`'s alternating sweeps, each one pass over the ratings
    with numpy's float64 arithmetic in its order (the same values) and no per-rating temporaries."""
    n_u = np.zeros(n_users, np.float64)
    n_i = np.zeros(n_items, np.float64)
    for k in range(len(users)):
        n_u[users[k]] += 1.0
        n_i[items[k]] += 1.0
    b_u = np.zeros(n_users, np.float64)
    b_i = np.zeros(n_items, np.float64)
    for _ in range(iterations):
        s_i = np.zeros(n_items, np.float64)
        for k in range(len(users)):
            s_i[items[k]] += (np.float64(ratings[k]) - global_mean) - b_u[users[k]]
        b_i = s_i / (reg_item + n_i)
        s_u = np.zeros(n_users, np.float64)
        for k in range(len(users)):
            s_u[users[k]] += (np.float64(ratings[k]) - global_mean) - b_i[items[k]]
        b_u = s_u / (reg_user + n_u)
    return b_u, b_i


def warm_up() -> None:
    """Load (or compile) every kernel of this module for the argument types the fits pass, now.

    A process pays numba's start (importing it, then setting up its compiler on the first
    kernel loaded) once, about a second or two of CPU, and each kernel's load from the disk
    cache once; a fit that meets them first counts them in its set-up. Call this where that
    should be paid up front (a service's start, a benchmark that times fits)."""
    i32, i64, f32 = np.int32, np.int64, np.float32
    none1, none2 = np.zeros(0, f32), np.zeros((0, 1), f32)
    for keys in (np.zeros(0, i32), np.zeros(0, i64)):
        stable_key_order(keys, 0)
    for index in (np.zeros(0, i32), np.zeros(0, i64)):
        funk_slice(index, index, none1, none2, none2, none1, none1, 0.0, 0.0, 0.0, 0.0)
    grouped_shuffle(np.zeros(0, i32), 0, 0)
    ptr = np.zeros(1, i32)
    for idx in (np.zeros(0, i32), np.zeros(0, i64)):
        cg_chunk_products(ptr, idx, none1, none1, none2, none2, 0, True, True, none2)
        cg_rows_half_step(ptr, idx, none1, none1, none2, none2, 0, np.zeros((0, 0), f32), none2, 1, none2)
    row_fingerprints(np.zeros(0, i32), np.zeros(0, i32), np.zeros(0, i64), np.zeros(0, i64), np.zeros(0, np.uint64),
                     np.zeros(0, np.uint32), np.zeros(0, np.uint32), False)
    f64 = np.zeros(0, np.float64)
    weigh_rows(np.zeros(0, i32), np.zeros(0, i32), none1, f64, f64, True, 0.0, 0.0, 1.0, none1)
    row_sums(np.zeros(0, i32), none1, 0)
    bias_sweeps(np.zeros(0, i32), np.zeros(0, i32), none1, 0.0, 0, 0, 1.0, 1.0, 1)
