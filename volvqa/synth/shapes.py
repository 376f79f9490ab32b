"""Rasterising smooth shapes on a canonical RAS grid (world mm), inside boxes only."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from volvqa import labels as L

AIR_HU = -1000.0


@dataclass(frozen=True)
class Grid:
    """A canonical RAS grid with a diagonal affine: world = origin + index * spacing."""

    shape: tuple[int, int, int]
    spacing_mm: tuple[float, float, float]
    origin_mm: tuple[float, float, float]

    @property
    def affine(self) -> np.ndarray:
        a = np.diag([*self.spacing_mm, 1.0])
        a[:3, 3] = self.origin_mm
        return a

    def index_box(self, lo_mm, hi_mm) -> tuple[slice, slice, slice] | None:
        """Voxel slices covering the world box [lo, hi] (clipped; None if empty)."""
        out = []
        for ax in range(3):
            a = int(np.floor((lo_mm[ax] - self.origin_mm[ax]) / self.spacing_mm[ax]))
            b = int(np.ceil((hi_mm[ax] - self.origin_mm[ax]) / self.spacing_mm[ax])) + 1
            a, b = max(a, 0), min(b, self.shape[ax])
            if a >= b:
                return None
            out.append(slice(a, b))
        return tuple(out)  # type: ignore[return-value]

    def coords(self, box) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Open (broadcastable) world coordinates of the voxels in ``box``."""
        xs = [self.origin_mm[ax] + np.arange(box[ax].start, box[ax].stop) * self.spacing_mm[ax]
              for ax in range(3)]
        return xs[0][:, None, None], xs[1][None, :, None], xs[2][None, None, :]


def smooth_noise(rng: np.random.Generator, shape, waves: int = 6, max_cycles: float = 1.5) -> np.ndarray:
    """Smooth random field of about unit amplitude over ``shape``.

    A sum of ``waves`` plane waves with random directions, at most
    ``max_cycles`` cycles across the box, and random phases: smooth at every
    scale, evaluated by broadcasting (no interpolation pass).
    """
    axes = [np.linspace(0.0, 1.0, n)[tuple(slice(None) if i == a else None for i in range(3))]
            for a, n in enumerate(shape)]
    out = np.zeros(shape, np.float32)
    for _ in range(waves):
        d = rng.normal(size=3)
        d *= rng.uniform(0.5, max_cycles) * 2 * np.pi / np.linalg.norm(d)
        out += np.sin(d[0] * axes[0] + d[1] * axes[1] + d[2] * axes[2] + rng.uniform(0, 2 * np.pi))
    return out * np.float32(np.sqrt(2.0 / waves))


def ellipsoid(grid: Grid, center, semi_axes, *, rotation_z_deg: float = 0.0, deform: float = 0.0,
              rng: np.random.Generator | None = None):
    """(box, field) of a (deformed) ellipsoid: field <= 1 inside.

    ``deform`` scales a smooth random radial deformation (0.15 = +-15% radius).
    """
    c = np.asarray(center, float)
    r = np.asarray(semi_axes, float) * (1 + 2 * abs(deform))
    box = grid.index_box(c - r.max(), c + r.max())
    if box is None:
        return None, None
    x, y, z = grid.coords(box)
    t = np.deg2rad(rotation_z_deg)
    dx, dy, dz = x - c[0], y - c[1], z - c[2]
    u = dx * np.cos(t) + dy * np.sin(t)
    v = -dx * np.sin(t) + dy * np.cos(t)
    f = (u / semi_axes[0]) ** 2 + (v / semi_axes[1]) ** 2 + (dz / semi_axes[2]) ** 2
    if deform and rng is not None:
        f = f / (1.0 + deform * smooth_noise(rng, f.shape)) ** 2
    return box, f


def tube(grid: Grid, points_mm, radii_mm, *, flat_ends: bool = False, inner_mm: float = 0.0):
    """Boxes and masks of a tube around a polyline, one segment at a time.

    Yields (box, mask, t, inner) per segment: ``t`` the position along the
    segment (0..1), ``inner`` the voxels deeper than ``inner_mm`` below the
    tube's surface (for walls). The radius is interpolated along each
    segment; ``flat_ends`` cuts the end caps flat (cylinders). Work is
    limited to each segment's own box.
    """
    pts = np.asarray(points_mm, float)
    rad = np.broadcast_to(np.asarray(radii_mm, float), (len(pts),))
    for a, b, ra, rb in zip(pts[:-1], pts[1:], rad[:-1], rad[1:], strict=False):
        rmax = max(ra, rb)
        box = grid.index_box(np.minimum(a, b) - rmax, np.maximum(a, b) + rmax)
        if box is None:
            continue
        x, y, z = grid.coords(box)
        ab = b - a
        L2 = float(ab @ ab) or 1e-9
        t_raw = ((x - a[0]) * ab[0] + (y - a[1]) * ab[1] + (z - a[2]) * ab[2]) / L2
        t = np.clip(t_raw, 0.0, 1.0)
        d2 = (x - a[0] - t * ab[0]) ** 2 + (y - a[1] - t * ab[1]) ** 2 + (z - a[2] - t * ab[2]) ** 2
        r = ra + t * (rb - ra)
        mask = d2 <= r ** 2
        if flat_ends:
            mask &= (t_raw >= 0.0) & (t_raw <= 1.0)
        inner = d2 <= np.maximum(r - inner_mm, 0.0) ** 2 if inner_mm else mask
        yield box, mask, t, inner


class Painter:
    """Paints structures onto a label map and an HU image; a voxel keeps the first structure painted
    (``only_free``), so nothing overlaps."""

    def __init__(self, grid: Grid):
        self.grid = grid
        self.hu = np.full(grid.shape, AIR_HU, np.float32)
        self.lab = np.zeros(grid.shape, np.uint8)
        self.body = np.zeros(grid.shape, bool)

    def paint(self, box, mask, name: str | None, hu: float | np.ndarray, *, only_free=True,
              label: bool = True) -> np.ndarray:
        """Paint ``mask`` (within ``box``); returns the voxels actually painted."""
        if box is None:
            return np.zeros((0, 0, 0), bool)
        sub_lab = self.lab[box]
        m = mask & self.body[box]
        if only_free:
            m = m & (sub_lab == 0)
        if label and name is not None:
            sub_lab[m] = L.CANONICAL_IDS[name]
        sub_hu = self.hu[box]
        sub_hu[m] = hu if np.isscalar(hu) else np.broadcast_to(hu, m.shape)[m]
        return m
