"""Baseline: global mean plus regularised user and item biases."""

from __future__ import annotations

import numpy as np

from cfrec.data.interactions import Interactions
from cfrec.models._bias import fit_biases
from cfrec.models.base import EpochCallback
from cfrec.models.factor import FactorRecommender
from cfrec.models.params import hyperparameters, param


@hyperparameters
class Baseline(FactorRecommender):
    """``r = mu + b_u + b_i`` with L2-regularised biases, solved in closed form.

    The classic yardstick (Surprise's BaselineOnly fits the same model): every personalised
    model should beat it.

    Parameters
    ----------
    reg_user, reg_item
        L2 strength of user and item biases (in rating-count units: a user with ``reg_user``
        ratings gets half the raw deviation); 0 or more.
    iterations
        Alternating sweeps; each is exact given the other side.
    """

    name = "baseline"

    reg_user: float = param(default=5.0, ge=0)
    reg_item: float = param(default=5.0, ge=0)
    iterations: int = param(default=15, ge=1)

    def _fit(self, train: Interactions, valid: Interactions | None, on_epoch: EpochCallback | None) -> None:
        self.user_bias_, self.item_bias_ = fit_biases(
            train.users, train.items, train.ratings, train.n_users, train.n_items,
            global_mean=self.global_mean_, reg_user=float(self.reg_user), reg_item=float(self.reg_item),
            iterations=int(self.iterations),
        )
        self.user_factors_ = np.zeros((train.n_users, 0), dtype=np.float32)
        self.item_factors_ = np.zeros((train.n_items, 0), dtype=np.float32)

    def _fold_in_reg(self) -> float:
        # A new user's bias is shrunk exactly as in training (a user with no rating: reg 0 -> tiny
        # ridge so the system stays solvable).
        return float(self.reg_user) or 1e-9
