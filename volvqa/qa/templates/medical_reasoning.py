"""Medical Reasoning: the clinical rules of ``volvqa.knowledge`` applied to findings."""
from __future__ import annotations

from volvqa import knowledge as K
from volvqa import labels as L
from volvqa.qa.templates.base import (
    _LESION_REF,
    Instance,
    _lesion_params,
    _named_lesions,
    _pancreatic_tumours,
    _yn,
    _z,
    register,
)


@register(id="med.splenomegaly_grade", category="Medical Reasoning", subtype="splenomegaly grading",
          answer_type="categorical", needs="complete spleen", rule="splenomegaly",
          requires=('organ:spleen',),
          paraphrases=("How would you grade the spleen size (normal, mild, moderate or severe splenomegaly)?",
                       "What is the splenomegaly grade?", "Grade the spleen: normal, mild, moderate or severe enlargement?"))
def splenomegaly_grade(ctx):
    s = ctx.complete("spleen")
    if s:
        yield Instance({}, K.splenomegaly_grade(s.volume_ml), {"spleen_volume_ml": s.volume_ml, "rule": "splenomegaly"},
                       [s.bbox_voxel], _z(ctx, s.centroid_mm), label_set=["normal", "mild", "moderate", "severe"])


@register(id="med.fatty_liver", category="Medical Reasoning", subtype="fatty liver", answer_type="binary",
          needs="liver and spleen", rule="fatty_liver_ls_ratio",
          requires=('organ:liver', 'organ:spleen', 'phase:non-contrast',),
          paraphrases=("Does the patient have a fatty liver?", "Is there hepatic steatosis by the liver-to-spleen ratio?",
                       "Is the liver fatty (liver/spleen attenuation below 1.0)?"))
def fatty_liver(ctx):
    liv, s = ctx.organ("liver"), ctx.organ("spleen")
    if liv and s and s.hu_mean > 1:
        r = liv.hu_mean / s.hu_mean
        yield Instance({}, _yn(r < K.FATTY_LIVER_LS_RATIO), {"liver_hu": liv.hu_mean, "spleen_hu": s.hu_mean, "ratio": r,
                                                             "rule": "fatty_liver_ls_ratio"},
                       [liv.bbox_voxel, s.bbox_voxel], _z(ctx, liv.centroid_mm))


@register(id="med.steatosis_grade", category="Medical Reasoning", subtype="hepatic steatosis grade",
          answer_type="categorical", needs="liver and spleen", rule="steatosis_grade",
          requires=('organ:liver', 'organ:spleen', 'phase:non-contrast',),
          paraphrases=("What is the grade of hepatic steatosis?",
                       "Grade the liver fat: none, mild, moderate or severe?"))
def steatosis(ctx):
    liv, s = ctx.organ("liver"), ctx.organ("spleen")
    if liv and s and s.hu_mean > 1:
        r = liv.hu_mean / s.hu_mean
        yield Instance({}, K.steatosis_grade(liv.hu_mean, r), {"liver_hu": liv.hu_mean, "ls_ratio": r,
                                                               "rule": "steatosis_grade"},
                       [liv.bbox_voxel], _z(ctx, liv.centroid_mm), label_set=list(K.STEATOSIS_ORDER))


@register(id="med.pancreatic_steatosis", category="Medical Reasoning", subtype="pancreatic steatosis",
          answer_type="binary", needs="pancreas and spleen", rule="pancreatic_steatosis",
          requires=('organ:pancreas', 'organ:spleen', 'phase:non-contrast',),
          paraphrases=("Is there pancreatic steatosis?", "Is the pancreas fatty (pancreas/spleen attenuation below 0.70)?"))
def pancreatic_steatosis(ctx):
    p, s = ctx.organ("pancreas"), ctx.organ("spleen")
    if p and s and s.hu_mean > 1:
        r = p.hu_mean / s.hu_mean
        yield Instance({}, _yn(r < K.PANCREATIC_STEATOSIS_PS_RATIO), {"pancreas_hu": p.hu_mean, "spleen_hu": s.hu_mean,
                                                                      "ratio": r, "rule": "pancreatic_steatosis"},
                       [p.bbox_voxel, s.bbox_voxel], _z(ctx, p.centroid_mm))


@register(id="med.pancreatic_t_stage", category="Medical Reasoning", subtype="pancreatic tumor T-stage",
          answer_type="categorical", needs="a pancreatic tumor (T4 needs the SMA, celiac trunk and CHA annotated)",
          rule="pancreas_t_stage", key_params=(),
          requires=('lesions:pancreas',),
          paraphrases=("What is the T-stage of the pancreatic tumor {basis} (AJCC 8th edition)?",
                       "Based on {basis}, what T category is the pancreatic tumor?"))
def pancreatic_t_stage(ctx):
    les = [x for x in ctx.lesions("pancreas") if x.kind == "tumor"]
    if les and ctx.annotated("pancreas"):
        x = les[0]
        arteries = all(ctx.status(v) != "unknown" for v in K.PANCREATIC_ARTERIES)
        stage = K.pancreas_t_stage(x.max_diameter_3d_mm)
        ev = {"greatest_dimension_mm": x.max_diameter_3d_mm, "rule": "pancreas_t_stage"}
        if arteries:
            touched = {v: x.vessel_contact.get(v, 0.0) for v in K.PANCREATIC_ARTERIES}
            ev["arterial_contact_deg"] = touched
            if any(a > 0 for a in touched.values()):
                stage = "T4"
        basis = "by size and arterial involvement" if arteries else "by size"
        yield Instance({"basis": basis}, stage, ev, [x.bbox_voxel], x.axial_slice,
                       label_set=["T1", "T2", "T3", "T4"] if arteries else ["T1", "T2", "T3"])


@register(id="med.pancreatic_resectability", category="Medical Reasoning", subtype="pancreatic lesion resectability",
          answer_type="categorical", needs="a pancreatic tumor and the SMA, celiac trunk, CHA, SMV and portal vein",
          rule="pancreatic_resectability",
          requires=('lesions:pancreas', 'organ:superior_mesenteric_artery', 'organ:celiac_trunk',
                    'organ:common_hepatic_artery', 'organ:superior_mesenteric_vein', 'organ:portal_vein'),
          paraphrases=("By its contact with the nearby arteries and veins, is the pancreatic tumor resectable, "
                       "borderline resectable or unresectable?",
                       "What is the resectability of the pancreatic tumor (resectable, borderline, unresectable)?"))
def pancreatic_resectability(ctx):
    les = [x for x in ctx.lesions("pancreas") if x.kind == "tumor"]
    if les and ctx.annotated("pancreas") and all(ctx.status(v) != "unknown" for v in L.PANCREATIC_VESSELS):
        x = les[0]
        contact = {v: x.vessel_contact.get(v, 0.0) for v in L.PANCREATIC_VESSELS}
        yield Instance({}, K.pancreatic_resectability(contact), {"vessel_contact_deg": contact,
                                                                 "encasement_deg": K.ENCASEMENT_DEG,
                                                                 "rule": "pancreatic_resectability"},
                       [x.bbox_voxel] + [ctx.organ(v).bbox_voxel for v in L.PANCREATIC_VESSELS if ctx.organ(v)],
                       x.axial_slice, label_set=["resectable", "borderline", "unresectable"])


@register(id="med.renal_mass_type", category="Medical Reasoning", subtype="renal mass characterization",
          answer_type="categorical", needs="a kidney lesion", rule="renal_cyst_hu",
          requires=('lesions:kidney', 'phase:non-contrast',),
          paraphrases=("How is the largest renal lesion characterised: simple cyst, hyperattenuating cyst, "
                       "indeterminate or solid?",
                       "By its attenuation and type, what is the largest kidney lesion: simple cyst, hyperattenuating "
                       "cyst, indeterminate or solid?"))
def renal_mass_type(ctx):
    les = ctx.lesions("kidney")
    if les and ctx.annotated("kidney"):
        x = les[0]
        yield Instance({}, K.renal_lesion_type(x.hu_mean, x.kind),
                       {"lesion_hu": x.hu_mean, "label": x.label, "simple_cyst_hu": list(K.RENAL_CYST_HU_RANGE),
                        "hyperattenuating_above_hu": K.RENAL_HYPERATTENUATING_HU, "rule": "renal_cyst_hu"},
                       [x.bbox_voxel], x.axial_slice,
                       label_set=["simple cyst", "hyperattenuating cyst", "indeterminate", "solid"])


@register(id="med.lesion_type", category="Medical Reasoning", subtype="{organ} lesion type", answer_type="categorical",
          needs="a lesion whose class says tumor or cyst",
          requires=('lesions:{organ}', 'kind:{organ}:cyst', 'kind:{organ}:tumor'),
          paraphrases=("Is the largest {organ} lesion a cyst or a tumor?", "What type is the largest {organ} lesion: cyst or tumor?"))
def lesion_type(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        les = [x for x in ctx.lesions(fam) if x.kind in ("cyst", "tumor")]
        if les and ctx.annotated(fam):
            x = les[0]
            yield Instance({"organ": fam}, x.kind, {"label": x.label, "lesion_hu": x.hu_mean}, [x.bbox_voxel],
                           x.axial_slice, label_set=["cyst", "tumor"])


@register(id="med.pancreatic_cyst_resection", category="Medical Reasoning", subtype="pancreatic cyst resection criterion",
          answer_type="binary", needs="a pancreatic cyst", rule="pancreatic_cyst_resection",
          requires=('lesions:pancreas',),
          paraphrases=("Does the largest pancreatic cyst meet the size criterion for resection (> 3 cm or > 3 ml)?",
                       "Is the pancreatic cyst large enough (over 3 cm or 3 ml) to consider surgery?"))
def pancreatic_cyst_resection(ctx):
    les = [x for x in ctx.lesions("pancreas") if x.kind == "cyst"]
    if les and ctx.annotated("pancreas"):
        x = les[0]
        ok = x.max_diameter_3d_mm > K.PANCREATIC_CYST_RESECTION_MM or x.volume_ml > K.PANCREATIC_CYST_RESECTION_ML
        yield Instance({}, _yn(ok), {"greatest_dimension_mm": x.max_diameter_3d_mm, "volume_ml": x.volume_ml,
                                     "rule": "pancreatic_cyst_resection"}, [x.bbox_voxel], x.axial_slice)


@register(id="med.pdac_vs_pnet", category="Medical Reasoning", subtype="PDAC vs PNET classification",
          answer_type="categorical", needs="a pancreatic tumour annotated as PDAC or PNET (both classes annotated)",
          rule="pdac_vs_pnet", requires=("lesions:pancreas", "organ:pancreatic_pdac", "organ:pancreatic_pnet"),
          paraphrases=("Is the largest pancreatic tumor more likely a PDAC or a PNET?",
                       "Classify the pancreatic tumor: ductal adenocarcinoma (PDAC) or neuroendocrine tumor (PNET)?"))
def pdac_vs_pnet(ctx):
    tum = _pancreatic_tumours(ctx)
    if tum and ctx.status("pancreatic_pdac") != "unknown" and ctx.status("pancreatic_pnet") != "unknown":
        x = tum[0]
        yield Instance({}, "PDAC" if x.label == "pancreatic_pdac" else "PNET",
                       {"label": x.label, "attenuation": x.attenuation, "hu_difference": x.hu_difference,
                        "part": x.location.get("part"), "rule": "pdac_vs_pnet"},
                       [x.bbox_voxel], x.axial_slice, label_set=["PDAC", "PNET"])


@register(id="med.portal_hypertension", category="Medical Reasoning", subtype="portal hypertension assessment",
          answer_type="binary", needs="complete spleen and liver segment masks", rule="portal_hypertension",
          requires=("organ:spleen", "parts:liver"),
          paraphrases=("Do the spleen size and the caudate-to-right-lobe ratio suggest portal hypertension?",
                       "Are there imaging signs of portal hypertension (splenomegaly with caudate hypertrophy)?"))
def portal_hypertension(ctx):
    s = ctx.complete("spleen")
    cr = ctx.findings.measures.get("caudate")
    if s and cr and ctx.has_parts("liver"):
        yes = s.volume_ml > K.SPLENOMEGALY_ML and cr["ratio"] > K.PORTAL_HYPERTENSION_CRL
        yield Instance({}, _yn(yes), {"spleen_volume_ml": s.volume_ml, "caudate_right_lobe_ratio": cr["ratio"],
                                      "caudate_width_mm": cr["caudate_width_mm"],
                                      "right_lobe_width_mm": cr["right_lobe_width_mm"],
                                      "segment_volumes_ml": cr["segment_volumes_ml"], "rule": "portal_hypertension"},
                       [s.bbox_voxel, ctx.organ("liver").bbox_voxel], cr["slice"])


@register(id="med.pseudocyst", category="Medical Reasoning", subtype="pseudocyst determination",
          answer_type="binary", needs="a pancreatic cyst", rule="pseudocyst_hu",
          requires=("lesions:pancreas", "kind:pancreas:cyst", 'phase:non-contrast',),
          paraphrases=("Is the largest pancreatic cyst more likely a pseudocyst than a mucinous cyst (by its HU)?",
                       "By its attenuation, is the pancreatic cyst a pseudocyst?"))
def pseudocyst(ctx):
    cysts = [x for x in ctx.lesions("pancreas") if x.kind == "cyst"]
    if cysts and ctx.annotated("pancreas"):
        x = cysts[0]
        yield Instance({}, _yn(x.hu_mean > K.PSEUDOCYST_HU), {"cyst_hu": x.hu_mean, "threshold_hu": K.PSEUDOCYST_HU,
                                                              "rule": "pseudocyst_hu"}, [x.bbox_voxel], x.axial_slice)


@register(id="med.each_lesion_type", category="Medical Reasoning", subtype="{organ} lesion cyst or tumor",
          answer_type="categorical", needs="lesions whose class says tumor or cyst", key_params=("organ",),
          requires=('lesions:{organ}', 'kind:{organ}:cyst', 'kind:{organ}:tumor'),
          paraphrases=("Is " + _LESION_REF + " a cyst or a tumor?", "What kind of lesion is " + _LESION_REF + "?"))
def each_lesion_type(ctx):
    for fam in ("liver", "kidney", "pancreas"):
        for x in _named_lesions(ctx, fam):
            if ctx.annotated(fam) and x.kind in ("cyst", "tumor"):
                yield Instance(_lesion_params(fam, x), x.kind, {"label": x.label, "lesion_hu": x.hu_mean},
                               [x.bbox_voxel], x.axial_slice, label_set=["cyst", "tumor"])
