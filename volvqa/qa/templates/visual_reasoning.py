"""Visual Reasoning: counting, comparing, locating and sizing lesions and organs."""
from __future__ import annotations

import numpy as np

from volvqa import knowledge as K
from volvqa.qa.context import organ_text
from volvqa.qa.templates.base import (
    _LESION_REF,
    CONTACT_ORGANS,
    LOCATION_LABELS,
    Instance,
    _family_box,
    _family_organs,
    _lesion_params,
    _named_lesions,
    _stable,
    _yn,
    _z,
    loc_text,
    register,
)


@register(id="vr.lesion_count", category="Visual Reasoning", subtype="{organ} lesion counting",
          answer_type="numeric", integer=True, needs="organ present; lesions annotated",
          requires=('lesions:{organ}',),
          paraphrases=("How many lesions are in the {organ}?", "Count the lesions in the {organ}.",
                       "What is the number of {organ} lesions?"))
def lesion_count(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        if _family_organs(ctx, fam) and ctx.annotated(fam):
            les = ctx.lesions(fam)
            yield Instance({"organ": fam}, len(les), {"lesion_ids": [x.lesion_id for x in les]},
                           [x.bbox_voxel for x in les] or _family_box(ctx, fam),
                           les[0].axial_slice if les else _z(ctx, _family_organs(ctx, fam)[0].centroid_mm))


@register(id="vr.lesion_count_by_location", category="Visual Reasoning", subtype="{organ} lesion count by location",
          answer_type="numeric", integer=True, needs="lesions with a location (segments, parts or poles)",
          requires=('lesions:{organ}',),
          paraphrases=("How many {organ} lesions are located {where}?",
                       "Count the {organ} lesions {where}.",
                       "What is the number of lesions {where} of the {organ}?"))
def lesion_count_by_location(ctx):
    for fam in ("liver", "pancreas", "kidney"):
        les = ctx.lesions(fam)
        if not les or not ctx.annotated(fam):
            continue
        places = sorted({loc_text(x) for x in les if loc_text(x)})
        if not places:
            continue
        chosen = LOCATION_LABELS[fam] if ctx.exhaustive else [places[_stable(ctx.case_id, fam) % len(places)]]
        for place in chosen:
            hit = [x for x in les if loc_text(x) == place]
            where = f"in {place}" if place.startswith("segment") else \
                "in the interpolar region" if place == "interpolar" else f"in the {place}"
            yield Instance({"organ": fam, "place": place, "where": where}, len(hit),
                           {"lesions_at_place": [x.lesion_id for x in hit]},
                           [x.bbox_voxel for x in hit] or _family_box(ctx, fam),
                           hit[0].axial_slice if hit else les[0].axial_slice)


@register(id="vr.largest_lesion_diameter", category="Visual Reasoning", subtype="largest {organ} lesion diameter",
          answer_type="numeric", unit="mm", decimals=1, needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("What is the longest axial diameter of the largest {organ} lesion in mm?",
                       "How long is the largest {organ} lesion on axial images (mm)?",
                       "Measure the largest {organ} lesion's long axis in millimeters."))
def largest_lesion_diameter(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, round(x.long_axis_mm, 1),
                           {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm, "slice": x.axial_slice},
                           [x.bbox_voxel], x.axial_slice)


@register(id="vr.largest_lesion_slice", category="Visual Reasoning", subtype="largest {organ} lesion slice",
          answer_type="numeric", integer=True, needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("On which axial slice (index) is the largest {organ} lesion widest?",
                       "Which axial slice number shows the longest diameter of the largest {organ} lesion?"))
def largest_lesion_slice(ctx):
    for fam in ("liver", "kidney"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, int(x.axial_slice), {"long_axis_mm": x.long_axis_mm},
                           [x.bbox_voxel], x.axial_slice)


@register(id="vr.largest_lesion_location", category="Visual Reasoning", subtype="largest {organ} lesion location",
          answer_type="categorical", needs="a lesion with a location (segment masks, pancreas axis, kidney extent)",
          requires=('lesions:{organ}',),
          paraphrases=("Where is the largest {organ} lesion located?", "In which part of the {organ} is its largest lesion?",
                       "Which {organ} region holds the largest lesion?"))
def largest_lesion_location(ctx):
    for fam in ("liver", "pancreas", "kidney"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam) and loc_text(les[0]):
            x = les[0]
            yield Instance({"organ": fam}, loc_text(x), {"location": x.location}, [x.bbox_voxel], x.axial_slice,
                           label_set=LOCATION_LABELS[fam])


@register(id="vr.largest_lesion_attenuation", category="Visual Reasoning",
          subtype="largest {organ} lesion attenuation", answer_type="categorical",
          needs="a lesion in the organ and the organ's parenchyma",
          requires=('lesions:{organ}',),
          paraphrases=("Is the largest {organ} lesion hypoattenuating, isoattenuating or hyperattenuating?",
                       "How does the largest {organ} lesion's density compare with the {organ}?",
                       "What is the attenuation of the largest {organ} lesion relative to the {organ}?"))
def largest_lesion_attenuation(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam) and les[0].attenuation in ("hypo", "iso", "hyper"):
            x = les[0]
            text = {"hypo": "hypoattenuating", "iso": "isoattenuating", "hyper": "hyperattenuating"}[x.attenuation]
            yield Instance({"organ": fam}, text, {"lesion_hu": x.hu_mean, "hu_difference": x.hu_difference},
                           [x.bbox_voxel], x.axial_slice,
                           label_set=["hypoattenuating", "isoattenuating", "hyperattenuating"])


@register(id="vr.kidney_volume_comparison", category="Visual Reasoning", subtype="kidney volume comparison",
          answer_type="categorical", needs="both kidneys complete",
          requires=('organ:kidney_left', 'organ:kidney_right'),
          paraphrases=("Which kidney is larger, the left or the right?", "Is the left or the right kidney bigger by volume?"))
def kidney_volume_comparison(ctx):
    a, b = ctx.complete("kidney_left"), ctx.complete("kidney_right")
    if a and b:
        yield Instance({}, "left" if a.volume_ml > b.volume_ml else "right",
                       {"left_ml": a.volume_ml, "right_ml": b.volume_ml}, [a.bbox_voxel, b.bbox_voxel],
                       _z(ctx, a.centroid_mm), label_set=["left", "right"])


@register(id="vr.kidney_lesion_asymmetry", category="Visual Reasoning", subtype="bilateral kidney lesion asymmetry",
          answer_type="categorical", needs="both kidneys, kidney lesions annotated, at least one lesion",
          requires=('lesions:kidney',),
          paraphrases=("Which kidney has more lesions: left, right, or are they equal?",
                       "Compare the number of lesions in the left and right kidneys."))
def kidney_lesion_asymmetry(ctx):
    if ctx.organ("kidney_left") and ctx.organ("kidney_right") and ctx.annotated("kidney") and ctx.lesions("kidney"):
        les = ctx.lesions("kidney")
        nl = sum(x.organ == "kidney_left" for x in les)
        nr = sum(x.organ == "kidney_right" for x in les)
        vl = sum(x.volume_ml for x in les if x.organ == "kidney_left")
        vr = sum(x.volume_ml for x in les if x.organ == "kidney_right")
        # More lesions; with as many on each side, more lesion volume (DeepTumorVQA: count or volume).
        ans = "left" if (nl, vl) > (nr, vr) else ("right" if (nr, vr) > (nl, vl) else "equal")
        yield Instance({}, ans, {"left_count": nl, "right_count": nr, "left_volume_ml": vl, "right_volume_ml": vr,
                                 "rule": "kidney_lesion_asymmetry"},
                       [x.bbox_voxel for x in les], les[0].axial_slice, label_set=["left", "right", "equal"])


@register(id="vr.lesion_outlier", category="Visual Reasoning", subtype="{organ} lesion outlier", answer_type="binary",
          needs=">= 3 lesions in the organ", rule="lesion_outlier",
          requires=('lesions:{organ}',),
          paraphrases=("Is the largest {organ} lesion at least three times the volume of the second largest?",
                       "Does one {organ} lesion dominate, being 3x or more the volume of the next largest?"))
def lesion_outlier(ctx):
    for fam in ("liver", "kidney"):
        les = ctx.lesions(fam)
        if len(les) >= 3 and ctx.annotated(fam):
            r = les[0].volume_ml / max(les[1].volume_ml, 1e-9)
            yield Instance({"organ": fam}, _yn(r >= 3.0), {"largest_ml": les[0].volume_ml, "second_ml": les[1].volume_ml,
                                                           "ratio": r, "rule": "lesion_outlier"},
                           [les[0].bbox_voxel, les[1].bbox_voxel], les[0].axial_slice)


@register(id="vr.liver_lesion_clustering", category="Visual Reasoning", subtype="liver lesion clustering",
          answer_type="categorical", needs=">= 2 liver lesions and liver segment masks", rule="liver_lesion_clustering",
          requires=('lesions:liver', 'parts:liver'),
          paraphrases=("How are the liver lesions distributed across the Couinaud segments?",
                       "Are the liver lesions clustered in one segment or widely distributed?"))
def liver_lesion_clustering(ctx):
    les = ctx.lesions("liver")
    segs = [loc_text(x) for x in les]
    if len(les) >= 2 and all(segs) and ctx.annotated("liver") and ctx.has_parts("liver"):
        counts = sorted((segs.count(s) for s in set(segs)), reverse=True)
        top = counts[0] / len(les)
        top2 = sum(counts[:2]) / len(les)
        ans = "highly clustered" if top > 0.5 else ("somewhat clustered" if top2 >= 0.75 else "widely distributed")
        yield Instance({}, ans, {"segments": segs, "top_share": top, "top2_share": top2,
                                 "rule": "liver_lesion_clustering"},
                       [x.bbox_voxel for x in les], les[0].axial_slice,
                       label_set=["highly clustered", "somewhat clustered", "widely distributed"])


@register(id="vr.organ_enlargement", category="Visual Reasoning", subtype="{organ} enlargement", answer_type="binary",
          needs="complete organ (liver, a kidney, pancreas)", rule="organ_enlarged",
          requires=('organ:{organ}',),
          paraphrases=("Is the {organ} enlarged?", "Is the {organ} larger than normal by volume?",
                       "Does the {organ} appear enlarged?"))
def organ_enlargement(ctx):
    # The spleen is asked as splenomegaly detection (Recognition) with the same threshold: asked here too,
    # one case would carry "Is the spleen enlarged?" twice under two subtypes.
    for n in ("liver", "kidney_left", "kidney_right", "pancreas"):
        o = ctx.complete(n)
        if o:
            yield Instance({"organ": n}, _yn(o.volume_ml > K.ENLARGED_ML[n]),
                           {"volume_ml": o.volume_ml, "threshold_ml": K.ENLARGED_ML[n], "rule": "organ_enlarged"},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="vr.lesion_organ_hu_difference", category="Visual Reasoning",
          subtype="{organ} tumor-organ HU difference", answer_type="numeric", unit="HU", decimals=1, signed=True,
          needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("By how many HU does the largest {organ} lesion differ from the {organ} parenchyma (lesion minus organ)?",
                       "What is the attenuation difference in HU between the largest {organ} lesion and the {organ}?"))
def lesion_organ_hu_difference(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam) and not np.isnan(les[0].hu_difference):
            x = les[0]
            yield Instance({"organ": fam}, round(x.hu_difference, 1), {"lesion_hu": x.hu_mean, "difference": x.hu_difference},
                           [x.bbox_voxel], x.axial_slice)


@register(id="vr.adjacent_organ", category="Visual Reasoning", subtype="{organ} adjacent organ",
          answer_type="categorical", needs="an organ touching another (shared voxel face)",
          requires=('organ:{organ}',),
          paraphrases=("Which of these structures is in contact with the {organ}?",
                       "Which organ directly touches the {organ}?", "What structure borders the {organ}?"))
def adjacent_organ(ctx):
    for n in ("liver", "spleen", "pancreas", "kidney_left", "kidney_right"):
        o = ctx.organ(n)
        if o is None:
            continue
        near = ctx.touching(n)
        touching = sorted(m for m in CONTACT_ORGANS if m != n and m in near)
        others = [m for m in CONTACT_ORGANS if m != n and m not in touching and ctx.organ(m) is not None]
        if touching and len(others) >= 3:
            pick = touching[_stable(ctx.case_id, n) % len(touching)]
            yield Instance({"organ": n}, organ_text(pick), {"touching": touching},
                           [o.bbox_voxel, ctx.organ(pick).bbox_voxel], _z(ctx, o.centroid_mm),
                           label_set=[organ_text(pick)] + [organ_text(m) for m in others])


@register(id="vr.multi_organ_burden", category="Visual Reasoning", subtype="multi-organ lesion burden comparison",
          answer_type="categorical", needs="lesions in at least two organ families whose lesions are annotated",
          requires=(), key_params=(),
          paraphrases=("Which of the {organs} has the largest total lesion volume?",
                       "Among the {organs}, where is the lesion burden (total lesion volume) highest?"))
def multi_organ_burden(ctx):
    # Only families whose lesions are annotated can be compared, and the
    # question names them: an organ outside the list may hold more.
    fams = [f for f in ("liver", "kidney", "pancreas", "spleen", "colon") if ctx.annotated(f)]
    burden = {f: sum(x.volume_ml for x in ctx.lesions(f)) for f in fams}
    if sum(v > 0 for v in burden.values()) >= 2:
        best = max(burden, key=lambda f: (burden[f], f))
        yield Instance({"organs": "+".join(fams)}, organ_text(best), {"burden_ml": burden},
                       [ctx.lesions(f)[0].bbox_voxel for f in fams if ctx.lesions(f)],
                       ctx.lesions(best)[0].axial_slice, label_set=[organ_text(f) for f in fams])


@register(id="vr.organ_aggregation", category="Visual Reasoning", subtype="{organ} combined volume",
          answer_type="numeric", unit="ml", decimals=1, needs="all summed organs complete",
          requires=('organ:{organ}',),
          paraphrases=("What is the combined volume of the {organ} in ml?", "Add up the volumes of the {organ} (ml).",
                       "What is the total volume of the {organ}, in milliliters?"))
def organ_aggregation(ctx):
    groups = {"kidneys": ("kidney_left", "kidney_right"), "liver and spleen": ("liver", "spleen")}
    for name, members in groups.items():
        os_ = [ctx.complete(m) for m in members]
        if all(os_):
            v = sum(o.volume_ml for o in os_)
            yield Instance({"organ": name}, round(v, 1), {m: o.volume_ml for m, o in zip(members, os_, strict=False)},
                           [o.bbox_voxel for o in os_], _z(ctx, os_[0].centroid_mm))


@register(id="vr.segment_comparison", category="Visual Reasoning", subtype="inter-segment comparison",
          answer_type="categorical", needs="liver segment masks and liver lesions", key_params=(),
          requires=("lesions:liver", "parts:liver"),
          paraphrases=("Which holds more lesions, Couinaud segment {a} or segment {b}, or are they equal?",
                       "Compare liver segments {a} and {b}: which has more lesions (or equal)?"))
def segment_comparison(ctx):
    if not (ctx.has_parts("liver") and ctx.organ("liver") and ctx.annotated("liver")):
        return
    les = ctx.lesions("liver")
    count = {s: sum(s in (x.location.get("segments") or []) for x in les) for s in range(1, 9)}
    with_lesions = [s for s in range(1, 9) if count[s]]
    if ctx.exhaustive:
        pairs = [(a, b) for a in range(1, 9) for b in range(a + 1, 9)]
    elif with_lesions:
        # A segment with lesions against another one, chosen by a stable hash.
        a = with_lesions[_stable(ctx.case_id, "seg_a") % len(with_lesions)]
        others = [s for s in range(1, 9) if s != a]
        b = others[_stable(ctx.case_id, "seg_b") % len(others)]
        pairs = [tuple(sorted((a, b)))]
    else:
        return
    liver = ctx.organ("liver")
    for a, b in pairs:
        ans = f"segment {a}" if count[a] > count[b] else (f"segment {b}" if count[b] > count[a] else "equal")
        hit = [x for x in les if {a, b} & set(x.location.get("segments") or [])]
        yield Instance({"a": a, "b": b}, ans, {f"segment_{a}_lesions": count[a], f"segment_{b}_lesions": count[b]},
                       [x.bbox_voxel for x in hit] or [liver.bbox_voxel],
                       hit[0].axial_slice if hit else _z(ctx, liver.centroid_mm),
                       label_set=[f"segment {a}", f"segment {b}", "equal"])


@register(id="vr.lesion_location", category="Visual Reasoning", subtype="{organ} lesion location",
          answer_type="categorical", needs="lesions with a location", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Where is " + _LESION_REF + "?", "In which part of the {organ} is " + _LESION_REF + "?"))
def lesion_location(ctx):
    for fam in ("liver", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam) and loc_text(x):
                yield Instance(_lesion_params(fam, x), loc_text(x), {"location": x.location}, [x.bbox_voxel],
                               x.axial_slice, label_set=LOCATION_LABELS[fam])


@register(id="vr.kidney_lesion_side", category="Visual Reasoning", subtype="kidney lesion side",
          answer_type="categorical", needs="kidney lesions", key_params=(),
          requires=('lesions:kidney',),
          paraphrases=("Which kidney holds the renal lesion whose longest axial diameter lies on slice {slice}?",
                       "Is the kidney lesion on slice {slice} in the left or the right kidney?"))
def kidney_lesion_side(ctx):
    for x in _named_lesions(ctx, "kidney"):
        if ctx.annotated("kidney"):
            yield Instance({"slice": int(x.axial_slice)}, x.organ.split("_")[1], {"organ": x.organ,
                           "centroid_mm": x.centroid_mm}, [x.bbox_voxel], x.axial_slice, label_set=["left", "right"])


@register(id="vr.lesion_diameter", category="Visual Reasoning", subtype="{organ} lesion diameter",
          answer_type="numeric", unit="mm", decimals=1, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the longest axial diameter (mm) of " + _LESION_REF + "?",
                       "How long is the long axis of " + _LESION_REF + ", in mm?"))
def lesion_diameter(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.long_axis_mm, 1),
                               {"long_axis_mm": x.long_axis_mm, "short_axis_mm": x.short_axis_mm}, [x.bbox_voxel],
                               x.axial_slice)


@register(id="vr.lesion_attenuation", category="Visual Reasoning", subtype="{organ} lesion attenuation",
          answer_type="categorical", needs="lesions and the organ's parenchyma", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Is " + _LESION_REF + " hypo-, iso- or hyperattenuating?",
                       "How dense is " + _LESION_REF + " compared with the {organ}?"))
def lesion_attenuation(ctx):
    text = {"hypo": "hypoattenuating", "iso": "isoattenuating", "hyper": "hyperattenuating"}
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam) and x.attenuation in text:
                yield Instance(_lesion_params(fam, x), text[x.attenuation], {"lesion_hu": x.hu_mean,
                               "hu_difference": x.hu_difference}, [x.bbox_voxel], x.axial_slice,
                               label_set=list(text.values()))


@register(id="vr.denser_organ", category="Visual Reasoning", subtype="{organ} vs spleen attenuation",
          answer_type="categorical", needs="the organ and the spleen",
          requires=('organ:{organ}', 'organ:spleen'),
          paraphrases=("Which is denser (higher mean HU), the {organ} or the spleen?",
                       "Does the {organ} or the spleen have the higher attenuation?"))
def denser_organ(ctx):
    s = ctx.organ("spleen")
    for n in ("liver", "pancreas"):
        o = ctx.organ(n)
        if o and s:
            yield Instance({"organ": n}, n if o.hu_mean > s.hu_mean else "spleen",
                           {f"{n}_hu": o.hu_mean, "spleen_hu": s.hu_mean}, [o.bbox_voxel, s.bbox_voxel],
                           _z(ctx, o.centroid_mm), label_set=[n, "spleen"])


@register(id="vr.lesion_short_axis", category="Visual Reasoning", subtype="{organ} lesion short axis",
          answer_type="numeric", unit="mm", decimals=1, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the short axis (mm), perpendicular to the long axis on the same slice, of "
                       + _LESION_REF + "?", "How wide is " + _LESION_REF + " perpendicular to its long axis, in mm?"))
def lesion_short_axis(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.short_axis_mm, 1),
                               {"short_axis_mm": x.short_axis_mm, "long_axis_mm": x.long_axis_mm}, [x.bbox_voxel],
                               x.axial_slice)


@register(id="vr.lesion_max_diameter", category="Visual Reasoning", subtype="{organ} lesion greatest 3D dimension",
          answer_type="numeric", unit="mm", decimals=1, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the greatest 3D dimension (mm) of " + _LESION_REF + "?",
                       "What is the maximum diameter in 3D, in mm, of " + _LESION_REF + "?"))
def lesion_max_diameter(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.max_diameter_3d_mm, 1),
                               {"max_diameter_3d_mm": x.max_diameter_3d_mm}, [x.bbox_voxel], x.axial_slice)
