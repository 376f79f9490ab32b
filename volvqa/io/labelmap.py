"""``load_labelmap``: one label map or a folder of per-structure masks -> LabelMap
on a Volume's grid, with canonical ids and names.

Masks on another grid or in another voxel order are mapped through world
coordinates (nearest neighbour), never by array index. When the two grids
differ only by axis permutations, flips and whole-voxel shifts (the usual
case: same scan, other storage order or a crop), the mapping is an exact
index remap; otherwise ``scipy.ndimage.affine_transform`` with order 0.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from volvqa import labels as L
from volvqa.arrays import label_counts
from volvqa.errors import VolvqaInputError
from volvqa.io import nifti
from volvqa.io.validate import check_label_values, max_voxels_from_env
from volvqa.records import LabelMap, Volume

MASK_SUFFIXES = (".nii.gz", ".nii")


def mask_stem(p: Path) -> str:
    n = p.name
    for suf in MASK_SUFFIXES:
        if n.endswith(suf):
            return n[: -len(suf)]
    return p.stem


def world_to_index(src_affine: np.ndarray, ref_affine: np.ndarray) -> np.ndarray:
    """4x4 matrix taking reference voxel indices to source voxel indices."""
    return np.linalg.inv(src_affine) @ ref_affine


def _as_permutation(m: np.ndarray, tol: float = 1e-3):
    """(perm, signs, offsets) if ``m`` is a signed permutation with integer shifts."""
    lin = m[:3, :3]
    r = np.rint(lin)
    if not np.allclose(lin, r, atol=tol) or not np.all(np.abs(r).sum(axis=0) == 1) \
            or not np.all(np.abs(r).sum(axis=1) == 1):
        return None
    off = m[:3, 3]
    if not np.allclose(off, np.rint(off), atol=tol):
        return None
    perm = [int(np.nonzero(r[:, j])[0][0]) for j in range(3)]  # source axis for each ref axis
    signs = [int(r[perm[j], j]) for j in range(3)]
    offsets = [int(np.rint(off[perm[j]])) for j in range(3)]
    return perm, signs, offsets


def resample_nearest(src: np.ndarray, src_affine: np.ndarray, ref_shape: Sequence[int],
                     ref_affine: np.ndarray) -> np.ndarray:
    """Labels of ``src`` at the world position of each voxel of the reference grid.

    Voxels of the reference grid outside ``src`` get 0.
    """
    m = world_to_index(src_affine, ref_affine)
    ref_shape = tuple(int(s) for s in ref_shape)
    exact = _as_permutation(m)
    if exact is not None:
        perm, signs, offsets = exact
        if perm == [0, 1, 2] and signs == [1, 1, 1] and offsets == [0, 0, 0] and src.shape == ref_shape:
            return src  # the same grid: nothing to move
        src_t = np.transpose(src, perm)
        out = np.zeros(ref_shape, dtype=src.dtype)
        idx, ok = [], []
        for j in range(3):
            i = signs[j] * np.arange(ref_shape[j]) + offsets[j]
            valid = (i >= 0) & (i < src_t.shape[j])
            idx.append(i[valid])
            ok.append(np.nonzero(valid)[0])
        if all(len(v) for v in ok):
            sl_out = tuple(slice(v[0], v[-1] + 1) for v in ok)
            sl_src = []
            for j in range(3):
                a, b = idx[j][0], idx[j][-1]
                sl_src.append(slice(a, b + 1) if signs[j] > 0 else slice(a, (b - 1) if b > 0 else None, -1))
            out[sl_out] = src_t[tuple(sl_src)]
        return out
    return ndimage.affine_transform(src, m[:3, :3], offset=m[:3, 3], output_shape=ref_shape,
                                    order=0, mode="grid-constant", cval=0, prefilter=False)


def _grids_overlap(src_shape, src_affine, ref_shape, ref_affine) -> bool:
    """Whether the world boxes of the two grids intersect."""
    def box(shape, aff):
        c = np.array([[i, j, k, 1] for i in (-.5, shape[0] - .5) for j in (-.5, shape[1] - .5)
                      for k in (-.5, shape[2] - .5)]).T
        w = (aff @ c)[:3]
        return w.min(axis=1), w.max(axis=1)
    a0, a1 = box(src_shape, src_affine)
    b0, b1 = box(ref_shape, ref_affine)
    return bool(np.all(a0 <= b1) and np.all(b0 <= a1))


def _read_labels(path: Path, max_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    data, affine, _hdr = nifti.read_nifti(path, max_voxels=max_voxels)
    return check_label_values(path, data), affine


def _on_reference(path: Path, arr: np.ndarray, affine: np.ndarray, reference: Volume) -> np.ndarray:
    if not _grids_overlap(arr.shape, affine, reference.shape, reference.affine):
        raise VolvqaInputError(path, "mask does not overlap the volume in world space "
                               "(check that it belongs to this scan and its affine)")
    out = resample_nearest(arr, affine, reference.shape, reference.affine)
    if out is not arr and arr.any() and not out.any():
        raise VolvqaInputError(path, "no labelled voxel of the mask falls inside the volume "
                               "in world space (check that it belongs to this scan)")
    return out


def body_midline_x(reference: Volume, step: int = 4) -> float:
    """World x (mm) of the patient's midline: the centroid of the body
    (voxels above -500 HU, sampled every ``step`` voxels: a midline needs no
    more), or the field of view's centre when there is none."""
    body = reference.array[::step, ::step, ::step] > -500
    total = int(body.sum())
    if total == 0:
        centre = (np.array(reference.shape, float) - 1) / 2
    else:
        centre = np.array([(np.arange(body.shape[a]) * body.sum(axis=tuple(b for b in range(3) if b != a))).sum()
                           for a in range(3)], float) * step / total
    return float((reference.affine[:3, :3] @ centre + reference.affine[:3, 3])[0])


def split_by_side(kidney: np.ndarray, reference: Volume, offset=(0, 0, 0)) -> tuple[np.ndarray, np.ndarray]:
    """Split a mask of a paired organ (both kidneys) into (left, right) by the side of each component.

    Components whose centroid lies at smaller world x than the midline go
    to the left (RAS: x grows toward the patient's right). The midline is
    the x midpoint of the two largest components when both are of kidney
    size (the smaller at least a third of the larger) and lie on either side
    of the body's midline; else the body's midline itself (one kidney, or a
    stray fragment that must not move the midline).
    """
    lab, n = ndimage.label(kidney, structure=np.ones((3, 3, 3)))
    if n == 0:
        return kidney & False, kidney & False
    sizes = ndimage.sum_labels(kidney, lab, index=np.arange(1, n + 1))
    cents = np.array(ndimage.center_of_mass(kidney, lab, index=np.arange(1, n + 1))) + np.asarray(offset, float)
    wx = (reference.affine[:3, :3] @ cents.T + reference.affine[:3, 3:4])[0]
    body_mid = body_midline_x(reference)
    mid = body_mid
    if n >= 2:
        top = np.argsort(sizes)[::-1][:2]
        if sizes[top[1]] >= sizes[top[0]] / 3 and (wx[top[0]] - body_mid) * (wx[top[1]] - body_mid) < 0:
            mid = wx[top].mean()
    left_ids = np.nonzero(wx < mid)[0] + 1
    left = np.isin(lab, left_ids)
    return left, kidney & ~left


def load_labelmap(source: str | os.PathLike | Sequence[str | os.PathLike], label_spec="auto", *,
                  reference: Volume, ignore_unmapped: bool = False,
                  max_voxels: int | None = None, annotates=None) -> LabelMap:
    """Load masks onto ``reference``'s grid with canonical ids (``volvqa.labels``).

    source: a label-map NIfTI, a folder of binary per-structure NIfTI masks
        (file stem = structure name), or a list of such sources merged in
        order (one spec for all, or a list with one spec per source).
    label_spec: dataset id / file stem -> canonical name (see
        ``volvqa.labels.resolve_label_spec``). For a single label map,
        ``auto`` means the ids are already canonical ids.
    Overlaps: lesions are painted over organs (a lesion voxel is a lesion);
    between two organs the first painted keeps the voxel, and the counts of
    such voxels are kept in ``meta['overlap_voxels']``. Sub-segments go to
    the ``parts`` layer; an organ given only by its sub-segments (e.g. the
    TotalSegmentator ``liver_segments`` task alone) is their union.
    A label named ``kidney`` (both kidneys, as in KiTS) is split by side.

    Annotation scope (``LabelMap.annotates``): for a label map read with a
    mapping spec, every name the spec maps (a mapped id with no voxel is an
    absent structure); with ``auto``/``canonical``, only the names the file
    holds (nothing can be absent); for a mask folder, every mapped file,
    empty ones included. Sub-segments count by family: Couinaud segments
    (or pancreas parts) are annotated when any of them has voxels or a
    file. ``annotates`` (a list of canonical names, e.g. a manifest's
    ``annotates:``) replaces the inferred scope; structures with voxels are
    always in it.
    """
    max_voxels = max_voxels_from_env() if max_voxels is None else int(max_voxels)
    sources = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    specs = label_spec if isinstance(label_spec, (list, tuple)) else [label_spec] * len(sources)
    if len(specs) != len(sources):
        raise VolvqaInputError(None, f"{len(sources)} mask sources but {len(specs)} label specs")
    explicit = None if annotates is None else L.check_structure_names(annotates, where=sources[0] if sources else None)
    acc = _Layers(reference)
    for src, spec in zip(sources, specs, strict=False):
        src = Path(src)
        spec = L.resolve_label_spec(spec, where=src)
        if not src.exists():
            raise VolvqaInputError(src, "mask file or folder not found")
        from volvqa.io.dicom_masks import dicom_mask_files
        if dicom_mask_files(src):
            _add_dicom_masks(acc, src, spec, reference, ignore_unmapped)
        elif src.is_dir():
            _add_mask_folder(acc, src, spec, reference, ignore_unmapped, max_voxels)
        else:
            _add_label_file(acc, src, spec, reference, ignore_unmapped, max_voxels)
    lm = acc.finish(reference)
    lm.annotates = (explicit if explicit is not None else part_families(acc.scope)) | lm.present
    return lm


def part_families(names) -> frozenset[str]:
    """``names`` with each sub-segment replaced by its whole family (all
    Couinaud segments, or all pancreas parts): a source that delineates one
    segment delineates them all."""
    out = {n for n in names if not L.is_part(n)}
    for parent in {L.PART_PARENT[n] for n in names if L.is_part(n)}:
        out |= {p for p, par in L.PART_PARENT.items() if par == parent}
    return frozenset(out)


_KIDNEY_TMP = 255  # a temporary id for "both kidneys" until split by side


class _Layers:
    """Accumulates the primary (organs + lesions) and parts layers on the reference grid."""

    def __init__(self, reference: Volume):
        self.primary = np.zeros(reference.shape, np.uint8)
        self.parts: np.ndarray | None = None
        self.overlaps: dict[str, int] = {}
        self.sources: list[str] = []
        self.scope: set[str] = set()           # structures the sources annotate
        self.source_voxels: dict[str, int] = {}  # per-structure mask voxels before overlaps (folders)
        self.empty = True
        self.counts: np.ndarray | None = None  # label counts of ``primary`` while still valid

    def add_primary(self, ids: np.ndarray, src: str, counts: np.ndarray | None = None) -> None:
        """Merge an array of canonical ids: lesions overwrite, organs fill background."""
        self.sources.append(src)
        if self.empty:
            self.primary = ids if (ids.dtype == np.uint8 and ids.flags.writeable) else ids.astype(np.uint8)
            self.empty = False
            self.counts = counts
            return
        self.counts = None
        is_lesion = _LESION_LUT[ids]
        self.primary[is_lesion] = ids[is_lesion]
        organ = (ids > 0) & ~is_lesion
        clash = organ & (self.primary > 0) & (self.primary != ids)
        if clash.any():
            pairs, counts = np.unique(self.primary[clash].astype(np.int32) * 256 + ids[clash], return_counts=True)
            for code, n in zip(pairs.tolist(), counts.tolist(), strict=False):
                a, b = divmod(code, 256)
                if not _LESION_LUT[a]:
                    key = f"{_name(a)}|{_name(b)}"
                    self.overlaps[key] = self.overlaps.get(key, 0) + int(n)
        fill = organ & (self.primary == 0)
        self.primary[fill] = ids[fill]

    def add_parts(self, ids: np.ndarray) -> None:
        if self.parts is None:
            self.parts = np.zeros_like(self.primary)
        fill = (ids > 0) & (self.parts == 0)
        self.parts[fill] = ids[fill]

    def finish(self, reference: Volume) -> LabelMap:
        counts = self.counts if self.counts is not None else label_counts(self.primary)
        if counts[_KIDNEY_TMP]:
            both = ndimage.find_objects((self.primary == _KIDNEY_TMP).astype(np.uint8))[0]
            sub = self.primary[both]
            left, right = split_by_side(sub == _KIDNEY_TMP, reference, [s.start for s in both])
            sub[left] = L.CANONICAL_IDS["kidney_left"]
            sub[right] = L.CANONICAL_IDS["kidney_right"]
        if self.parts is not None:
            for parent in sorted({L.PART_PARENT[n] for n, i in L.PART_IDS.items() if (self.parts == i).any()}):
                pid = L.CANONICAL_IDS[parent]
                if not (self.primary == pid).any():
                    ids = [i for n, i in L.PART_IDS.items() if L.PART_PARENT[n] == parent]
                    self.primary[np.isin(self.parts, ids) & (self.primary == 0)] = pid
            counts = label_counts(self.primary)
        if counts[_KIDNEY_TMP]:
            counts = label_counts(self.primary)
        present = np.nonzero(counts)[0]
        labels = {int(i): L.CANONICAL_NAMES[int(i)] for i in present if i != 0}
        part_labels = {}
        if self.parts is not None:
            pnames = {v: k for k, v in L.PART_IDS.items()}
            part_labels = {int(i): pnames[int(i)] for i in np.unique(self.parts) if i != 0}
        meta = {"overlap_voxels": self.overlaps, "sources": sorted(set(self.sources))}
        if self.source_voxels:
            meta["source_voxels"] = dict(sorted(self.source_voxels.items()))
        return LabelMap(array=self.primary, labels=labels, affine=reference.affine.copy(), parts=self.parts,
                        part_labels=part_labels, meta=meta)


_LESION_LUT = np.zeros(256, bool)
for _n, _i in L.CANONICAL_IDS.items():
    _LESION_LUT[_i] = L.is_lesion(_n)


def _name(i: int) -> str:
    return "kidney" if i == _KIDNEY_TMP else L.CANONICAL_NAMES.get(i, str(i))


def _canonical_id(name: str) -> tuple[str, int]:
    """('primary' | 'parts', id) for a canonical name."""
    if L.is_part(name):
        return "parts", L.PART_IDS[name]
    if name == L.BILATERAL_KIDNEY:
        return "primary", _KIDNEY_TMP
    return "primary", L.CANONICAL_IDS[name]


def _add_label_file(acc: _Layers, src: Path, spec, reference: Volume, ignore_unmapped: bool,
                    max_voxels: int) -> None:
    arr, aff = _read_labels(src, max_voxels)
    top = int(arr.max(initial=0))   # at most 65535 (check_label_values)
    src_counts = label_counts(arr, minlength=max(top + 1, 256))
    ids = np.nonzero(src_counts)[0]
    ids = ids[ids != 0]
    if spec in ("auto", "canonical"):
        mapping = {int(i): L.CANONICAL_NAMES.get(int(i)) for i in ids}
    else:
        mapping = {int(i): spec.get(int(i)) for i in ids}
    unmapped = [str(i) for i, n in mapping.items() if n is None]
    if unmapped and not ignore_unmapped:
        raise VolvqaInputError(src, f"label ids not in the label spec: {', '.join(unmapped[:20])}")
    held = {x for n in mapping.values() if n and n != L.IGNORE for x in L.expand_names(n)}
    mapped = L.spec_annotates(spec)
    # Sub-segments by family from what the file holds; the rest from the spec.
    acc.scope |= {n for n in (held if mapped is None else mapped) if not L.is_part(n)} | {n for n in held if L.is_part(n)}
    lut = {"primary": np.zeros(top + 1, np.uint8), "parts": np.zeros(top + 1, np.uint8)}
    for i, n in mapping.items():
        if n and n != L.IGNORE:
            layer, cid = _canonical_id(n)
            lut[layer][i] = cid
    # One index remap on the source grid (none when ids are already
    # canonical), then one resampling per layer used.
    lp = lut["primary"]
    same = np.array_equal(lp[ids], ids) and not lut["parts"].any() and arr.dtype == np.uint8
    prim = _on_reference(src, arr if same else lp[arr], aff, reference)
    # Counts carry over only when nothing moved or was relabelled.
    acc.add_primary(prim, str(src), counts=src_counts if (same and prim is arr) else None)
    if lut["parts"].any():
        acc.add_parts(resample_nearest(lut["parts"][arr], aff, reference.shape, reference.affine))


def _add_mask_folder(acc: _Layers, src: Path, spec, reference: Volume, ignore_unmapped: bool,
                     max_voxels: int) -> None:
    files = sorted(p for p in src.iterdir() if p.name.endswith(MASK_SUFFIXES) and not p.name.startswith("."))
    if not files:
        raise VolvqaInputError(src, "mask folder holds no .nii/.nii.gz files")
    unmapped, todo = [], []
    for f in files:
        stem = mask_stem(f)
        name = spec.get(stem) if isinstance(spec, dict) else L.canonical_name(stem)
        if name is None:
            unmapped.append(stem)
        elif name != L.IGNORE:
            todo.append((name, f))
    if unmapped and not ignore_unmapped:
        raise VolvqaInputError(src, f"mask files not in the label spec: {', '.join(unmapped[:15])}"
                               f"{' ...' if len(unmapped) > 15 else ''} (map them, or set them to "
                               "'ignore', or pass ignore_unmapped)")
    def on_reference(f):
        arr, aff = _read_labels(f, max_voxels)
        if arr.max() > 1 and len(np.unique(arr)) > 2:
            raise VolvqaInputError(f, f"per-structure mask holds {len(np.unique(arr))} distinct "
                                   "values; expected a binary mask (0 and 1)")
        return _on_reference(f, (arr > 0).astype(np.uint8), aff, reference) > 0
    _merge_named(acc, [(name, f, lambda f=f: on_reference(f)) for name, f in todo])


def _merge_named(acc: _Layers, todo) -> None:
    """Merge named binary masks ``(canonical name, source, load() -> bool mask
    on the reference grid)``: organs first, lesions last (they overwrite),
    sub-segments in their own layer. Every name is annotated, empty or not."""
    todo = sorted(todo, key=lambda t: (L.is_lesion(t[0]), t[0]))
    acc.scope |= {x for name, _f, _load in todo for x in L.expand_names(name)}
    for name, f, load in todo:
        m = load()
        layer, cid = _canonical_id(name)
        on_ref = np.where(m, cid, 0).astype(np.uint8)
        acc.source_voxels[name] = acc.source_voxels.get(name, 0) + int(np.count_nonzero(m))
        if layer == "parts":
            acc.add_parts(on_ref)
        else:
            acc.add_primary(on_ref, str(f))


def _add_dicom_masks(acc: _Layers, src: Path, spec, reference: Volume, ignore_unmapped: bool) -> None:
    """DICOM SEG segments / RTSTRUCT ROIs, named like mask-folder files: the
    label spec maps their names (as written, or normalised: 'Liver Tumor' ->
    'liver_tumor'); ``auto`` takes normalised names that are canonical or
    known aliases."""
    from volvqa.io.dicom_masks import normalise_name, read_dicom_masks
    named = read_dicom_masks(src, reference)
    unmapped, todo = [], []
    for raw, mask, f in named:
        norm = normalise_name(raw)
        if isinstance(spec, dict):
            name = spec.get(raw, spec.get(norm))
        else:
            name = L.canonical_name(norm)
        if name is None:
            unmapped.append(raw)
        elif name != L.IGNORE:
            todo.append((name, f, lambda m=mask: m))
    if unmapped and not ignore_unmapped:
        raise VolvqaInputError(src, f"segments / ROIs not in the label spec: {', '.join(unmapped[:15])} "
                               "(map their names, or set them to 'ignore')")
    _merge_named(acc, todo)


def save_labelmap(labelmap: LabelMap, path: str | os.PathLike) -> None:
    """Write the primary layer as a NIfTI label map (canonical ids), atomically."""
    nifti.write_nifti(path, labelmap.array, labelmap.affine)
