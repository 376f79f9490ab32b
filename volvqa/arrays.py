"""Small array helpers that matter for speed on 512x512x300 volumes.

NIfTI data arrive in Fortran order (x fastest); numpy's boolean indexing
and ``np.bincount`` (which casts to intp) are slow on such arrays. These
helpers work in memory order instead.
"""
from __future__ import annotations

import numpy as np

_CHUNK = 1 << 20


def label_counts(labels: np.ndarray, minlength: int = 256) -> np.ndarray:
    """Voxel count per label value (like ``np.bincount``), in cache-sized chunks.

    On a 512x512x300 uint8 map this is about 8x faster than one
    ``np.bincount`` call, whose intp cast of the whole array dominates.
    """
    flat = labels.ravel(order="K")
    out = np.zeros(max(minlength, int(flat.max(initial=0)) + 1 if flat.dtype.itemsize > 1 else minlength),
                   np.int64)
    for i in range(0, flat.size, _CHUNK):
        c = np.bincount(flat[i:i + _CHUNK])
        out[: c.size] += c
    return out


def present_ids(labels: np.ndarray) -> list[int]:
    """The non-zero label values present in a label map (one chunked count, no sort)."""
    return [int(i) for i in np.flatnonzero(label_counts(labels)) if i]


def label_boxes(labels: np.ndarray) -> dict[int, tuple[slice, ...]]:
    """label value -> its bounding box (a tuple of slices), from one ``find_objects`` pass
    over the memory-order view."""
    from scipy import ndimage
    view = memory_order(labels)
    flip = view is not labels
    found = ndimage.find_objects(view)
    return {i + 1: (b[::-1] if flip else b) for i, b in enumerate(found) if b is not None}


def memory_order(a: np.ndarray) -> np.ndarray:
    """A view of ``a`` whose last axis is the fastest in memory (``a.T`` for Fortran order)."""
    if not a.flags.c_contiguous and a.flags.f_contiguous:
        return a.T
    return a


def gather(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``values[mask]`` in memory order (the order of the result is unspecified)."""
    if values.ndim > 1 and not values.flags.c_contiguous and values.strides[0] < values.strides[-1]:
        return values.T[mask.T]
    return values[mask]


def int16_stats(values: np.ndarray) -> tuple[int, float, float, float]:
    """(n, mean, population std, median) of int16 values from one histogram.

    Exact for integers, and several times faster than ``mean``/``std``/
    ``np.median`` on millions of voxels (no float copy, no partition).
    """
    v = np.asarray(values, dtype=np.int16)
    if v.size == 0:
        return 0, float("nan"), float("nan"), float("nan")
    offset = v.view(np.uint16) ^ np.uint16(0x8000)  # order-preserving: v + 32768
    hist = label_counts(offset, minlength=65536)
    nz = np.nonzero(hist)[0]
    h = hist[nz].astype(np.float64)
    x = nz.astype(np.float64) - 32768.0
    n = int(hist.sum())
    mean = float(h @ x) / n
    var = max(float(h @ (x - mean) ** 2) / n, 0.0)
    cum = np.cumsum(hist[nz])
    lo = x[np.searchsorted(cum, (n - 1) // 2, side="right")]
    hi = x[np.searchsorted(cum, n // 2, side="right")]
    return n, mean, var ** 0.5, float(lo + hi) / 2
