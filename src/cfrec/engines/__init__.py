"""Numeric engines of cfrec's models: the arithmetic apart from the models' math.

Modules (each imported where it is used; importing this package loads nothing heavy):

* :mod:`cfrec.engines.backend`: one array backend over numpy (CPU) or torch (CUDA), the device
  choice, seeded torch generators and the scipy-to-torch CSR conversion;
* :mod:`cfrec.engines.matrix`: the interaction matrix (binary, weighted or confidence weights;
  BM25 / TF-IDF reweighting of logs);
* :mod:`cfrec.engines.driver`: the training driver (epochs, progress, history, early stopping,
  divergence) every iterative model runs through;
* :mod:`cfrec.engines.exact` and :mod:`cfrec.engines.cg`: the exact and conjugate-gradient
  half-steps of ALS and iALS;
* :mod:`cfrec.engines.gibbs`: the Gibbs sampler of Bayesian matrix factorisation;
* :mod:`cfrec.engines.negatives`: negative sampling for implicit-feedback training;
* :mod:`cfrec.engines.torch_loop`: the PyTorch minibatch loop and its row-sparse optimisers;
* :mod:`cfrec.engines.compiled`: compiled (numba) CPU kernels;
* :mod:`cfrec.engines.sparse_ease` (kernels in :mod:`cfrec.engines.compiled_ease`): EASE
  restricted to each item's nearest neighbours, the sparse solve for large catalogues.

Engines import nothing from :mod:`cfrec.models`; models import engines.
"""
