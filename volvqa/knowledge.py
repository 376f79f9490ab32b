"""Clinical thresholds, in one table, each with its source.

Every rule that turns a measurement into a clinical statement (a report
flag, a medical-reasoning answer) reads its numbers from here, and items
that use a rule cite it by its key.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    key: str
    statement: str
    source: str


RULES: dict[str, Rule] = {r.key: r for r in [
    Rule("splenomegaly",
         "Spleen volume > 314.5 ml is splenomegaly; 314.5-500 ml mild, 500-800 ml moderate, > 800 ml severe.",
         "Bezerra AS et al. Determination of splenomegaly by CT: is there a place for a single "
         "measurement? AJR 2005;184:1510-1513"),
    Rule("fatty_liver_ls_ratio",
         "Liver-to-spleen attenuation ratio < 1.0 on unenhanced CT indicates hepatic steatosis.",
         "Kodama Y et al. Comparison of CT methods for determining the fat content of the liver. "
         "AJR 2007;188:1307-1312; Iwasaki M et al. Radiology 2004;230:845-850"),
    Rule("steatosis_grade",
         "Hepatic steatosis grade on unenhanced CT: none when liver >= 50 HU and L/S >= 1.0; mild when "
         "liver 40-50 HU or L/S < 1.0; moderate-to-severe when liver < 40 HU.",
         "Kodama Y et al. AJR 2007;188:1307-1312 (liver HU and L/S bands vs histologic fat fraction); "
         "Boyce CJ et al. AJR 2010;194:623-628"),
    Rule("lesion_outlier",
         "A dominant lesion: the largest is at least 3 times the volume of the second largest, with >= 3 lesions.",
         "DeepTumorVQA visual-reasoning definition (Chen et al. 2025)"),
    Rule("liver_lesion_clustering",
         "Liver lesions are highly clustered when > 50% lie in one Couinaud segment, somewhat clustered "
         "when the top two segments hold >= 75%, else widely distributed.",
         "DeepTumorVQA visual-reasoning definition (Chen et al. 2025)"),
    Rule("fatty_liver_hu",
         "Liver attenuation < 40 HU on unenhanced CT indicates moderate-to-severe steatosis (>= 30% fat); "
         "40-50 HU mild.",
         "Kodama Y et al. AJR 2007;188:1307-1312; Boyce CJ et al. AJR 2010;194:623-628"),
    Rule("pancreatic_steatosis",
         "Pancreas-to-spleen attenuation ratio < 0.70 indicates pancreatic steatosis.",
         "Kim SY et al. Quantitative assessment of pancreatic fat by using unenhanced CT: "
         "pathologic correlation and clinical implications. Radiology 2014;271:104-112"),
    Rule("kidney_enlarged",
         "Kidney length (bipolar, longest diameter) > 13.0 cm is enlarged for an adult.",
         "Emamian SA et al. Kidney dimensions at sonography: correlation with age, sex, and "
         "habitus in 665 adult volunteers. AJR 1993;160:83-86 (mean 11.2 cm, upper range ~13 cm)"),
    Rule("pancreas_t_stage",
         "Pancreatic tumor T-stage by greatest dimension: T1 <= 2 cm, T2 > 2 and <= 4 cm, T3 > 4 cm "
         "(T4: arterial involvement, not assessed from size).",
         "AJCC Cancer Staging Manual, 8th ed., exocrine pancreas (Kakar S et al. 2017)"),
    Rule("renal_cyst_hu",
         "A homogeneous renal lesion of -10 to 20 HU on unenhanced CT is a simple cyst (benign); "
         "higher attenuation needs characterisation as solid.",
         "Silverman SG et al. Bosniak Classification of Cystic Renal Masses, Version 2019. "
         "Radiology 2019;292:475-488"),
    Rule("pancreatic_cyst_resection",
         "A pancreatic cyst > 3 cm (or > 3 ml here) meets a size criterion for surgical evaluation.",
         "Tanaka M et al. International consensus Fukuoka guidelines for IPMN, Pancreatology 2017"),
]}

SPLENOMEGALY_ML = 314.5
SPLENOMEGALY_GRADES_ML = ((314.5, "normal"), (500.0, "mild"), (800.0, "moderate"), (float("inf"), "severe"))
FATTY_LIVER_LS_RATIO = 1.0
FATTY_LIVER_HU = 40.0
MILD_STEATOSIS_HU = 50.0
PANCREATIC_STEATOSIS_PS_RATIO = 0.70
KIDNEY_ENLARGED_LENGTH_MM = 130.0
PANCREAS_T_STAGE_MM = ((20.0, "T1"), (40.0, "T2"), (float("inf"), "T3"))
RENAL_CYST_HU_RANGE = (-10.0, 20.0)
PANCREATIC_CYST_RESECTION_MM = 30.0
PANCREATIC_CYST_RESECTION_ML = 3.0


def steatosis_grade(liver_hu: float, ls_ratio: float | None) -> str:
    if liver_hu < FATTY_LIVER_HU:
        return "moderate-to-severe"
    if liver_hu < MILD_STEATOSIS_HU or (ls_ratio is not None and ls_ratio < FATTY_LIVER_LS_RATIO):
        return "mild"
    return "none"


def pancreas_t_stage(greatest_mm: float) -> str:
    for upper, stage in PANCREAS_T_STAGE_MM:
        if greatest_mm <= upper:
            return stage
    return "T3"  # pragma: no cover


def renal_lesion_type(hu_mean: float) -> str:
    lo, hi = RENAL_CYST_HU_RANGE
    return "cyst" if lo <= hu_mean <= hi else "solid"


def splenomegaly_grade(volume_ml: float) -> str:
    for upper, grade in SPLENOMEGALY_GRADES_ML:
        if volume_ml < upper:
            return grade
    return "severe"  # pragma: no cover
