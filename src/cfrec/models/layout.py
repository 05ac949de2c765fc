"""What a saved model's arrays must look like, declared once per model and checked in one place.

Each model class declares the arrays it saves in ``state_layout`` (a ``{name: Array}`` table;
:func:`csr` declares the three arrays of a sparse matrix), and the loader checks a model folder
against the merged table before anything uses it, in two passes:

1. :func:`check_header`, on the safetensors header alone (before a byte of data is read): every
   tensor is declared (an unknown name is refused with its size), none is missing, dtypes are of
   the declared kind and shapes agree with the vocabularies (``"users"``, ``"items"``) and with
   each other (a free dimension such as ``"factors"`` must be the same everywhere it appears).
2. :func:`check_values`, on the arrays read: sparse matrices are well formed (row pointers start
   at 0, never decrease and end at the number of entries; column indices inside the shape), and
   float arrays hold finite numbers.

Both raise :class:`~cfrec.errors.ModelFileError` with the reason; the loader prefixes the file.
Nothing here relies on the recorded checksum: a file rewritten with a fresh checksum is checked
all the same.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from cfrec.errors import ModelFileError

Kind = Literal["float", "int", "indptr", "indices"]

#: Bytes of each safetensors dtype, and the kinds of array each may hold.
_DTYPES: dict[str, tuple[int, frozenset[str]]] = {
    "F16": (2, frozenset({"float"})), "BF16": (2, frozenset({"float"})),
    "F32": (4, frozenset({"float"})), "F64": (8, frozenset({"float"})),
    "I8": (1, frozenset({"int"})), "U8": (1, frozenset({"int"})), "BOOL": (1, frozenset({"int"})),
    "I16": (2, frozenset({"int"})), "U16": (2, frozenset({"int"})),
    "I32": (4, frozenset({"int", "indptr", "indices"})), "U32": (4, frozenset({"int"})),
    "I64": (8, frozenset({"int", "indptr", "indices"})), "U64": (8, frozenset({"int"})),
}
#: The largest safetensors header read (its JSON lists names, dtypes, shapes and offsets only).
MAX_HEADER_BYTES = 16 << 20


@dataclass(frozen=True)
class Array:
    """One declared array.

    ``shape`` holds whole numbers or dimension names: ``"users"`` and ``"items"`` (the
    vocabulary sizes), ``"NAME+1"`` (one more), or any other name, a free dimension that must
    take the same value in every array naming it. ``kind``: ``"float"`` (finite unless
    ``finite=False``), ``"int"``, or the parts of a sparse matrix (declare those with :func:`csr`).
    """

    shape: tuple[int | str, ...]
    kind: Kind = "float"
    optional: bool = False
    finite: bool = True
    csr: tuple[str, str, str] | None = None  # on row pointers: (matrix name, rows, cols)


def csr(name: str, rows: str, cols: str, *, data: bool = True, optional: bool = False) -> dict[str, Array]:
    """The arrays :func:`~cfrec.models.persistence.sparse_to_state` writes for a ``rows x cols``
    sparse matrix saved under ``name`` (``data=False``: a binary matrix stored without values)."""
    nnz = f"{name}.nnz"
    out = {f"{name}_indptr": Array((f"{rows}+1",), "indptr", optional, csr=(name, rows, cols)),
           f"{name}_indices": Array((nnz,), "indices", optional)}
    if data:
        out[f"{name}_data"] = Array((nnz,), "float", optional)
    return out


@dataclass
class Layout:
    """The arrays a model folder must hold: the declared ``arrays``, the known ``dims`` and
    whether names not declared are refused (``strict``: every model class that declares its own
    table; a model class of a user's own that declares nothing keeps working, checked on what its
    base classes declare)."""

    arrays: dict[str, Array]
    dims: dict[str, int] = field(default_factory=dict)
    strict: bool = True


@dataclass(frozen=True)
class TensorInfo:
    """One tensor as the safetensors header describes it."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int


def read_header(path: Path) -> dict[str, TensorInfo]:
    """The tensors a safetensors file declares, checked against the file's own size (offsets in
    range, sizes that match dtype and shape, no overlap) without reading the data."""
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise ModelFileError("truncated weights file (no safetensors header)")
        (n,) = struct.unpack("<Q", head)
        total = path.stat().st_size
        if n > min(MAX_HEADER_BYTES, total - 8):
            raise ModelFileError(f"safetensors header of {n:,} bytes (the file has {total:,}; at most "
                                 f"{MAX_HEADER_BYTES:,} read)")
        raw = fh.read(n)
    try:
        header = json.loads(check_json_depth(raw.decode("utf-8"), 4))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ModelFileError(f"unreadable safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError("unreadable safetensors header (not a JSON object)")
    data_len = total - 8 - n
    out: dict[str, TensorInfo] = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(info, dict) or info.get("dtype") not in _DTYPES:
            raise ModelFileError(f"tensor {name!r}: unknown dtype {_short(info)}")
        shape, offsets = info.get("shape"), info.get("data_offsets")
        if (not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise ModelFileError(f"tensor {name!r}: malformed shape or offsets {_short(info)}")
        begin, end = offsets
        nbytes = math.prod(shape) * _DTYPES[info["dtype"]][0]
        if not 0 <= begin <= end <= data_len or end - begin != nbytes:
            raise ModelFileError(f"tensor {name!r}: {nbytes:,} bytes of {info['dtype']} {tuple(shape)} do not "
                                 f"fit its offsets {offsets} in {data_len:,} bytes of data")
        out[name] = TensorInfo(info["dtype"], tuple(shape), nbytes)
        spans.append((begin, end))
    spans.sort()
    if any(b < e_prev for (_, e_prev), (b, _) in zip(spans, spans[1:], strict=False)):
        raise ModelFileError("tensors overlap in the weights file")
    return out


def check_header(tensors: Mapping[str, TensorInfo], layout: Layout) -> dict[str, int]:
    """Names, kinds and shapes of the tensors against the layout (no data read); returns every
    dimension's value (the known ones and the free ones as found)."""
    dims = dict(layout.dims)
    unknown = [n for n in tensors if n not in layout.arrays]
    if unknown and layout.strict:
        name = unknown[0]
        raise ModelFileError(f"unknown tensor {name!r} ({_size(tensors[name].nbytes)}"
                             f"{f' and {len(unknown) - 1} more' if len(unknown) > 1 else ''}); "
                             "this model saves no such array")
    for name, spec in layout.arrays.items():
        info = tensors.get(name)
        if info is None:
            if not spec.optional:
                raise ModelFileError(f"the array {name!r} is missing")
            continue
        if spec.kind not in _DTYPES[info.dtype][1]:
            raise ModelFileError(f"the array {name!r} has dtype {info.dtype}, expected {spec.kind} values")
        if spec.shape == () and info.shape == (1,):  # a scalar saved as one element (torch loads both)
            continue
        if len(info.shape) != len(spec.shape):
            raise ModelFileError(f"the array {name!r} has shape {info.shape}, expected "
                                 f"{len(spec.shape)} dimension(s) {_spelled(spec.shape)}")
        for got, want in zip(info.shape, spec.shape, strict=True):
            _bind(name, info.shape, spec.shape, got, want, dims)
    return dims


def check_values(arrays: Mapping[str, np.ndarray], layout: Layout, dims: Mapping[str, int]) -> None:
    """Sparse matrices well formed and float arrays finite (arrays already passed
    :func:`check_header`, which gave ``dims``)."""
    for name, spec in layout.arrays.items():
        value = arrays.get(name)
        if value is None:
            continue
        if spec.kind == "float" and spec.finite and value.size and not bool(np.isfinite(value).all()):
            bad = int(np.size(value) - np.count_nonzero(np.isfinite(value)))
            raise ModelFileError(f"the array {name!r} holds {bad:,} NaN or infinite value(s)")
        if spec.csr is not None:
            matrix, rows, cols = spec.csr
            _check_csr(matrix, value, arrays.get(f"{matrix}_indices"), dims[rows], dims[cols])


def _check_csr(name: str, indptr: np.ndarray, indices: np.ndarray | None, n_rows: int, n_cols: int) -> None:
    if indices is None:
        raise ModelFileError(f"the sparse matrix {name!r} lacks its indices")
    if indptr.shape != (n_rows + 1,):
        raise ModelFileError(f"the sparse matrix {name!r} has {len(indptr) - 1} rows, expected {n_rows}")
    if int(indptr[0]) != 0 or int(indptr[-1]) != len(indices):
        raise ModelFileError(f"the sparse matrix {name!r}: row pointers run from {int(indptr[0])} to "
                             f"{int(indptr[-1])}, expected 0 to its {len(indices):,} entries")
    if bool(np.any(indptr[1:] < indptr[:-1])):
        raise ModelFileError(f"the sparse matrix {name!r}: row pointers decrease")
    if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n_cols):
        raise ModelFileError(f"the sparse matrix {name!r}: column index {int(indices.min())}..."
                             f"{int(indices.max())} outside 0..{n_cols - 1}")


def _bind(name: str, got_shape: tuple[int, ...], spec_shape: tuple[int | str, ...], got: int,
          want: int | str, dims: dict[str, int]) -> None:
    if isinstance(want, int):
        expected: int | None = want
    elif want.endswith("+1"):
        base = dims.get(want[:-2])
        expected = None if base is None else base + 1
        if base is None:
            dims[want[:-2]] = got - 1
    else:
        expected = dims.get(want)
        if expected is None:
            dims[want] = got
    if expected is not None and got != expected:
        where = ", ".join(f"{k}={v:,}" for k, v in dims.items() if isinstance(k, str) and "." not in k)
        raise ModelFileError(f"the array {name!r} has shape {got_shape}, expected {_spelled(spec_shape)} "
                             f"({where})")


def _spelled(shape: tuple[int | str, ...]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _size(nbytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if nbytes >= scale:
            return f"{nbytes / scale:.1f} {unit}"
    return f"{nbytes} bytes"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_json_depth(text: str, max_depth: int) -> str:
    """``text`` unchanged when its JSON nests at most ``max_depth`` arrays/objects deep; else a
    :class:`ModelFileError` (checked on the raw text, before the parser could recurse)."""
    import re

    bare = re.sub(r'"[^"\\]*(?:\\.[^"\\]*)*"', "", text)  # strings may hold brackets
    codes = np.frombuffer(bare.encode("utf-8", "surrogatepass"), dtype=np.uint8)
    marks = codes[np.flatnonzero((codes == 91) | (codes == 93) | (codes == 123) | (codes == 125))]
    if len(marks):
        depth = np.cumsum(np.where((marks == 91) | (marks == 123), 1, -1), dtype=np.int64)
        deepest = int(depth.max())
        if deepest > max_depth:
            raise ModelFileError(f"JSON nested {deepest:,} levels deep (at most {max_depth} allowed)")
    return text


def module_layout(build: Any, prefix: str = "model.net.") -> dict[str, Array]:
    """The arrays of a torch network as :func:`~cfrec.engines.torch_loop.module_arrays` saves
    them, from ``build()`` run on torch's ``meta`` device (shapes only: no memory, however large
    the hyperparameters say it is)."""
    import torch

    with torch.device("meta"):
        net = build()
    return {f"{prefix}{k}": Array(tuple(int(d) for d in v.shape)) for k, v in net.state_dict().items()}
