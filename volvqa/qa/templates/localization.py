"""Localization: 3D bounding boxes of organs and lesions."""
from __future__ import annotations

from volvqa.qa.templates.base import _LESION_REF, Instance, _lesion_params, _named_lesions, _z, register


@register(id="loc.organ_bbox", category="Localization", subtype="{organ} bounding box", answer_type="bbox",
          needs="organ present",
          requires=('organ:{organ}',),
          paraphrases=("Give the 3D bounding box of the {organ}.", "Where is the {organ}? Answer with its 3D bounding box.",
                       "Localize the {organ} with a bounding box."))
def organ_bbox(ctx):
    for n in ("liver", "spleen", "kidney_left", "kidney_right", "pancreas"):
        o = ctx.organ(n)
        if o:
            yield Instance({"organ": n}, {"voxel": o.bbox_voxel, "mm": o.bbox_mm}, {"voxels": o.voxels},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="loc.largest_lesion_bbox", category="Localization", subtype="largest {organ} lesion bounding box",
          answer_type="bbox", needs="a lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("Give the 3D bounding box of the largest {organ} lesion.",
                       "Localize the largest lesion in the {organ} with a 3D bounding box."))
def largest_lesion_bbox(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, {"voxel": x.bbox_voxel, "mm": x.bbox_mm}, {"volume_ml": x.volume_ml},
                           [x.bbox_voxel], x.axial_slice)


@register(id="loc.lesion_bbox", category="Localization", subtype="{organ} lesion bounding box", answer_type="bbox",
          needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("Give the 3D bounding box of " + _LESION_REF + ".",
                       "Localize " + _LESION_REF + " with a 3D bounding box."))
def lesion_bbox(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), {"voxel": x.bbox_voxel, "mm": x.bbox_mm},
                               {"volume_ml": x.volume_ml}, [x.bbox_voxel], x.axial_slice)
