"""Hospital mask formats: DICOM SEG (highdicom) and RTSTRUCT contours.

Both come back as named binary masks on a reference Volume's grid, placed
through world coordinates like every other mask source
(``volvqa.io.labelmap``), so the CT may be the DICOM series itself or any
NIfTI of the same scan in any voxel order.

- **DICOM SEG**: read with highdicom (binary and fractional segments; a
  fractional segment is the voxels at 0.5 or more). A segment is named by
  its SegmentLabel, else by the meaning of its SegmentedPropertyType code.
- **RTSTRUCT**: each CLOSED_PLANAR contour is filled on the CT slice it lies
  on with scikit-image's ``polygon`` (voxel centres inside the polygon, in
  the slice's own voxel coordinates); several contours of one ROI on one
  slice combine by even-odd (XOR), so an inner contour is a hole. Chosen
  over rt-utils for reading: rt-utils needs OpenCV and assumes its own
  slice order, while the contour-to-voxel mapping here is the same world
  transform every other mask uses (rt-utils is used by the tests to write
  RTSTRUCTs independently). A contour that does not lie on one of the CT's
  slices (between slices, beyond the series, or oblique to it) is an error.

When the CT is a DICOM series, a SEG whose referenced series or frame of
reference is not the CT's, and an RTSTRUCT in another frame of reference,
are errors naming both UIDs.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from volvqa.errors import VolvqaInputError, shown
from volvqa.io.orientation import LPS_TO_RAS
from volvqa.records import Volume

#: Largest distance (in voxels of the CT's slice axis) between a contour's
#: plane and the nearest CT slice.
CONTOUR_SLICE_TOL_VOXELS = 0.1
DICOM_MASK_KINDS = ("SEG", "RTSTRUCT")


def normalise_name(name: str) -> str:
    """'Liver Tumor' / 'liver-tumor' / 'Liver tumour ' -> 'liver_tumor'-style stems."""
    return re.sub(r"[^a-z0-9]+", "_", str(name).strip().lower()).strip("_")


def _modality(path: Path) -> str | None:
    import pydicom
    from pydicom.errors import InvalidDicomError
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Modality", "SOPClassUID"])
    except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, AttributeError, KeyError):
        return None
    mod = str(ds.get("Modality", "") or "")
    return mod if mod in DICOM_MASK_KINDS else None


def dicom_mask_files(path: str | Path) -> list[tuple[str, Path]]:
    """(kind, file) for a DICOM SEG / RTSTRUCT file, or for every such file in
    a folder holding no NIfTI masks; [] when ``path`` is neither."""
    path = Path(path)
    if path.is_file():
        if path.name.endswith((".nii", ".nii.gz")):
            return []
        kind = _modality(path)
        return [(kind, path)] if kind else []
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
        if any(p.name.endswith((".nii", ".nii.gz")) for p in files):
            return []
        out = []
        for p in files:
            kind = _modality(p)
            if kind:
                out.append((kind, p))
        return out
    return []


def _check_uid(path: Path, what: str, mask_uid: str | None, ct_uid: str | None) -> None:
    if mask_uid and ct_uid and mask_uid != ct_uid:
        raise VolvqaInputError(path, f"{what} {mask_uid} is not the CT's ({ct_uid}): the masks belong to "
                               "another scan")


def read_seg(path: str | Path, reference: Volume) -> list[tuple[str, np.ndarray]]:
    """(segment name, boolean mask on ``reference``'s grid) per segment of a DICOM SEG."""
    import highdicom as hd

    from volvqa.io.labelmap import resample_nearest
    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as e:  # noqa: BLE001 - highdicom raises many types on malformed files
        raise VolvqaInputError(path, f"not a readable DICOM SEG ({' '.join(str(e).split())[:200]})") from None
    _check_uid(path, "its FrameOfReferenceUID", str(seg.get("FrameOfReferenceUID", "") or "") or None,
               reference.meta.get("frame_of_reference_uid"))
    ct_series = reference.source.series_uid
    refs = [str(r.SeriesInstanceUID) for r in seg.get("ReferencedSeriesSequence", []) or []]
    if ct_series and refs and ct_series not in refs:
        raise VolvqaInputError(path, f"its referenced series {', '.join(refs)} is not the CT's ({ct_series}): "
                               "the masks belong to another scan")
    fractional = str(seg.SegmentationType) == "FRACTIONAL"
    try:
        vol = seg.get_volume(combine_segments=False, rescale_fractional=True)
    except Exception as e:  # noqa: BLE001
        raise VolvqaInputError(path, "DICOM SEG frames do not form a regular volume "
                               f"({' '.join(str(e).split())[:200]})") from None
    arr = np.asarray(vol.array)
    if arr.ndim == 3:
        arr = arr[..., None]
    # highdicom's affine maps (slice, row, column) indices to LPS mm.
    affine = LPS_TO_RAS @ np.asarray(vol.affine, float)
    out = []
    for j, number in enumerate(seg.get_segment_numbers()):
        desc = seg.get_segment_description(number)
        name = str(getattr(desc, "SegmentLabel", "") or "")
        if not name:
            codes = desc.get("SegmentedPropertyTypeCodeSequence") or []
            name = str(codes[0].CodeMeaning) if codes else f"segment_{number}"
        m = (arr[..., j] >= 0.5) if fractional else (arr[..., j] > 0)
        out.append((name, resample_nearest(m.astype(np.uint8), affine, reference.shape, reference.affine) > 0))
    return out


def _roi_number(path: Path, ds, keyword: str) -> int:
    try:
        return int(ds.get(keyword))
    except (TypeError, ValueError, OverflowError):
        raise VolvqaInputError(path, f"RTSTRUCT {keyword} {shown(ds.get(keyword))} is not an integer") from None


def _contour_points(path: Path, name: str, contour) -> np.ndarray:
    """A closed planar contour's points (N x 3, LPS mm): finite, in triples, at least three."""
    raw = contour.get("ContourData")
    try:
        values = np.asarray([float(v) for v in (raw if raw is not None else [])], float)
    except (TypeError, ValueError) as e:
        raise VolvqaInputError(path, f"ROI {shown(name)}: ContourData is not a list of numbers ({type(e).__name__})"
                               ) from None
    if values.size % 3:
        raise VolvqaInputError(path, f"ROI {shown(name)}: ContourData holds {values.size} numbers, not x, y, z "
                               "triples")
    if not np.isfinite(values).all():
        raise VolvqaInputError(path, f"ROI {shown(name)}: ContourData holds NaN or Inf")
    pts = values.reshape(-1, 3)
    if len(pts) < 3:
        raise VolvqaInputError(path, f"ROI {shown(name)}: a closed contour of {len(pts)} points (it needs at "
                               "least 3)")
    return pts


def read_rtstruct(path: str | Path, reference: Volume) -> list[tuple[str, np.ndarray]]:
    """(ROI name, boolean mask on ``reference``'s grid) per ROI of an RTSTRUCT."""
    import pydicom
    from skimage.draw import polygon

    path = Path(path)
    try:
        ds = pydicom.dcmread(path)
    except Exception as e:  # noqa: BLE001
        raise VolvqaInputError(path, f"not a readable RTSTRUCT ({' '.join(str(e).split())[:200]})") from None
    try:
        return _rtstruct_masks(path, ds, reference, polygon)
    except VolvqaInputError:
        raise
    except (AttributeError, KeyError, IndexError, TypeError, ValueError, OverflowError) as e:
        # pydicom yields malformed elements lazily: whatever else is wrong is still bad input.
        raise VolvqaInputError(path, f"malformed RTSTRUCT ({type(e).__name__}: {shown(str(e))})") from None


def _rtstruct_masks(path: Path, ds, reference: Volume, polygon) -> list[tuple[str, np.ndarray]]:
    ct_for = reference.meta.get("frame_of_reference_uid")
    names, for_of = {}, {}
    for roi in ds.get("StructureSetROISequence", []) or []:
        number = _roi_number(path, roi, "ROINumber")
        names[number] = str(roi.get("ROIName", "") or f"roi_{number}")
        for_of[number] = str(roi.get("ReferencedFrameOfReferenceUID", "") or "") or None
    for ref in ds.get("ReferencedFrameOfReferenceSequence", []) or []:
        _check_uid(path, "its FrameOfReferenceUID", str(ref.get("FrameOfReferenceUID", "") or "") or None, ct_for)
    inv = np.linalg.inv(reference.affine)
    shape = reference.shape
    out = []
    for rc in ds.get("ROIContourSequence", []) or []:
        number = _roi_number(path, rc, "ReferencedROINumber")
        name = names.get(number, f"roi_{number}")
        _check_uid(path, f"ROI {name!r} FrameOfReferenceUID", for_of.get(number), ct_for)
        mask = np.zeros(shape, bool)
        for c in rc.get("ContourSequence", []) or []:
            geom = str(c.get("ContourGeometricType", "CLOSED_PLANAR"))
            if geom != "CLOSED_PLANAR":
                continue  # points and open lines carry no area
            pts = _contour_points(path, name, c)
            ras = pts @ LPS_TO_RAS[:3, :3].T
            idx = ras @ inv[:3, :3].T + inv[:3, 3]
            axis = int(np.argmin(np.ptp(idx, axis=0)))
            k = float(idx[:, axis].mean())
            where = f"ROI {name!r}: contour at {np.round(pts[0], 2).tolist()} mm (LPS)"
            if np.ptp(idx[:, axis]) > CONTOUR_SLICE_TOL_VOXELS:
                raise VolvqaInputError(path, f"{where} is not in the plane of the CT's slices")
            kk = int(round(k))
            if abs(k - kk) > CONTOUR_SLICE_TOL_VOXELS or not 0 <= kk < shape[axis]:
                raise VolvqaInputError(path, f"{where} lies on a slice the CT lacks (slice index {k:.2f} of "
                                       f"{shape[axis]} along its axis {axis})")
            a, b = [x for x in range(3) if x != axis]
            rr, cc = polygon(idx[:, a], idx[:, b], shape=(shape[a], shape[b]))
            plane = np.zeros((shape[a], shape[b]), bool)
            plane[rr, cc] = True
            sl = [slice(None)] * 3
            sl[axis] = kk
            mask[tuple(sl)] ^= plane
        out.append((name, mask))
    if not out:
        raise VolvqaInputError(path, "RTSTRUCT holds no ROI contours")
    return out


def dicom_mask_names(path: str | Path) -> list[str] | None:
    """Segment labels / ROI names of the DICOM SEG and RTSTRUCT files at
    ``path`` (headers only), or None when there are none."""
    import pydicom
    files = dicom_mask_files(path)
    if not files:
        return None
    names = []
    for kind, f in files:
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except Exception as e:  # noqa: BLE001
            raise VolvqaInputError(f, f"unreadable DICOM {kind} ({' '.join(str(e).split())[:200]})") from None
        if kind == "SEG":
            for seg in ds.get("SegmentSequence", []) or []:
                label = str(seg.get("SegmentLabel", "") or "")
                codes = seg.get("SegmentedPropertyTypeCodeSequence") or []
                names.append(label or (str(codes[0].CodeMeaning) if codes else f"segment_{seg.SegmentNumber}"))
        else:
            names += [str(r.get("ROIName", "") or f"roi_{int(r.ROINumber)}")
                      for r in ds.get("StructureSetROISequence", []) or []]
    return names


def read_dicom_masks(path: str | Path, reference: Volume) -> list[tuple[str, np.ndarray, Path]]:
    """(name, mask on the reference grid, file) for every segment / ROI of the DICOM SEG and RTSTRUCT files at ``path``."""
    out = []
    for kind, f in dicom_mask_files(path):
        reader = read_seg if kind == "SEG" else read_rtstruct
        out += [(n, m, f) for n, m in reader(f, reference)]
    return out
