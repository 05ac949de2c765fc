"""Batched L-BFGS fold-in of many new users into a fitted NeuMF network at once.

:meth:`cfrec.models.neumf.NeuMF.fold_in_predict` prepares every user's (item, target) pairs and
scores the vectors this solver returns; the network itself stays fixed.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cfrec.models.neumf_net import _NeuMFNet

#: Step and gradient-change pairs each user's L-BFGS keeps.
_LBFGS_HISTORY = 20


@torch.no_grad()
def solve_fold_in(net: _NeuMFNet, items: np.ndarray, seg: np.ndarray, target: np.ndarray, n: int,
                  lam: float, implicit: bool, max_steps: int, tol: float = 1e-7) -> np.ndarray:
    """Fold-in vectors ``[gmf | mlp | bias]`` (n, d) of ``n`` users at once (float32).

    User ``s`` has the (item, target) pairs where ``seg == s`` (``seg`` sorted); it minimises
    ``mean_i loss(f_i(p), y_i) + lam |p|^2`` over its own vector ``p`` with the network fixed
    (squared error, or binary cross-entropy on logits when ``implicit``). Batched L-BFGS from
    zero: every user keeps its own last ``_LBFGS_HISTORY`` (step, gradient change) pairs, its
    own inverse-Hessian scale and its own Armijo backtracking step; the first step is
    ``min(1, 1 / |g|_1)`` along the gradient, as in ``torch.optim.LBFGS``. Gradients come from
    the network's Jacobian written out (``f`` is linear in the GMF vector and the bias and
    piecewise linear in the MLP vector), one pass over every pair per evaluation. A user stops
    when its gradient's max norm is below ``tol``, its step or objective change is below 1e-9,
    or no step decreases its objective; at most ``max_steps`` iterations.
    """
    dt = torch.float32
    k, half = net.user_gmf.embedding_dim, net.mlp_half
    bias = net.with_bias
    d = k + half + int(bias)
    items_t = torch.as_tensor(np.asarray(items, dtype=np.int64))
    seg_t = torch.as_tensor(np.asarray(seg, dtype=np.int64))
    y = torch.as_tensor(np.asarray(target), dtype=dt)
    with torch.no_grad():
        w_head = net.head.weight[0].to(dt)
        first_layer = net.tower[0]
        assert isinstance(first_layer, nn.Linear)
        w_user = first_layer.weight[:, :half].to(dt)
        qw = net.item_gmf.weight.index_select(0, items_t).to(dt) * w_head[:k]  # the GMF part of J
        item_pre = torch.addmm(first_layer.bias.to(dt), net.item_mlp.weight.index_select(0, items_t).to(dt),
                               first_layer.weight[:, half:].T.to(dt))
        rest: list[tuple[torch.Tensor, torch.Tensor]] = []
        for layer in net.tower[1:]:
            assert isinstance(layer, nn.Linear)
            rest.append((layer.weight.to(dt), layer.bias.to(dt)))
        w_out = w_head[k:]
        const = net.head.bias[0].to(dt) + torch.zeros(len(items_t), dtype=dt)
        if bias:
            const = const + net.offset.to(dt) + net.item_bias.weight[:, 0].index_select(0, items_t).to(dt)
    counts = torch.bincount(seg_t, minlength=n)
    starts = torch.cumsum(counts, 0) - counts
    inv_n = (1.0 / counts.clamp_min(1).to(dt)).index_select(0, seg_t)

    def outputs(sel: torch.Tensor, p: torch.Tensor, jac: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs of the pairs ``sel`` for per-pair vectors ``p`` and, with ``jac``, their Jacobian rows."""
        pre = [torch.addmm(item_pre.index_select(0, sel), p[:, k:k + half], w_user.T)]
        h = torch.relu(pre[0])
        for w, c in rest:
            pre.append(torch.addmm(c, h, w.T))
            h = torch.relu(pre[-1])
        q = qw.index_select(0, sel)
        out = (p[:, :k] * q).sum(1) + h @ w_out + const.index_select(0, sel)
        if bias:
            out = out + p[:, -1]
        if not jac:
            return out, None
        g = w_out * (pre[-1] > 0)
        for (w, _), z in zip(reversed(rest), reversed(pre[:-1]), strict=True):
            g = (g @ w) * (z > 0)
        parts = [q, g @ w_user] + ([torch.ones(len(sel), 1, dtype=dt)] if bias else [])
        return out, torch.cat(parts, 1)

    def losses(out: torch.Tensor, sel: torch.Tensor) -> torch.Tensor:
        if implicit:
            return F.binary_cross_entropy_with_logits(out, y.index_select(0, sel), reduction="none")
        return (out - y.index_select(0, sel)).square()

    def objective(users: torch.Tensor, sel: torch.Tensor, local: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        out, _ = outputs(sel, p.index_select(0, local), False)
        data = torch.zeros(len(users), dtype=dt).index_add_(0, local, losses(out, sel) * inv_n.index_select(0, sel))
        return data + lam * p.square().sum(1)

    def value_grad(users: torch.Tensor, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lens = counts.index_select(0, users)
        local = torch.repeat_interleave(torch.arange(len(users)), lens)
        sel = torch.arange(int(lens.sum())) + (starts.index_select(0, users)
                                               - (torch.cumsum(lens, 0) - lens)).index_select(0, local)
        out, jac = outputs(sel, p.index_select(0, local), True)
        assert jac is not None
        yy, wt = y.index_select(0, sel), inv_n.index_select(0, sel)
        r = torch.sigmoid(out) - yy if implicit else 2.0 * (out - yy)
        f = torch.zeros(len(users), dtype=dt).index_add_(0, local, losses(out, sel) * wt) + lam * p.square().sum(1)
        g = torch.zeros(len(users), d, dtype=dt).index_add_(0, local, jac * (wt * r)[:, None]) + 2.0 * lam * p
        return f, g

    def value(users: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        lens = counts.index_select(0, users)
        local = torch.repeat_interleave(torch.arange(len(users)), lens)
        sel = torch.arange(int(lens.sum())) + (starts.index_select(0, users)
                                               - (torch.cumsum(lens, 0) - lens)).index_select(0, local)
        return objective(users, sel, local, p)

    hist = _LBFGS_HISTORY
    w = torch.zeros(n, d, dtype=dt)
    s_mem = torch.zeros(n, hist, d, dtype=dt)  # each user's last steps ...
    y_mem = torch.zeros(n, hist, d, dtype=dt)  # ... and gradient changes (inert rows: rho = 0)
    rho = torch.zeros(n, hist, dtype=dt)
    gamma = torch.ones(n, dtype=dt)  # initial inverse-Hessian scale s.y / y.y
    active = torch.nonzero(counts > 0).flatten()
    f, g = value_grad(active, w.index_select(0, active))
    initial = True
    for step_no in range(int(max_steps)):
        keep = g.abs().amax(1) > tol  # first-order optimal: done
        active, f, g = active[keep], f[keep], g[keep]
        if not len(active):
            break
        p = w.index_select(0, active)
        # two-loop recursion over the stored pairs, newest first, for every user at once
        q = g.clone()
        sm, ym, rh = s_mem.index_select(0, active), y_mem.index_select(0, active), rho.index_select(0, active)
        newest = [(step_no - 1 - j) % hist for j in range(min(step_no, hist))]
        alphas = []
        for j in newest:
            a_j = rh[:, j] * (sm[:, j] * q).sum(1)
            q -= a_j[:, None] * ym[:, j]
            alphas.append(a_j)
        q *= gamma.index_select(0, active)[:, None]
        for j, a_j in zip(reversed(newest), reversed(alphas), strict=True):
            b_j = rh[:, j] * (ym[:, j] * q).sum(1)
            q += (a_j - b_j)[:, None] * sm[:, j]
        direction = -q
        slope = (g * direction).sum(1)
        descent = slope < -1e-12
        t = (torch.clamp(1.0 / g.abs().sum(1), max=1.0) if initial else torch.ones(len(active), dtype=dt))
        initial = False
        accepted = torch.zeros(len(active), dtype=torch.bool)
        f_new = f.clone()
        for _ls in range(25):  # Armijo backtracking, every user its own step size
            todo = descent & ~accepted
            if not bool(todo.any()):
                break
            trial = value(active, p + t[:, None] * direction)
            ok = todo & (trial <= f + 1e-4 * t * slope)
            f_new = torch.where(ok, trial, f_new)
            accepted |= ok
            t = torch.where(todo & ~ok, t * 0.5, t)
        step = torch.where(accepted[:, None], t[:, None] * direction, torch.zeros_like(direction))
        p_new = p + step
        w.index_copy_(0, active, p_new)
        f_next, g_next = value_grad(active, p_new)
        # store the pair where its curvature is positive (as torch.optim.LBFGS does)
        yv = g_next - g
        ys = (yv * step).sum(1)
        good = accepted & (ys > 1e-10)
        slot = step_no % hist
        zero = torch.zeros_like(step)
        s_mem[active, slot] = torch.where(good[:, None], step, zero)
        y_mem[active, slot] = torch.where(good[:, None], yv, zero)
        rho[active, slot] = torch.where(good, 1.0 / ys.clamp_min(1e-10), torch.zeros_like(ys))
        gamma[active] = torch.where(good, ys / yv.square().sum(1).clamp_min(1e-30), gamma.index_select(0, active))
        done = ~accepted | (step.abs().amax(1) <= 1e-9) | ((f - f_new).abs() < 1e-9)
        active, f, g = active[~done], f_next[~done], g_next[~done]
    return w.numpy()
