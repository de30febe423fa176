"""Read DLMC ``.smtx`` matrices (Deep Learning Matrix Collection).

Format: a header line ``M, K, nnz``, a line of M + 1 row offsets, a line of nnz column
indices (patterns only: values are drawn by the caller). ``.smtx.gz`` is read transparently.
"""
from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .weights import SparseWeight, from_csr_arrays


@dataclass(frozen=True)
class SmtxPattern:
    M: int
    K: int
    indptr: np.ndarray
    indices: np.ndarray

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    def with_values(self, seed: int = 0, dtype: str = "float32") -> SparseWeight:
        """The pattern with values from a seeded standard normal distribution."""
        vals = np.random.default_rng(seed).standard_normal(self.nnz).astype(np.float32)
        if dtype != "float32":
            import torch
            from .weights import TORCH_DTYPES
            vals = torch.from_numpy(vals).to(TORCH_DTYPES[dtype]).double().numpy()
        return from_csr_arrays(self.M, self.K, self.indptr, self.indices, vals, dtype)


def read_smtx(path) -> SmtxPattern:
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt") as f:
        header = f.readline()
        try:
            M, K, nnz = (int(t) for t in header.replace(",", " ").split())
        except ValueError:
            raise ValueError(f"{path}: bad header {header.strip()!r}; expected 'M, K, nnz'") from None
        indptr = np.array(f.readline().split(), np.int64)
        indices = np.array(f.readline().split(), np.int64) if nnz else np.zeros(0, np.int64)
    if indptr.shape != (M + 1,) or indptr[-1] != nnz or indices.shape != (nnz,):
        raise ValueError(f"{path}: expected {M + 1} row offsets and {nnz} column indices, got "
                         f"{indptr.shape[0]} and {indices.shape[0]}")
    if nnz and (indices.min() < 0 or indices.max() >= K):
        raise ValueError(f"{path}: column index out of range [0, {K})")
    return SmtxPattern(M, K, indptr, indices)


def write_smtx(path, M: int, K: int, indptr, indices):
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt") as f:
        f.write(f"{M}, {K}, {len(indices)}\n")
        f.write(" ".join(map(str, indptr)) + "\n")
        f.write(" ".join(map(str, indices)) + "\n")
