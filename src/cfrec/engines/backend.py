"""One array backend for the numeric engines: the same arithmetic over numpy arrays (CPU) or torch
tensors (CUDA, or a CPU tensor where a test asks for one).

The solvers (:mod:`cfrec.engines.exact`, :mod:`cfrec.engines.cg`, :mod:`cfrec.engines.gibbs`) are
written once against :class:`ArrayBackend` and mix its arrays with plain operators (``+``, ``*``,
``@``, slicing), which numpy arrays and torch tensors share. :func:`array_backend` picks
:class:`NumpyArrays` for the CPU and :class:`TorchArrays` for any other device; the device itself
comes from :func:`resolve_device`. Reductions that decide a result (objectives, residual norms)
accumulate in float64 on both.
"""

from __future__ import annotations

import warnings
from typing import Any, Protocol

import numpy as np
import scipy.sparse as sp
import torch

from cfrec.errors import CfrecError

#: Elements per chunk of :meth:`NumpyArrays.sqsum64` (float32 dot products per chunk).
_SQSUM_CHUNK = 65536


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else is checked."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CfrecError(f"unknown device {device!r}; use 'cpu', 'cuda', 'cuda:N' or 'auto' ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CfrecError(f"device {device!r} requested but CUDA is not available on this machine")
    return dev


def make_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """A torch generator seeded from ``seed`` (or from fresh entropy when ``None``)."""
    gen = torch.Generator(device=device)
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        assert isinstance(entropy, int)  # a SeedSequence built without entropy draws an int
        seed = entropy % (2**63)
    gen.manual_seed(int(seed))
    return gen


def torch_csr(ptr: Any, idx: Any, values: Any, shape: tuple[int, int],
              device: torch.device | str | None = None) -> torch.Tensor:
    """A torch CSR matrix from CSR arrays already known valid (numpy arrays or tensors).

    Numpy inputs become tensors on ``device`` (values float32; row pointers and indices keep their
    integer type, both int64 when the two differ); tensors are used as they are. No invariant
    check, and torch's beta-feature warning is silenced.
    """
    if isinstance(ptr, np.ndarray) or isinstance(idx, np.ndarray):
        ptr, idx = np.asarray(ptr), np.asarray(idx)
        if ptr.dtype != idx.dtype:
            ptr, idx = ptr.astype(np.int64), idx.astype(np.int64)
        ptr, idx = torch.as_tensor(ptr, device=device), torch.as_tensor(idx, device=device)
    if isinstance(values, np.ndarray):
        values = torch.as_tensor(np.asarray(values, dtype=np.float32), device=device)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Sparse CSR tensor support is in beta.*",
                                category=UserWarning)
        return torch.sparse_csr_tensor(ptr, idx, values, shape, check_invariants=False)


def to_numpy(a: np.ndarray | torch.Tensor) -> np.ndarray:
    """A C-ordered float32 numpy copy of a numpy array or a (device) tensor."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.array(a, dtype=np.float32, order="C")


class SparseOperator(Protocol):
    """A fixed sparse matrix ``A`` (rows x cols) on a backend: ``apply`` maps (cols, c) blocks to
    ``A @ v`` (rows, c), ``adjoint`` maps (rows, c) blocks to ``A' @ m`` (cols, c)."""

    def apply(self, v: Any) -> Any: ...

    def adjoint(self, m: Any) -> Any: ...


class ArrayBackend(Protocol):
    """The arithmetic the engines need over one array type (float32 values, integer indices).

    Arrays are held as ``Any``: the solvers combine them with operators numpy and torch share.
    """

    device: torch.device

    def asarray(self, a: np.ndarray, dtype: Any = np.float32) -> Any:
        """``a`` as this backend's array (float32, or int64 for an integer ``dtype``)."""

    def index(self, a: np.ndarray) -> Any:
        """Integer positions usable to index this backend's arrays."""

    def to_numpy(self, a: Any) -> np.ndarray:
        """A C-ordered float32 numpy copy."""

    def zeros(self, shape: int | tuple[int, ...]) -> Any: ...

    def ones_like(self, a: Any) -> Any: ...

    def copy(self, a: Any) -> Any:
        """A float32 copy that owns its memory."""

    def randn(self, *shape: int) -> Any:
        """Standard normal float32 draws from the backend's seeded stream."""

    def sum64(self, a: Any) -> float:
        """``sum(a)`` accumulated in float64."""

    def dot64(self, a: Any, b: Any) -> float:
        """``sum(a * b)`` of two vectors, accumulated in float64."""

    def sqsum64(self, a: Any) -> float:
        """``sum(a^2)`` of a long vector."""

    def rowdot(self, a: Any, b: Any) -> Any:
        """``(a * b).sum(1)``."""

    def ratio(self, num: Any, den: Any) -> Any:
        """``num / den`` where ``den > 0``, else 0."""

    def gram(self, f: Any) -> Any:
        """``f' f`` computed in float64, returned float32."""

    def with_ones(self, z: Any) -> Any:
        """A copy of ``z`` whose first column is 1 (the constant column of augmented factors)."""

    def row_moments(self, m: Any) -> tuple[np.ndarray, np.ndarray]:
        """Per row of ``m``: the mean and the centred sum of squares (float64 numpy)."""

    def col_sqsum(self, m: Any) -> np.ndarray:
        """Per column of ``m``: the sum of squares (float64 numpy)."""

    def transpose(self, m: Any) -> Any:
        """A contiguous transpose."""

    def vstack(self, rows: list[Any]) -> Any: ...

    def triu_indices(self, d: int) -> tuple[Any, Any]: ...

    def arange(self, n: int) -> Any: ...

    def csr(self, ptr: np.ndarray, idx: np.ndarray, values: Any, shape: tuple[int, int]) -> Any:
        """A sparse CSR matrix (``@`` with dense blocks) from valid CSR arrays."""

    def sparse(self, mat: sp.csr_array) -> SparseOperator:
        """A fixed scipy CSR matrix as an operator on this backend."""

    def spd_solve(self, a: Any, rhs: Any, error: str) -> Any:
        """Solve a batch of symmetric positive definite systems ``a x = rhs`` ((n, d, d), (n, d));
        ``error`` is the message where a system is found not positive definite."""


class NumpyArrays:
    """:class:`ArrayBackend` on the CPU: numpy, scipy.sparse and LAPACK.

    On CPU this beats torch's sparse products and batched Cholesky (per-matrix overhead) by 3-5x
    for the small systems of ALS, and single-threaded numpy elementwise work does not stall when
    the cores are shared. The systems solved are symmetric positive definite, so LAPACK's batched
    LU solver is as accurate as Cholesky there and faster for many tiny systems.
    """

    device = torch.device("cpu")

    def __init__(self, seed: np.random.SeedSequence | int | None = None) -> None:
        self._seed = seed
        self._rng: np.random.Generator | None = None

    def asarray(self, a: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=dtype)

    def index(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return a if a.dtype.kind in "iu" else a.astype(np.intp)

    def to_numpy(self, a: np.ndarray) -> np.ndarray:
        return to_numpy(a)

    def zeros(self, shape: int | tuple[int, ...]) -> np.ndarray:
        return np.zeros(shape, dtype=np.float32)

    def ones_like(self, a: np.ndarray) -> np.ndarray:
        return np.ones_like(a)

    def copy(self, a: np.ndarray) -> np.ndarray:
        return np.array(a, dtype=np.float32, order="C")

    def randn(self, *shape: int) -> np.ndarray:
        if self._rng is None:
            self._rng = np.random.default_rng(self._seed)
        return self._rng.standard_normal(shape, dtype=np.float32)

    def sum64(self, a: np.ndarray) -> float:
        return float(np.sum(a, dtype=np.float64))

    def dot64(self, a: np.ndarray, b: np.ndarray) -> float:
        return float(np.einsum("i,i->", a, b, dtype=np.float64))

    def sqsum64(self, a: np.ndarray) -> float:
        chunks = np.array_split(a, max(1, len(a) // _SQSUM_CHUNK))
        return float(sum(float(np.dot(c, c)) for c in chunks))

    def rowdot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", a, b)

    def ratio(self, num: np.ndarray, den: np.ndarray) -> np.ndarray:
        return np.divide(num, den, out=np.zeros_like(num), where=den > 0)

    def gram(self, f: np.ndarray) -> np.ndarray:
        f64 = f.astype(np.float64)
        return (f64.T @ f64).astype(np.float32)

    def with_ones(self, z: np.ndarray) -> np.ndarray:
        out = self.copy(z)
        out[:, 0] = 1.0
        return out

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

    def triu_indices(self, d: int) -> tuple[np.ndarray, np.ndarray]:
        r, c = np.triu_indices(d)
        return r, c

    def arange(self, n: int) -> np.ndarray:
        return np.arange(n)

    def csr(self, ptr: np.ndarray, idx: np.ndarray, values: np.ndarray, shape: tuple[int, int]) -> sp.csr_array:
        return sp.csr_array((values, idx, ptr), shape=shape)

    def sparse(self, mat: sp.csr_array) -> ScipyOperator:
        return ScipyOperator(mat)

    def spd_solve(self, a: np.ndarray, rhs: np.ndarray, error: str) -> np.ndarray:
        return np.linalg.solve(a, rhs[:, :, None])[:, :, 0]


class ScipyOperator:
    """A fixed sparse matrix and its transpose, both CSR (scipy's fast multi-column kernel)."""

    def __init__(self, mat: sp.csr_array) -> None:
        self.mat, self.mat_t = mat, mat.T.tocsr()

    def apply(self, v: np.ndarray) -> np.ndarray:
        return np.asarray(self.mat @ v)

    def adjoint(self, m: np.ndarray) -> np.ndarray:
        return np.asarray(self.mat_t @ m)


class TorchArrays:
    """:class:`ArrayBackend` with torch on ``device``: sparse CSR products and batched Cholesky."""

    def __init__(self, device: torch.device, seed: np.random.SeedSequence | None = None) -> None:
        self.device = device
        self._seed = seed
        self._gen: torch.Generator | None = None

    def asarray(self, a: np.ndarray, dtype: Any = np.float32) -> torch.Tensor:
        tdtype = torch.int64 if np.dtype(dtype).kind in "iu" else torch.float32
        return torch.as_tensor(np.asarray(a, dtype=dtype), dtype=tdtype, device=self.device)

    def index(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.int64), device=self.device)

    def to_numpy(self, a: torch.Tensor) -> np.ndarray:
        return to_numpy(a)

    def zeros(self, shape: int | tuple[int, ...]) -> torch.Tensor:
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def ones_like(self, a: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(a)

    def copy(self, a: torch.Tensor) -> torch.Tensor:
        return a.clone()

    def randn(self, *shape: int) -> torch.Tensor:
        if self._gen is None:
            seed = self._seed if self._seed is not None else np.random.SeedSequence()
            self._gen = torch.Generator(device=self.device)
            self._gen.manual_seed(int(seed.generate_state(1, np.uint64)[0] >> np.uint64(1)))
        return torch.randn(shape, generator=self._gen, device=self.device)

    def sum64(self, a: torch.Tensor) -> float:
        return float(a.sum(dtype=torch.float64))

    def dot64(self, a: torch.Tensor, b: torch.Tensor) -> float:
        return float(torch.dot(a.double(), b.double()))

    def sqsum64(self, a: torch.Tensor) -> float:
        d = a.double()
        return float(torch.dot(d, d))

    def rowdot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * b).sum(1)

    def ratio(self, num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
        return torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))

    def gram(self, f: torch.Tensor) -> torch.Tensor:
        return (f.double().T @ f.double()).float()

    def with_ones(self, z: torch.Tensor) -> torch.Tensor:
        out = self.copy(z)
        out[:, 0] = 1.0
        return out

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

    def triu_indices(self, d: int) -> tuple[torch.Tensor, torch.Tensor]:
        tri = torch.triu_indices(d, d, device=self.device)
        return tri[0], tri[1]

    def arange(self, n: int) -> torch.Tensor:
        return torch.arange(n, device=self.device)

    def csr(self, ptr: np.ndarray, idx: np.ndarray, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        return torch_csr(torch.as_tensor(ptr, device=self.device), torch.as_tensor(idx, device=self.device),
                         values.contiguous(), shape)

    def sparse(self, mat: sp.csr_array) -> TorchOperator:
        return TorchOperator(mat, self.device)

    def spd_solve(self, a: torch.Tensor, rhs: torch.Tensor, error: str) -> torch.Tensor:
        chol, info = torch.linalg.cholesky_ex(a)
        if bool((info != 0).any()):
            raise CfrecError(error)
        return torch.cholesky_solve(rhs[:, :, None], chol)[:, :, 0]


class TorchOperator:
    """A fixed sparse matrix and its transpose as torch CSR tensors on a device."""

    def __init__(self, mat: sp.csr_array, device: torch.device) -> None:
        mat_t = mat.T.tocsr()
        self.mat = torch_csr(mat.indptr.astype(np.int64), mat.indices.astype(np.int64), mat.data, mat.shape, device)
        self.mat_t = torch_csr(mat_t.indptr.astype(np.int64), mat_t.indices.astype(np.int64), mat_t.data,
                               mat_t.shape, device)

    def apply(self, v: torch.Tensor) -> torch.Tensor:
        return self.mat @ v

    def adjoint(self, m: torch.Tensor) -> torch.Tensor:
        return self.mat_t @ m


def array_backend(device: torch.device, seed: np.random.SeedSequence | None = None) -> NumpyArrays | TorchArrays:
    """:class:`NumpyArrays` on the CPU, :class:`TorchArrays` on any other device; ``seed`` seeds
    :meth:`ArrayBackend.randn`."""
    if device.type == "cpu":
        return NumpyArrays(seed)
    return TorchArrays(device, seed)
