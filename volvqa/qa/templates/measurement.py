"""Measurement: volumes, mean HU, HU ratios, tumour burden."""
from __future__ import annotations

from volvqa.qa.templates.base import (
    _LESION_REF,
    HU_ORGANS,
    LESION_FAMILIES,
    VOLUME_ORGANS,
    Instance,
    _lesion_params,
    _named_lesions,
    _z,
    register,
)


@register(id="meas.organ_volume", category="Measurement", subtype="{organ} volume", answer_type="numeric",
          unit="ml", decimals=1, needs="complete organ",
          requires=('organ:{organ}',),
          paraphrases=("What is the volume of the {organ} in ml?", "How large is the {organ} (volume, ml)?",
                       "Estimate the {organ} volume in milliliters."))
def organ_volume(ctx):
    for n in VOLUME_ORGANS:
        o = ctx.complete(n)
        if o:
            yield Instance({"organ": n}, round(o.volume_ml, 1), {"volume_ml": o.volume_ml, "voxels": o.voxels},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="meas.organ_hu", category="Measurement", subtype="{organ} mean HU", answer_type="numeric",
          unit="HU", decimals=1, signed=True, needs="organ present",
          requires=('organ:{organ}',),
          paraphrases=("What is the mean attenuation of the {organ} in HU?",
                       "What is the average Hounsfield unit value of the {organ} parenchyma?",
                       "Give the {organ}'s mean density in HU."))
def organ_hu(ctx):
    for n in HU_ORGANS:
        o = ctx.organ(n)
        if o:
            yield Instance({"organ": n}, round(o.hu_mean, 1), {"hu_mean": o.hu_mean, "hu_std": o.hu_std},
                           [o.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="meas.hu_ratio", category="Measurement", subtype="{organ}/spleen HU ratio", answer_type="numeric",
          decimals=2, needs="organ and spleen present, spleen mean above 0 HU",
          requires=('organ:{organ}', 'organ:spleen'),
          paraphrases=("What is the {organ}-to-spleen attenuation ratio?",
                       "Compute the ratio of mean {organ} HU to mean spleen HU.",
                       "What is the {organ}/spleen Hounsfield unit ratio?"))
def hu_ratio(ctx):
    s = ctx.organ("spleen")
    for n in ("liver", "pancreas"):
        o = ctx.organ(n)
        if o and s and s.hu_mean > 1:
            r = o.hu_mean / s.hu_mean
            yield Instance({"organ": n}, round(r, 2), {f"{n}_hu": o.hu_mean, "spleen_hu": s.hu_mean, "ratio": r},
                           [o.bbox_voxel, s.bbox_voxel], _z(ctx, o.centroid_mm))


@register(id="meas.largest_lesion_volume", category="Measurement", subtype="largest {organ} lesion volume",
          answer_type="numeric", unit="ml", decimals=2, needs="at least one lesion in the organ",
          requires=('lesions:{organ}',),
          paraphrases=("What is the volume of the largest {organ} lesion in ml?",
                       "How big is the largest lesion in the {organ} (ml)?",
                       "Estimate the volume of the biggest {organ} lesion in milliliters."))
def largest_lesion_volume(ctx):
    for fam in LESION_FAMILIES:
        les = ctx.lesions(fam)
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, round(x.volume_ml, 2), {"volume_ml": x.volume_ml, "lesion_id": x.lesion_id},
                           [x.bbox_voxel], x.axial_slice)


@register(id="meas.tumor_burden", category="Measurement", subtype="{organ} tumor burden", answer_type="numeric",
          unit="%", decimals=2, needs="complete organ with at least one lesion",
          requires=('lesions:{organ}',),
          paraphrases=("What percentage of the {organ} volume is occupied by lesions?",
                       "What is the {organ} tumor burden (lesion volume as % of organ volume)?",
                       "How much of the {organ}, in percent of its volume, is lesion?"))
def tumor_burden(ctx):
    for fam in ("liver", "pancreas"):
        o = ctx.complete(fam)
        les = ctx.lesions(fam)
        if o and les and ctx.annotated(fam):
            v = sum(x.volume_ml for x in les)
            pct = 100.0 * v / o.volume_ml
            yield Instance({"organ": fam}, round(pct, 2), {"lesion_volume_ml": v, "organ_volume_ml": o.volume_ml},
                           [o.bbox_voxel], les[0].axial_slice)


@register(id="meas.lesion_volume", category="Measurement", subtype="{organ} lesion volume", answer_type="numeric",
          unit="ml", decimals=2, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the volume in ml of " + _LESION_REF + "?", "How large (ml) is " + _LESION_REF + "?"))
def lesion_volume(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.volume_ml, 2), {"volume_ml": x.volume_ml},
                               [x.bbox_voxel], x.axial_slice)


@register(id="meas.lesion_hu", category="Measurement", subtype="{organ} lesion mean HU", answer_type="numeric",
          unit="HU", decimals=1, signed=True, needs="lesions", key_params=("organ",),
          requires=('lesions:{organ}',),
          paraphrases=("What is the mean attenuation (HU) of " + _LESION_REF + "?",
                       "Give the average Hounsfield unit value of " + _LESION_REF + "."))
def lesion_hu(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam):
                yield Instance(_lesion_params(fam, x), round(x.hu_mean, 1), {"hu_mean": x.hu_mean, "hu_std": x.hu_std},
                               [x.bbox_voxel], x.axial_slice)
