"""Compiled (numba) per-sample BPR training on the CPU, lock-free over the cores (Hogwild).

Imported on first use by the models that train with it. The pieces:

* :func:`positive_layout`: each user's positives as a user-major CSR structure, in O(nnz)
  single passes (a counting sort, no comparison sort), in a seeded random order (the order the
  epochs visit them in); the negatives' membership test reads the rated items from the
  model's binary users x items CSR (sorted columns), which fitting builds anyway;
* :func:`bpr_epoch`: one epoch of per-sample steps. The users are cut into shards that the
  threads take one at a time (a few per thread, so that a thread the kernel deschedules on a
  busy machine holds up only its shard) and that write the shared tables without locks, as Hogwild!
  (Niu et al. 2011) and implicit's BPR do: a user's rows belong to one shard only, and item
  rows are rarely written by two threads at the same instant. Within a shard the users come in
  the epoch's order and each user's positives one after the other, so the user's row (and its
  optimiser state) stays in cache while the item rows stream by. Each sample draws its negative
  inside the loop, from the shard's own random stream (xorshift64*, seeded from the seed, the
  epoch and the shard), so one shard (one thread) reproduces a fit exactly.

The step is the gradient of one triple's loss (see :mod:`cfrec.models.bpr`) followed by the
optimiser's rule on the rows it touched: SGD, Adagrad or lazy Adam (the touched rows' moments
only, bias corrections on the step count), the rules of :mod:`cfrec.engines.torch_loop`.
"""

from __future__ import annotations

import logging
from typing import Any

import numba
import numpy as np
import scipy.sparse as sp
from numba import prange

from cfrec.engines.compiled import _jit, splitmix64
from cfrec.engines.driver import ProgressCallback, Trainer
from cfrec.threads import configured_threads, pool_threads

#: Optimiser codes of :func:`bpr_epoch`.
SGD, ADAGRAD, ADAM = 0, 1, 2
OPTIMIZER_CODES = {"sgd": SGD, "adagrad": ADAGRAD, "adam": ADAM}
#: Rejected draws of a negative before the exact draw from the user's unrated items.
_REJECTIONS = 32
#: Step count from which Adam's bias corrections are taken as 1 (below 1e-6 away from it).
_ADAM_SETTLED = 1 << 15
_U64 = np.uint64
#: Shards of users per thread in a parallel epoch.
SHARDS_PER_THREAD = 4
#: Triples an epoch from which the compiled epochs run on every core (below: one thread, whose
#: fit is reproducible bit for bit and pays no thread start-up).
PARALLEL_SAMPLES = 1 << 18

#: The decorator of the kernels here: fastmath (float sums may be reassociated).
_kernel = _jit(fastmath=True)


@_kernel
def _mix(seed: int, a: int, b: int) -> np.uint64:  # pragma: no cover - compiled
    """A non-zero 64-bit stream state from a seed and two counters (splitmix64 finaliser)."""
    z = splitmix64(_U64(seed) + _U64(0x9E3779B97F4A7C15) * _U64(a + 1) + _U64(0xBF58476D1CE4E5B9) * _U64(b + 1))
    return z if z != _U64(0) else _U64(0x2545F4914F6CDD1D)


@_kernel
def _next(state: np.uint64) -> np.uint64:  # pragma: no cover - compiled
    """The next xorshift64 state (the caller multiplies it for its output)."""
    state ^= state >> _U64(12)
    state ^= state << _U64(25)
    state ^= state >> _U64(27)
    return state


@_kernel
def _below(state: np.uint64, n: int) -> np.int64:  # pragma: no cover - compiled
    """A draw in ``0..n-1`` from a state (xorshift64*: the high 32 bits, scaled; n < 2^32)."""
    r = (state * _U64(0x2545F4914F6CDD1D)) >> _U64(32)
    return np.int64((r * _U64(n)) >> _U64(32))


@_kernel
def _unit(state: np.uint64) -> float:  # pragma: no cover - compiled
    """A draw in [0, 1) with 53 random bits."""
    return float((state * _U64(0x2545F4914F6CDD1D)) >> _U64(11)) * (1.0 / 9007199254740992.0)


@_kernel
def _rated(seen: np.ndarray, lo: int, hi: int, item: int) -> bool:  # pragma: no cover - compiled
    """Whether ``item`` is in the sorted run ``seen[lo:hi]`` (binary search)."""
    while lo < hi:
        mid = (lo + hi) >> 1
        v = seen[mid]
        if v < item:
            lo = mid + 1
        elif v > item:
            hi = mid
        else:
            return True
    return False


@_kernel
def _negative(state: np.uint64, seen: np.ndarray, lo: int, hi: int, n_items: int,
              cdf: np.ndarray, weights: np.ndarray) -> tuple[int, np.uint64]:  # pragma: no cover
    """One item outside ``seen[lo:hi]`` (the user's rated items, sorted; at least one item is
    outside): uniform (``cdf`` empty) or with probability proportional to ``weights``.

    Draws from the whole catalogue and rejects the user's items, which is exactly the
    distribution restricted to the unrated items; after :data:`_REJECTIONS` rejections (a user
    whose items hold most of the mass) it draws exactly from the unrated items in one pass.
    Returns the item and the new stream state."""
    weighted = len(cdf) > 0
    for _ in range(_REJECTIONS):
        state = _next(state)
        if weighted:
            target = _unit(state) * cdf[n_items - 1]
            a, b = 0, n_items - 1
            while a < b:  # the first item whose cumulative weight exceeds the target
                mid = (a + b) >> 1
                if cdf[mid] > target:
                    b = mid
                else:
                    a = mid + 1
            j = a
        else:
            j = _below(state, n_items)
        if not _rated(seen, lo, hi, j):
            return j, state
    state = _next(state)
    if not weighted:  # the k-th unrated item: k plus the rated items at or below it
        j = _below(state, n_items - (hi - lo))
        for s in range(lo, hi):
            if seen[s] <= j:
                j += 1
            else:
                break
        return j, state
    free = 0.0
    for j in range(n_items):
        free += weights[j]
    for s in range(lo, hi):
        free -= weights[seen[s]]
    target = _unit(state) * free
    s = lo
    last = -1
    for j in range(n_items):
        if s < hi and seen[s] == j:
            s += 1
            continue
        last = j
        target -= weights[j]
        if target < 0.0:
            return j, state
    return last, state  # rounding left a remainder: the last unrated item


@_kernel
def positive_layout(users: np.ndarray, items: np.ndarray, positive: np.ndarray, n_users: int, n_items: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """The positive (user, item) pairs as a user-major CSR structure, in O(nnz + n_items).

    ``positive[o]`` says whether rating ``o`` is a positive; a pair rated several times is one
    positive. Returns ``(pos_ptr, pos_items)``: (n_users + 1) int64 pointers and int32 items,
    each user's in a random order drawn from ``seed`` (Fisher-Yates per user). One counting
    pass by user, then one pass that drops repeats (an item stamped with its user) and shuffles.
    """
    n = len(users)
    ptr = np.zeros(n_users + 1, np.int64)
    for o in range(n):
        if positive[o]:
            ptr[users[o] + 1] += 1
    for u in range(n_users):
        ptr[u + 1] += ptr[u]
    fill = ptr[:-1].copy()
    bucket = np.empty(ptr[n_users], np.int32)
    for o in range(n):
        if positive[o]:
            u = users[o]
            bucket[fill[u]] = items[o]
            fill[u] += 1
    stamp = np.full(n_items, -1, np.int64)
    pos_ptr = np.zeros(n_users + 1, np.int64)
    state = _mix(seed, 0, 0)
    p = 0
    for u in range(n_users):
        start = p
        for c in range(ptr[u], ptr[u + 1]):
            i = bucket[c]
            if stamp[i] != u:
                stamp[i] = u
                bucket[p] = i  # p <= c: compacts in place
                p += 1
        for a in range(p - start - 1, 0, -1):
            state = _next(state)
            b = _below(state, a + 1)
            x = bucket[start + a]
            bucket[start + a] = bucket[start + b]
            bucket[start + b] = x
        pos_ptr[u + 1] = p
    return pos_ptr, bucket[:p].copy()


@_kernel
def user_sweep(state: np.uint64, pos_ptr: np.ndarray, u: int) -> tuple[int, int, int, np.uint64]:  # pragma: no cover
    """Where user ``u``'s positives lie in an epoch's sweep: ``(lo, n_pos, offset, state)``, the
    sweep taking ``pos_items[lo + (offset + a) % n_pos]`` for ``a`` in ``0..n_pos-1``, from a
    random start drawn from the stream (which moves only for a user with positives)."""
    lo = pos_ptr[u]
    n_pos = pos_ptr[u + 1] - lo
    if n_pos == 0:
        return lo, 0, 0, state
    state = _next(state)
    return lo, n_pos, _below(state, n_pos), state


@_kernel
def softplus_sigmoid(x: float) -> tuple[float, float]:  # pragma: no cover - compiled
    """``softplus(-x)`` (the BPR loss of a pair whose score difference is ``x``) and
    ``sigmoid(-x)`` (its gradient's size), without overflow."""
    if x > 0:
        ex = np.exp(-x)
        return np.log1p(ex), ex / (1.0 + ex)
    ex = np.exp(x)
    return np.log1p(ex) - x, 1.0 / (1.0 + ex)


@_kernel
def _move3(p: np.ndarray, q: np.ndarray, u: int, i: int, j: int, z: float, two_reg: float,
           sp: np.ndarray, sq: np.ndarray, tp: np.ndarray, tq: np.ndarray, opt: int, lr: float, b1: float,
           b2: float, step_size: float, inv_root: float, eps: float) -> None:  # pragma: no cover
    """The optimiser's step on rows ``p_u``, ``q_i`` and ``q_j`` (``i != j``) at once, one factor
    after the other: each factor's three gradients are taken at its values before the step
    (``g_pu = 2 reg p_u - z (q_i - q_j)``, ``g_qi = 2 reg q_i - z p_u``, ``g_qj = 2 reg q_j +
    z p_u``), so one pass reads and writes each row once. ``sp``/``sq``: Adagrad's sums or
    Adam's first moments of ``p``/``q``; ``tp``/``tq``: Adam's second moments."""
    k = p.shape[1]
    f32 = np.float32
    zz, rr, rate = f32(z), f32(two_reg), f32(lr)
    if opt == 0:
        for f in range(k):
            pf, qi, qj = p[u, f], q[i, f], q[j, f]
            p[u, f] = pf - rate * (rr * pf - zz * (qi - qj))
            q[i, f] = qi - rate * (rr * qi - zz * pf)
            q[j, f] = qj - rate * (rr * qj + zz * pf)
    elif opt == 1:
        epsilon = f32(eps)
        for f in range(k):
            pf, qi, qj = p[u, f], q[i, f], q[j, f]
            gp = rr * pf - zz * (qi - qj)
            gi = rr * qi - zz * pf
            gj = rr * qj + zz * pf
            su = sp[u, f] + gp * gp
            si = sq[i, f] + gi * gi
            sj = sq[j, f] + gj * gj
            sp[u, f] = su
            sq[i, f] = si
            sq[j, f] = sj
            p[u, f] = pf - rate * gp / (np.sqrt(su) + epsilon)
            q[i, f] = qi - rate * gi / (np.sqrt(si) + epsilon)
            q[j, f] = qj - rate * gj / (np.sqrt(sj) + epsilon)
    else:
        keep1, take1, keep2, take2 = f32(b1), f32(1.0 - b1), f32(b2), f32(1.0 - b2)
        size, inv, epsilon = f32(step_size), f32(inv_root), f32(eps)
        for f in range(k):
            pf, qi, qj = p[u, f], q[i, f], q[j, f]
            gp = rr * pf - zz * (qi - qj)
            gi = rr * qi - zz * pf
            gj = rr * qj + zz * pf
            mu = keep1 * sp[u, f] + take1 * gp
            mi = keep1 * sq[i, f] + take1 * gi
            mj = keep1 * sq[j, f] + take1 * gj
            vu = keep2 * tp[u, f] + take2 * gp * gp
            vi = keep2 * tq[i, f] + take2 * gi * gi
            vj = keep2 * tq[j, f] + take2 * gj * gj
            sp[u, f] = mu
            sq[i, f] = mi
            sq[j, f] = mj
            tp[u, f] = vu
            tq[i, f] = vi
            tq[j, f] = vj
            p[u, f] = pf - size * mu / (np.sqrt(vu) * inv + epsilon)
            q[i, f] = qi - size * mi / (np.sqrt(vi) * inv + epsilon)
            q[j, f] = qj - size * mj / (np.sqrt(vj) * inv + epsilon)


@_kernel
def _move1(w: np.ndarray, row: int, g: float, s1: np.ndarray, s2: np.ndarray, opt: int, lr: float,
           b1: float, b2: float, step_size: float, inv_root: float,
           eps: float) -> None:  # pragma: no cover - compiled
    """:func:`_move3` for one entry of a 1-D table (an intercept)."""
    if opt == 0:
        w[row] -= lr * g
    elif opt == 1:
        s1[row] += g * g
        w[row] -= lr * g / (np.sqrt(s1[row]) + eps)
    else:
        s1[row] = b1 * s1[row] + (1.0 - b1) * g
        s2[row] = b2 * s2[row] + (1.0 - b2) * g * g
        w[row] -= step_size * s1[row] / (np.sqrt(s2[row]) * inv_root + eps)


@_jit(fastmath=True, parallel=True)
def bpr_epoch(pos_ptr: np.ndarray, pos_items: np.ndarray, seen_ptr: np.ndarray, seen_items: np.ndarray,
              user_order: np.ndarray, shard_bounds: np.ndarray, tables: tuple, first: tuple, second: tuple,
              opt: int, lr: float, reg: float, bias_reg: float, betas: tuple, eps: float, step0: int,
              cdf: np.ndarray, weights: np.ndarray, seed: int, epoch: int,
              record: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled; tested against numpy
    """One epoch of per-sample BPR steps; returns each shard's sum of the triples' losses.

    Shard ``s`` takes the users ``user_order[shard_bounds[s]:shard_bounds[s + 1]]`` in that order
    and each user's positives ``pos_items[pos_ptr[u]:pos_ptr[u + 1]]`` in that order, starting
    at a random one and wrapping around. For each positive ``i`` it draws a negative ``j``
    outside the user's rated items ``seen_items[seen_ptr[u]:seen_ptr[u + 1]]`` (uniform, or by
    ``weights`` through their cumulative sums ``cdf``; both empty for uniform) and takes one
    step on the triple's loss ``softplus(-x) + reg (|p_u|^2 + |q_i|^2 + |q_j|^2) +
    bias_reg (b_i^2 + b_j^2)``, ``x = p_u . (q_i - q_j) + b_i - b_j``, every gradient taken at
    the values before the step. ``tables`` = ``(p, q, b)``; ``first``/``second`` their
    optimiser state (Adagrad: sums in ``first``; Adam: moments; SGD: unused). Adam's step
    ``t`` is ``step0`` plus the samples the shard has done times the number of shards, plus
    one. ``record`` ((len(pos_items), 2) int64, or (0, 2)) receives at each positive's
    position the sample's step number in the epoch (counted as for Adam's ``t``) and its negative. The shards run in parallel without locks.
    """
    p, q, b = tables
    mp, mq, mb = first
    vp, vq, vb = second
    b1, b2 = betas
    n_items = q.shape[0]
    k = p.shape[1]
    n_shards = len(shard_bounds) - 1
    losses = np.zeros(n_shards)
    keep = len(record) > 0
    two_reg = 2.0 * reg
    two_bias_reg = 2.0 * bias_reg
    f32 = np.float32
    for shard in prange(n_shards):
        state = _mix(seed, epoch, shard)
        total = 0.0
        done = 0
        step_size, inv_root = lr, 1.0
        for c in range(shard_bounds[shard], shard_bounds[shard + 1]):
            u = user_order[c]
            lo, n_pos, offset, state = user_sweep(state, pos_ptr, u)
            seen_lo, seen_hi = seen_ptr[u], seen_ptr[u + 1]
            for a in range(n_pos):
                e = lo + (offset + a) % n_pos
                i = pos_items[e]
                j, state = _negative(state, seen_items, seen_lo, seen_hi, n_items, cdf, weights)
                if keep:
                    record[e, 0] = done * n_shards + shard
                    record[e, 1] = j
                dot = f32(0.0)
                sq = f32(0.0)
                for f in range(k):
                    pf, qi, qj = p[u, f], q[i, f], q[j, f]
                    dot += pf * (qi - qj)
                    sq += pf * pf + qi * qi + qj * qj
                bi, bj = b[i], b[j]
                loss, z = softplus_sigmoid(float(dot) + bi - bj)
                total += loss
                total += reg * sq + bias_reg * (bi * bi + bj * bj)
                if opt == 2:
                    t = step0 + done * n_shards + shard + 1
                    if t < _ADAM_SETTLED:
                        step_size = lr / (1.0 - b1 ** t)
                        inv_root = 1.0 / np.sqrt(1.0 - b2 ** t)
                    else:
                        step_size, inv_root = lr, 1.0
                _move3(p, q, u, i, j, z, two_reg, mp, mq, vp, vq, opt, lr, b1, b2, step_size, inv_root, eps)
                _move1(b, i, two_bias_reg * bi - z, mb, vb, opt, lr, b1, b2, step_size, inv_root, eps)
                _move1(b, j, two_bias_reg * bj + z, mb, vb, opt, lr, b1, b2, step_size, inv_root, eps)
                done += 1
        losses[shard] = total
    return losses


def training_layout(seen: sp.csr_array, users: np.ndarray, items: np.ndarray, positive: np.ndarray,
                    seed: int) -> tuple[tuple[np.ndarray, ...], np.ndarray]:
    """The ``layout`` of the Hogwild trainers and which users train.

    ``seen`` is the binary users x items CSR of the training ratings (sorted columns);
    ``users``/``items``/``positive`` the ratings and which of them are positives, laid out by
    :func:`positive_layout` in the order ``seed`` draws. A user trains when it has a positive
    and an item it did not rate (a negative to draw)."""
    n_users, n_items = seen.shape
    pos_ptr, pos_items = positive_layout(users, items, positive, n_users, n_items, seed)
    trainable = (np.diff(pos_ptr) > 0) & (np.diff(seen.indptr) < n_items)
    return (seen.indptr, seen.indices, pos_ptr, pos_items), trainable


def fit_threads(threads: int | None, n_samples: int) -> int:
    """Threads of the compiled epochs: ``threads``, else ``CFREC_NUM_THREADS``, else one for
    small data (below :data:`PARALLEL_SAMPLES` triples an epoch) and every core above."""
    if threads is not None or configured_threads() is not None:
        return pool_threads(threads)
    return 1 if n_samples < PARALLEL_SAMPLES else pool_threads()


class ShardedEpochs:
    """What the Hogwild trainers share: each user's positives and rated items, the users cut
    into shards of about equal samples in a fresh order every epoch, numba's thread pool set for
    an epoch, and the epochs run by :class:`~cfrec.engines.driver.Trainer`. A trainer supplies
    one epoch's kernel call (:meth:`_kernel_epoch`).

    Parameters
    ----------
    layout
        ``(seen_ptr, seen_items, pos_ptr, pos_items)``: each user's rated items, sorted (the
        ``indptr`` and ``indices`` of the binary users x items CSR), and its positives
        (:func:`positive_layout`); see :func:`training_layout`.
    users
        The users that train (each with a positive and an unrated item), int32.
    threads
        Threads an epoch runs on (at most the cores numba has); the users are cut into
        :data:`SHARDS_PER_THREAD` shards a thread (one in all on one thread, which reproduces a
        fit exactly).
    seed
        Seeds the epochs' user orders and the kernels' random streams.
    """

    def __init__(self, layout: tuple[np.ndarray, ...], users: np.ndarray, threads: int, seed: int) -> None:
        seen_ptr, seen_items, self.pos_ptr, self.pos_items = layout
        self.seen_ptr = np.asarray(seen_ptr, dtype=np.int64)
        self.seen_items = np.asarray(seen_items, dtype=np.int32)
        self.users = np.asarray(users, dtype=np.int32)
        self.threads = max(1, int(threads))
        self.shards = 1 if self.threads == 1 else self.threads * SHARDS_PER_THREAD
        self.seed = int(seed)
        self.rng = np.random.default_rng(self.seed)
        self.counts = (self.pos_ptr[self.users + 1] - self.pos_ptr[self.users]).astype(np.int64)
        self.n_samples = int(self.counts.sum())

    def warm_up(self) -> None:
        """Load (or compile) the epoch kernel for these types, moving nothing."""
        self._run(np.zeros(0, np.int32), np.zeros(2, np.int64), 0, 1e-3)

    def epoch(self, epoch: int, lr: float) -> float:
        """Epoch ``epoch`` (1-based) at learning rate ``lr``; returns the mean loss of its samples."""
        order = self.rng.permutation(len(self.users))
        ends = np.cumsum(self.counts[order])
        cuts = np.searchsorted(ends, self.n_samples * np.arange(1, self.shards) / self.shards)
        bounds = np.concatenate([[0], cuts, [len(order)]]).astype(np.int64)
        losses = self._run(self.users[order], bounds, epoch, lr)
        return float(losses.sum()) / max(self.n_samples, 1)

    def train(self, name: str, epochs: int, lr: float, lr_decay: float,
              on_epoch: ProgressCallback | None) -> list[dict[str, Any]]:
        """Warm up, then run ``epochs`` epochs (none without a sample), the rate multiplied by
        ``lr_decay`` after each; returns the history (:class:`~cfrec.engines.driver.Trainer`)."""
        self.warm_up()  # load (or compile) the kernel in the set-up, not in the first epoch
        if not self.n_samples:
            return []
        rate = [float(lr)]

        def step(e: int) -> dict[str, Any]:
            loss = self.epoch(e, rate[0])
            rate[0] *= float(lr_decay)
            return {"train_loss": loss}

        return Trainer(name, int(epochs), on_epoch, lr=float(lr), log_level=logging.INFO).run(step)

    def _run(self, user_order: np.ndarray, bounds: np.ndarray, epoch: int, lr: float) -> np.ndarray:
        threads = min(self.threads, len(bounds) - 1, numba.config.NUMBA_NUM_THREADS)  # type: ignore[attr-defined]
        before = numba.get_num_threads()
        numba.set_num_threads(max(threads, 1))
        chunk = numba.set_parallel_chunksize(1)  # shards handed out one at a time, as threads free up
        try:
            return self._kernel_epoch(user_order, bounds, epoch, lr)
        finally:
            numba.set_parallel_chunksize(chunk)
            numba.set_num_threads(before)

    def _kernel_epoch(self, user_order: np.ndarray, bounds: np.ndarray, epoch: int,
                      lr: float) -> np.ndarray:
        """Each shard's loss sum of one epoch over ``user_order`` cut at ``bounds``."""
        raise NotImplementedError


class HogwildBPR(ShardedEpochs):
    """Per-sample BPR epochs over the cores (:func:`bpr_epoch`) on tables held by the caller.

    Parameters
    ----------
    layout, users, threads, seed
        As :class:`ShardedEpochs`.
    tables
        ``(p, q, b)``: (n_users, k) and (n_items, k) float32 factors and (n_items,) float32
        intercepts, updated in place.
    optimizer
        ``"sgd"``, ``"adagrad"`` or ``"adam"`` (torch's defaults: Adam betas (0.9, 0.999) and
        eps 1e-8, Adagrad eps 1e-10).
    reg, bias_reg
        The per-triple L2 strengths.
    weights
        (n_items,) negative-sampling weights, or None for uniform negatives.
    """

    def __init__(self, layout: tuple[np.ndarray, ...], users: np.ndarray, tables: tuple[np.ndarray, ...],
                 optimizer: str, reg: float, bias_reg: float, weights: np.ndarray | None, threads: int,
                 seed: int) -> None:
        super().__init__(layout, users, threads, seed)
        self.tables = tuple(tables)
        self.opt = OPTIMIZER_CODES[optimizer]
        stateful = self.opt != SGD
        empty = [np.zeros((0,) * t.ndim, np.float32) for t in self.tables]
        self.first = tuple(np.zeros_like(t) if stateful else e for t, e in zip(self.tables, empty, strict=True))
        self.second = tuple(np.zeros_like(t) if self.opt == ADAM else e
                            for t, e in zip(self.tables, empty, strict=True))
        self.eps = 1e-8 if self.opt == ADAM else 1e-10
        self.reg, self.bias_reg = float(reg), float(bias_reg)
        if weights is None:
            self.weights = self.cdf = np.zeros(0)
        else:
            self.weights = np.asarray(weights, dtype=np.float64)
            self.cdf = np.cumsum(self.weights)
        self.record = np.zeros((0, 2), np.int64)  # (len(pos_items), 2) to record the samples

    def _kernel_epoch(self, user_order: np.ndarray, bounds: np.ndarray, epoch: int,
                      lr: float) -> np.ndarray:
        return bpr_epoch(self.pos_ptr, self.pos_items, self.seen_ptr, self.seen_items, user_order, bounds,
                         self.tables, self.first, self.second, self.opt, float(lr), self.reg,
                         self.bias_reg, (0.9, 0.999), self.eps, max(epoch - 1, 0) * self.n_samples,
                         self.cdf, self.weights, self.seed, int(epoch), self.record)
