"""What the encoder3d image encoder is pretrained to see: per-token anatomy targets from a case's masks,
and synthetic liver lesions painted on the training grid."""
from __future__ import annotations

import math

import numpy as np

from volvqa.models.encoder3d import ANATOMY_CHANNELS

# A lesion channel's target is its share of the block over this, capped at 1:
# half the cells a lesion touches hold under 5% of it, invisible on the grid
# (a detector given the liver mask finds cells holding over 5% against cells
# holding none with AUC 0.98 on the demo grid), and marking every touched
# cell 1 taught the encoder to hedge.
LESION_FULL_COVERAGE = 0.05


def anatomy_targets(labelmap, token_grid: tuple[int, int, int]) -> np.ndarray:
    """(tokens, channels) float32 targets for ``ANATOMY_CHANNELS`` in the ViT's
    token order (z, y, x): the fraction of each token's block covered by an
    organ or part, and for lesions (per family, per part, per kidney side)
    the fraction covered over ``LESION_FULL_COVERAGE``, capped at 1. The
    volume is cut into token blocks the way the encoder's resize maps it: block k along an axis of n voxels holds
    voxels i with floor(i * tokens / n) == k."""
    from volvqa.labels import LESION_ORGAN, is_lesion
    from volvqa.models.encoder3d import ANATOMY_CHANNELS, ANATOMY_LESION_FAMILIES, ANATOMY_ORGANS, ANATOMY_PARTS
    arr = np.asarray(labelmap.array)
    nx, ny, nz = arr.shape
    tz, ty, tx = token_grid
    bx = (np.arange(nx) * tx // nx).astype(np.int64)
    by = (np.arange(ny) * ty // ny).astype(np.int64)
    bz = (np.arange(nz) * tz // nz).astype(np.int64)
    block = (bz[None, None, :] * (ty * tx) + by[None, :, None] * tx + bx[:, None, None]).ravel()
    n_tok = tz * ty * tx
    size = np.bincount(block, minlength=n_tok).astype(np.float32)
    col = {c: i for i, c in enumerate(ANATOMY_CHANNELS)}
    out = np.zeros((n_tok, len(ANATOMY_CHANNELS)), np.float32)
    flat = arr.ravel()
    max_id = int(flat.max()) if flat.size else 0

    def lut(mapping: dict[int, int]) -> np.ndarray:
        t = np.full(max(max_id, max(mapping, default=0)) + 1, -1, np.int64)
        for k, v in mapping.items():
            t[k] = v
        return t

    organ_ch = lut({i: col[f"organ:{n}"] for i, n in labelmap.labels.items() if n in ANATOMY_ORGANS})
    ch = organ_ch[flat]
    keep = ch >= 0
    counts = np.bincount(block[keep] * out.shape[1] + ch[keep], minlength=out.size).reshape(out.shape)
    out += counts / size[:, None]

    def family(name: str) -> str:
        f = LESION_ORGAN.get(name, "other")
        return f if f in ANATOMY_LESION_FAMILIES else "other"

    lesion_ch = lut({i: col[f"lesion:{family(n)}"] for i, n in labelmap.labels.items() if is_lesion(n)})
    lesion = np.nonzero(lesion_ch[flat] >= 0)[0]       # flat indices of lesion voxels (few)
    les_ch, les_block = lesion_ch[flat[lesion]], block[lesion]
    lesion_count = np.zeros_like(out)
    np.add.at(lesion_count, (les_block, les_ch), 1.0)
    if labelmap.parts is not None:
        parts = np.asarray(labelmap.parts).ravel()
        pmax = int(parts.max()) if parts.size else 0
        part_ch = np.full(max(pmax, max(labelmap.part_labels, default=0)) + 1, -1, np.int64)
        for i, n in labelmap.part_labels.items():
            if n in ANATOMY_PARTS:
                part_ch[i] = col[f"part:{n}"]
        ch = part_ch[parts]
        keep = ch >= 0
        counts = np.bincount(block[keep] * out.shape[1] + ch[keep], minlength=out.size).reshape(out.shape)
        out += counts / size[:, None]
        ch = part_ch[parts[lesion]]
        keep = ch >= 0
        np.add.at(lesion_count, (les_block[keep], ch[keep] - col["part:liver_segment_1"] + col["lesion@liver_segment_1"]),
                  1.0)
    kidney_lesion = les_ch == col["lesion:kidney"]
    if kidney_lesion.any():
        # A kidney lesion voxel belongs to the kidney whose centre (x) is nearer.
        x_of = lesion[kidney_lesion] // (ny * nz)
        centre_x = {}
        for side in ("left", "right"):
            i = labelmap.id_of(f"kidney_{side}")
            xs = np.nonzero(np.any(arr == i, axis=(1, 2)))[0] if i is not None else []
            if len(xs):
                counts = np.count_nonzero(arr[xs[0]:xs[-1] + 1] == i, axis=(1, 2))
                centre_x[side] = float((np.arange(xs[0], xs[-1] + 1) * counts).sum() / counts.sum())
        if centre_x:
            names = sorted(centre_x)
            nearest = np.argmin(np.abs(x_of[:, None] - np.array([centre_x[n] for n in names])[None]), axis=1)
            for j, side in enumerate(names):
                np.add.at(lesion_count, (les_block[kidney_lesion][nearest == j], col[f"lesion@kidney_{side}"]), 1.0)
    out += np.minimum(lesion_count / size[:, None] / LESION_FULL_COVERAGE, 1.0)
    return out


def with_synthetic_lesions(x, y, cfg, cell_grid, gen):
    """Pretraining only: 0-3 extra liver lesions per volume, painted on the
    grid (ellipsoids 1-3 cells across, -0.13 to -0.04 or +0.06 to +0.1 of
    the window, soft 1-voxel edge) with their cells marked in the targets ``y``:
    27 training cases hold too few real lesions to learn to find them."""
    import torch
    col = {c: i for i, c in enumerate(ANATOMY_CHANNELS)}
    cz, cy, cx = cell_grid
    gz, gy, gx = cfg.grid
    kz, ky, kx = gz // cz, gy // cy, gx // cx
    liver_c = col["organ:liver"]
    for b in range(x.shape[0]):
        inside = torch.nonzero(y[b, :, liver_c] > 0.8).flatten()
        for _ in range(int(torch.randint(0, 4, (1,), generator=gen)) if len(inside) else 0):
            cell = int(inside[torch.randint(len(inside), (1,), generator=gen)])
            iz, iy, ix = cell // (cy * cx), (cell // cx) % cy, cell % cx
            centre = torch.tensor([(iz + 0.5) * kz, (iy + 0.5) * ky, (ix + 0.5) * kx])
            radius = torch.tensor([kz, ky, kx]) * (0.5 + torch.rand(3, generator=gen) * 1.0)
            _paint_grid_lesion(x[b, 0], y[b], centre, radius, cfg, (kz, ky, kx), col, gen)
    return x, y


def _paint_grid_lesion(img, yb, centre, radius, cfg, cell, col, gen) -> None:
    import torch
    import torch.nn.functional as F
    les_c, seg0, les_seg0 = col["lesion:liver"], col["part:liver_segment_1"], col["lesion@liver_segment_1"]
    # The weight is 0 beyond d = 1 + 0.5 / min radius: only the box around that is computed.
    reach = radius * (1.0 + 0.5 / radius.min())
    box = tuple(slice(max(int(math.floor(c - r)), 0), min(int(math.ceil(c + r)) + 1, n))
                for c, r, n in zip(centre.tolist(), reach.tolist(), cfg.grid, strict=False))
    zz, yy, xx = torch.meshgrid(*[torch.arange(sl.start, sl.stop) for sl in box], indexing="ij")
    d = torch.sqrt(((zz - centre[0]) / radius[0]) ** 2 + ((yy - centre[1]) / radius[1]) ** 2
                   + ((xx - centre[2]) / radius[2]) ** 2)
    weight = torch.clamp((1.0 - d) * radius.min() + 0.5, 0.0, 1.0)
    hyper = float(torch.rand(1, generator=gen)) < 0.15
    contrast = (0.06 + 0.04 * float(torch.rand(1, generator=gen))) if hyper else \
        -(0.04 + 0.09 * float(torch.rand(1, generator=gen)))
    img[box] += contrast * weight
    inside_lesion = torch.zeros(tuple(cfg.grid))
    inside_lesion[box] = (weight > 0.5).float()
    cover = F.avg_pool3d(inside_lesion[None, None], cell)[0, 0].flatten()
    cover = torch.clamp(cover / LESION_FULL_COVERAGE, max=1.0)
    yb[:, les_c] = torch.maximum(yb[:, les_c], cover)
    seg = yb[:, seg0:seg0 + 8].argmax(1)
    rows = torch.nonzero((cover > 0) & (yb[:, seg0:seg0 + 8].amax(1) > 0)).flatten()
    yb[rows, les_seg0 + seg[rows]] = torch.maximum(yb[rows, les_seg0 + seg[rows]], cover[rows])
