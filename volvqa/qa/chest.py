"""Chest templates: lung nodules and tumours (registered into the one
template registry of ``volvqa.qa.templates``).

A lung lesion is any component of ``lung_nodule`` or ``lung_tumor``. Its
place is its lobe when the masks hold lobes (TotalSegmentator's five),
else its side and third (``volvqa.findings.extract``); its density (solid,
part-solid, ground-glass) comes from its mean HU (rule
``lung_nodule_density``): attenuation relative to aerated lung says
nothing. Clinical rules: Fleischner 2017 and Lung-RADS v2022 size
categories for solid nodules, AJCC 8th T category by size for tumours.
"""
from __future__ import annotations

from volvqa import knowledge as K
from volvqa import labels as L
from volvqa.qa.context import organ_text
from volvqa.qa.templates.base import Instance, _stable, _yn, _z, register

LUNG_FAMILY = "lung"
DENSITIES = ["solid", "part-solid", "ground-glass"]
LOBE_LABELS = [organ_text(x) for x in L.LUNG_LOBES]
THIRD_LABELS = [f"{side} lung, {third} third" for side in ("left", "right") for third in ("upper", "middle", "lower")]


def _lesions(ctx):
    return ctx.lesions(LUNG_FAMILY)


def _has_lobes(ctx) -> bool:
    return all(ctx.status(lobe) != "unknown" for lobe in L.LUNG_LOBES)


def _side(x) -> str | None:
    return x.location.get("side")


def _place(x) -> str | None:
    """The lobe's name, else "<side> lung, <third> third"."""
    loc = x.location
    if loc.get("lobe"):
        return organ_text(loc["lobe"])
    if loc.get("side") and loc.get("third"):
        return f"{loc['side']} lung, {loc['third']} third"
    return None


def _scan_half(ctx, side: str) -> list[int]:
    """The voxel box of one side of the scan (for a "no lesion there" answer);
    canonical RAS: the patient's left has the smaller x index."""
    nx, ny, nz = ctx.findings.shape
    mid = nx // 2
    return [0, 0, 0, mid, ny - 1, nz - 1] if side == "left" else [mid, 0, 0, nx - 1, ny - 1, nz - 1]


def _solid(ctx):
    """Solid nodules: Fleischner and Lung-RADS size rules are for nodules, not masses labelled lung_tumor."""
    return [x for x in _lesions(ctx) if x.density == "solid" and x.label == "lung_nodule"]


@register(id="rec.lung_lesion_exists", category="Recognition", subtype="lung lesion existence by side",
          answer_type="binary", needs="lung lesions annotated (nodules or tumours)",
          requires=("lesions:lung",),
          paraphrases=("Is there a nodule or mass in the {side} lung?", "Does the {side} lung contain a lesion?",
                       "Can you see a lung lesion on the {side} side?"))
def lung_lesion_exists(ctx):
    if not ctx.annotated(LUNG_FAMILY):
        return
    les = _lesions(ctx)
    for side in ("left", "right"):
        hit = [x for x in les if _side(x) == side]
        yield Instance({"side": side}, _yn(bool(hit)), {"lesions": [x.lesion_id for x in hit]},
                       [x.bbox_voxel for x in hit] or [_scan_half(ctx, side)],
                       hit[0].axial_slice if hit else ctx.findings.shape[2] // 2)


@register(id="rec.lobe_lesion_exists", category="Recognition", subtype="lung lobe lesion existence",
          answer_type="binary", needs="lobe masks; lung lesions annotated", key_params=(),
          requires=("lesions:lung", "organ:{organ}"),
          paraphrases=("Is there a lesion in the {organ}?", "Does the {organ} contain a nodule or mass?"))
def lobe_lesion_exists(ctx):
    if not (ctx.annotated(LUNG_FAMILY) and _has_lobes(ctx)):
        return
    les = _lesions(ctx)
    for lobe in L.LUNG_LOBES:
        o = ctx.organ(lobe)
        if o is None:
            continue
        hit = [x for x in les if x.location.get("lobe") == lobe]
        yield Instance({"organ": lobe}, _yn(bool(hit)), {"lesions": [x.lesion_id for x in hit]},
                       [x.bbox_voxel for x in hit] or [o.bbox_voxel],
                       hit[0].axial_slice if hit else _z(ctx, o.centroid_mm))


@register(id="meas.lung_lesion_volume", category="Measurement", subtype="largest lung lesion volume",
          answer_type="numeric", unit="ml", decimals=2, needs="a lung lesion",
          requires=("lesions:lung",),
          paraphrases=("What is the volume of the largest lung lesion in ml?",
                       "How large is the biggest lung nodule or mass, in milliliters?"))
def lung_lesion_volume(ctx):
    les = _lesions(ctx)
    if les and ctx.annotated(LUNG_FAMILY):
        x = les[0]
        yield Instance({}, round(x.volume_ml, 2), {"volume_ml": x.volume_ml, "lesion_id": x.lesion_id},
                       [x.bbox_voxel], x.axial_slice)


@register(id="meas.lung_lesion_long_axis", category="Measurement", subtype="largest lung lesion long axis",
          answer_type="numeric", unit="mm", decimals=1, needs="a lung lesion",
          requires=("lesions:lung",),
          paraphrases=("What is the long axis of the largest lung lesion on axial images, in mm?",
                       "Measure the longest axial diameter of the largest lung nodule or mass in millimeters."))
def lung_lesion_long_axis(ctx):
    les = _lesions(ctx)
    if les and ctx.annotated(LUNG_FAMILY):
        x = les[0]
        yield Instance({}, round(x.long_axis_mm, 1), {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm,
                                                      "slice": x.axial_slice}, [x.bbox_voxel], x.axial_slice)


@register(id="vr.lung_lesion_count", category="Visual Reasoning", subtype="lung lesion counting",
          answer_type="numeric", integer=True, needs="lung lesions annotated",
          requires=("lesions:lung",),
          paraphrases=("How many lung nodules or masses are there?", "Count the lesions in the lungs.",
                       "What is the number of lung lesions?"))
def lung_lesion_count(ctx):
    if not ctx.annotated(LUNG_FAMILY):
        return
    les = _lesions(ctx)
    yield Instance({}, len(les), {"lesion_ids": [x.lesion_id for x in les]},
                   [x.bbox_voxel for x in les] or [[0, 0, 0, *(s - 1 for s in ctx.findings.shape)]],
                   les[0].axial_slice if les else ctx.findings.shape[2] // 2)


@register(id="vr.lung_lesion_count_by_lobe", category="Visual Reasoning", subtype="lung lesion count by lobe",
          answer_type="numeric", integer=True, needs="lobe masks; lung lesions annotated", key_params=(),
          requires=("lesions:lung", "organ:{organ}"),
          paraphrases=("How many lesions are in the {organ}?", "Count the nodules or masses in the {organ}."))
def lung_lesion_count_by_lobe(ctx):
    if not (ctx.annotated(LUNG_FAMILY) and _has_lobes(ctx)):
        return
    les = _lesions(ctx)
    # One lobe per case (all of them when answering), chosen by a stable hash: asking only lobes
    # that hold a lesion would make "1" a free answer.
    chosen = L.LUNG_LOBES if ctx.exhaustive else (L.LUNG_LOBES[_stable(ctx.case_id, "lobe") % len(L.LUNG_LOBES)],)
    for lobe in chosen:
        o = ctx.organ(lobe)
        hit = [x for x in les if x.location.get("lobe") == lobe]
        if o is None:
            continue
        yield Instance({"organ": lobe}, len(hit), {"lesions": [x.lesion_id for x in hit]},
                       [x.bbox_voxel for x in hit] or [o.bbox_voxel],
                       hit[0].axial_slice if hit else _z(ctx, o.centroid_mm))


@register(id="vr.lung_lesion_location", category="Visual Reasoning", subtype="largest lung lesion location",
          answer_type="categorical", needs="a lung lesion with a lobe (lobe masks) or a side and third",
          requires=("lesions:lung",),
          paraphrases=("Where is the largest lung lesion located?", "In which part of the lungs is the largest lesion?"))
def lung_lesion_location(ctx):
    les = _lesions(ctx)
    if les and ctx.annotated(LUNG_FAMILY) and _place(les[0]):
        x = les[0]
        labels = LOBE_LABELS if x.location.get("lobe") else THIRD_LABELS
        yield Instance({}, _place(x), {"location": x.location}, [x.bbox_voxel], x.axial_slice, label_set=labels)


@register(id="vr.lung_lesion_density", category="Visual Reasoning", subtype="lung lesion density",
          answer_type="categorical", needs="a lung lesion", rule="lung_nodule_density",
          requires=("lesions:lung",),
          paraphrases=("Is the largest lung lesion solid, part-solid or ground-glass?",
                       "What is the density of the largest lung nodule: solid, part-solid or ground-glass?"))
def lung_lesion_density(ctx):
    les = _lesions(ctx)
    if les and ctx.annotated(LUNG_FAMILY) and les[0].density:
        x = les[0]
        yield Instance({}, x.density, {"lesion_hu": x.hu_mean, "bands_hu": [-600, -300], "rule": "lung_nodule_density"},
                       [x.bbox_voxel], x.axial_slice, label_set=DENSITIES)


@register(id="med.fleischner_category", category="Medical Reasoning", subtype="Fleischner size category",
          answer_type="categorical", needs="a solid lung nodule of at most 30 mm", rule="fleischner_solid",
          requires=("lesions:lung",),
          paraphrases=("Which Fleischner 2017 size category fits the largest solid lung nodule (< 6 mm, 6-8 mm "
                       "or > 8 mm)?",
                       "By its average diameter, is the largest solid nodule < 6 mm, 6-8 mm or > 8 mm (Fleischner "
                       "Society 2017)?"))
def fleischner_category(ctx):
    sol = _solid(ctx)
    if sol and ctx.annotated(LUNG_FAMILY):
        x = max(sol, key=lambda n: (K.nodule_mean_diameter_mm(n.long_axis_mm, n.short_axis_mm), -n.lesion_id))
        mean = K.nodule_mean_diameter_mm(x.long_axis_mm, x.short_axis_mm)
        if mean <= K.FLEISCHNER_MAX_NODULE_MM:
            yield Instance({}, K.fleischner_category(x.long_axis_mm, x.short_axis_mm),
                           {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm,
                            "mean_diameter_mm": mean, "rule": "fleischner_solid"},
                           [x.bbox_voxel], x.axial_slice, label_set=["< 6 mm", "6-8 mm", "> 8 mm"])


@register(id="med.lung_rads_category", category="Medical Reasoning", subtype="Lung-RADS size category",
          answer_type="categorical", needs="a solid lung nodule", rule="lung_rads_solid",
          requires=("lesions:lung",),
          paraphrases=("At baseline screening, which Lung-RADS v2022 category does the size of the largest solid "
                       "nodule give (2, 3, 4A or 4B)?",
                       "What is the Lung-RADS v2022 size category (2, 3, 4A, 4B) of the largest solid nodule on a "
                       "baseline scan?"))
def lung_rads_category(ctx):
    sol = _solid(ctx)
    if sol and ctx.annotated(LUNG_FAMILY):
        x = max(sol, key=lambda n: (K.nodule_mean_diameter_mm(n.long_axis_mm, n.short_axis_mm), -n.lesion_id))
        yield Instance({}, K.lung_rads_category(x.long_axis_mm, x.short_axis_mm),
                       {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm,
                        "mean_diameter_mm": K.nodule_mean_diameter_mm(x.long_axis_mm, x.short_axis_mm),
                        "rule": "lung_rads_solid"},
                       [x.bbox_voxel], x.axial_slice, label_set=["2", "3", "4A", "4B"])


@register(id="med.lung_t_category", category="Medical Reasoning", subtype="lung tumor T category",
          answer_type="categorical", needs="a lesion labelled lung_tumor", rule="lung_t_category",
          requires=("lesions:lung",),
          paraphrases=("What is the T category (AJCC 8th edition) of the lung tumor by its size?",
                       "Based on its greatest dimension, what T category is the lung tumor?"))
def lung_t_category(ctx):
    tum = [x for x in _lesions(ctx) if x.label == "lung_tumor"]
    if tum and ctx.annotated(LUNG_FAMILY):
        x = tum[0]
        yield Instance({}, K.lung_t_category(x.max_diameter_3d_mm),
                       {"greatest_dimension_mm": x.max_diameter_3d_mm, "rule": "lung_t_category"},
                       [x.bbox_voxel], x.axial_slice, label_set=[n for _u, n in K.LUNG_T_MM])


@register(id="loc.lung_lesion_bbox", category="Localization", subtype="largest lung lesion bounding box",
          answer_type="bbox", needs="a lung lesion",
          requires=("lesions:lung",),
          paraphrases=("Give the 3D bounding box of the largest lung lesion.",
                       "Localize the largest lung nodule or mass with a 3D bounding box."))
def lung_lesion_bbox(ctx):
    les = _lesions(ctx)
    if les and ctx.annotated(LUNG_FAMILY):
        x = les[0]
        yield Instance({}, {"voxel": x.bbox_voxel, "mm": x.bbox_mm}, {"volume_ml": x.volume_ml}, [x.bbox_voxel],
                       x.axial_slice)
