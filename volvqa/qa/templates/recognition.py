"""Recognition: is a structure, a lesion, a kind of lesion there?"""
from __future__ import annotations

from volvqa import knowledge as K
from volvqa.qa.templates.base import (
    LESION_FAMILIES,
    Instance,
    _family_box,
    _family_organs,
    _in_view_landmark,
    _pancreatic_tumours,
    _yn,
    _z,
    loc_text,
    register,
)


@register(id="rec.lesion_exists", category="Recognition", subtype="{organ} lesion existence",
          answer_type="binary", needs="organ present; the dataset annotates its lesions",
          requires=('lesions:{organ}',),
          paraphrases=("Is there a lesion in the {organ}?", "Does the {organ} contain any lesion?",
                       "Are any lesions visible in the {organ}?"))
def lesion_exists(ctx):
    for fam in LESION_FAMILIES:
        organs = _family_organs(ctx, fam)
        if not organs or not ctx.annotated(fam):
            continue
        les = ctx.lesions(fam)
        boxes = [les[0].bbox_voxel] if les else _family_box(ctx, fam)
        z = les[0].axial_slice if les else _z(ctx, organs[0].centroid_mm)
        yield Instance({"organ": fam}, _yn(bool(les)), {"lesion_count": len(les)}, boxes, z)


@register(id="rec.kidney_kind_exists", category="Recognition", subtype="kidney {kind} existence",
          answer_type="binary", needs="a kidney; kidney tumors and cysts annotated separately",
          requires=('lesions:kidney', 'kind:kidney:{kind}'),
          paraphrases=("Is there a kidney {kind} in this scan?", "Does either kidney have a {kind}?",
                       "Can you see a renal {kind}?"))
def kidney_kind_exists(ctx):
    if not _family_organs(ctx, "kidney") or not ctx.annotated("kidney"):
        return
    for kind in ("tumor", "cyst"):
        if not ctx.kind_annotated("kidney", kind):
            continue
        les = [x for x in ctx.lesions("kidney") if x.kind == kind]
        boxes = [les[0].bbox_voxel] if les else _family_box(ctx, "kidney")
        z = les[0].axial_slice if les else _z(ctx, _family_organs(ctx, "kidney")[0].centroid_mm)
        yield Instance({"kind": kind}, _yn(bool(les)), {f"kidney_{kind}_count": len(les)}, boxes, z)


@register(id="rec.organ_presence", category="Recognition", subtype="{organ} presence", answer_type="binary",
          needs="an abdominal scan (organs that may have been removed: gallbladder, kidneys, spleen)",
          requires=('organ:{organ}',),
          paraphrases=("Is the {organ} present in this scan?", "Does this CT show a {organ}?",
                       "Can a {organ} be seen in this image?"))
def organ_presence(ctx):
    if ctx.organ("liver") is None and ctx.organ("kidney_left") is None and ctx.organ("kidney_right") is None:
        return  # not an abdominal field of view
    for n in ("gallbladder", "kidney_left", "kidney_right", "spleen"):
        o = ctx.organ(n)
        if o is not None:
            yield Instance({"organ": n}, "yes", {"voxels": o.voxels}, [o.bbox_voxel], _z(ctx, o.centroid_mm))
            continue
        if ctx.status(n) != "absent":
            continue  # not annotated: nothing can be said
        landmark = _in_view_landmark(ctx, n)
        if landmark is None:
            continue  # its place may lie outside the scan
        # Absent anywhere: the answer rests on the whole scan, so the box is the scan's.
        shape = ctx.findings.shape
        yield Instance({"organ": n}, "no", {"voxels": 0, "annotated": True, "in_view_landmark": landmark.name},
                       [[0, 0, 0, shape[0] - 1, shape[1] - 1, shape[2] - 1]], _z(ctx, landmark.centroid_mm))


@register(id="rec.splenomegaly", category="Recognition", subtype="splenomegaly detection", answer_type="binary",
          needs="complete spleen", rule="splenomegaly",
          requires=('organ:spleen',),
          paraphrases=("Does the patient have splenomegaly?", "Is the spleen enlarged?",
                       "Is there splenomegaly in this scan?"))
def splenomegaly(ctx):
    s = ctx.complete("spleen")
    if s:
        yield Instance({}, _yn(s.volume_ml > K.SPLENOMEGALY_ML),
                       {"spleen_volume_ml": s.volume_ml, "threshold_ml": K.SPLENOMEGALY_ML, "rule": "splenomegaly"},
                       [s.bbox_voxel], _z(ctx, s.centroid_mm))


@register(id="rec.pdac_exists", category="Recognition", subtype="PDAC existence", answer_type="binary",
          needs="the pancreas; PDAC annotated as its own class",
          requires=("lesions:pancreas", "organ:pancreatic_pdac"),
          paraphrases=("Is there a pancreatic ductal adenocarcinoma (PDAC)?", "Does the pancreas harbour a PDAC?"))
def pdac_exists(ctx):
    p = ctx.organ("pancreas")
    if p is not None and ctx.annotated("pancreas") and ctx.status("pancreatic_pdac") != "unknown":
        les = _pancreatic_tumours(ctx, ("pancreatic_pdac",))
        yield Instance({}, _yn(bool(les)), {"pdac_count": len(les)}, [les[0].bbox_voxel] if les else [p.bbox_voxel],
                       les[0].axial_slice if les else _z(ctx, p.centroid_mm))


@register(id="rec.pnet_exists", category="Recognition", subtype="PNET existence", answer_type="binary",
          needs="the pancreas; PNET annotated as its own class",
          requires=("lesions:pancreas", "organ:pancreatic_pnet"),
          paraphrases=("Is there a pancreatic neuroendocrine tumor (PNET)?",
                       "Does the pancreas contain a neuroendocrine tumor?"))
def pnet_exists(ctx):
    p = ctx.organ("pancreas")
    if p is not None and ctx.annotated("pancreas") and ctx.status("pancreatic_pnet") != "unknown":
        les = _pancreatic_tumours(ctx, ("pancreatic_pnet",))
        yield Instance({}, _yn(bool(les)), {"pnet_count": len(les)}, [les[0].bbox_voxel] if les else [p.bbox_voxel],
                       les[0].axial_slice if les else _z(ctx, p.centroid_mm))


@register(id="rec.segment_lesion_exists", category="Recognition", subtype="liver segment lesion existence",
          answer_type="binary", needs="liver segment masks; liver lesions annotated", key_params=(),
          requires=('lesions:liver', 'parts:liver'),
          paraphrases=("Is there a lesion in Couinaud segment {segment} of the liver?",
                       "Does liver segment {segment} contain a lesion?"))
def segment_lesion_exists(ctx):
    if not (ctx.has_parts("liver") and ctx.organ("liver") and ctx.annotated("liver")):
        return
    les = ctx.lesions("liver")
    liver = ctx.organ("liver")
    for seg in range(1, 9):
        hit = [x for x in les if seg in (x.location.get("segments") or [])]
        yield Instance({"segment": seg}, _yn(bool(hit)), {"lesions": [x.lesion_id for x in hit]},
                       [x.bbox_voxel for x in hit] or [liver.bbox_voxel],
                       hit[0].axial_slice if hit else _z(ctx, liver.centroid_mm))


@register(id="rec.part_lesion_exists", category="Recognition", subtype="{organ} part lesion existence",
          answer_type="binary", needs="pancreas parts (masks or axis) or kidney poles; lesions annotated",
          key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Is there a lesion {where} of the {organ}?", "Does the {organ} have a lesion {where}?"))
def part_lesion_exists(ctx):
    for fam, places in (("pancreas", ("head", "body", "tail")), ("kidney_left", ("upper pole", "interpolar", "lower pole")),
                        ("kidney_right", ("upper pole", "interpolar", "lower pole"))):
        o = ctx.organ(fam)
        family = "kidney" if fam.startswith("kidney") else fam
        if o is None or not ctx.annotated(family):
            continue
        les = [x for x in ctx.lesions(family) if x.organ == fam]
        for place in places:
            hit = [x for x in les if loc_text(x) == place]
            where = f"in the {place}" if place != "interpolar" else "in the interpolar region"
            yield Instance({"organ": fam, "place": place, "where": where}, _yn(bool(hit)),
                           {"lesions": [x.lesion_id for x in hit]}, [x.bbox_voxel for x in hit] or [o.bbox_voxel],
                           hit[0].axial_slice if hit else _z(ctx, o.centroid_mm))
