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
         "Hepatic steatosis grade on unenhanced CT, the worse of two criteria: none (G0) when liver >= 58 HU "
         "and L/S >= 1.0; mild (G1) liver 51-57 HU or L/S 0.8-1.0; moderate (G2) liver 39-50 HU or L/S 0.5-0.8; "
         "severe (G3) liver < 39 HU or L/S < 0.5.",
         "Kodama Y et al. Comparison of CT methods for determining the fat content of the liver. AJR "
         "2007;188:1307-1312, in the four grades of DeepTumorVQA's knowledge base (volvqa used three bands "
         "before: none >= 50 HU, mild 40-50, moderate-to-severe < 40)"),
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
         "Kidney length (bipolar, longest diameter) > 13.0 cm is enlarged for an adult (the report's flag; "
         "the enlargement question uses organ volume, rule organ_enlarged).",
         "Emamian SA et al. Kidney dimensions at sonography: correlation with age, sex, and "
         "habitus in 665 adult volunteers. AJR 1993;160:83-86 (mean 11.2 cm, upper range ~13 cm)"),
    Rule("organ_enlarged",
         "An organ is enlarged when its volume exceeds the adult normal range: liver > 1800 ml, spleen > 314.5 ml, "
         "one kidney > 260 ml, pancreas > 100 ml.",
         "Normal volumes as DeepTumorVQA's knowledge base gives them (radiologyassistant.nl: liver 1000-1800 ml, "
         "single kidney 130-260 ml, pancreas 40-100 ml; spleen: Bezerra AS et al., AJR 2005;184:1510-1513). "
         "Published kidney volumes agree (Cheong B et al., Clin J Am Soc Nephrol 2007;2:38-45: about 150-250 ml)"),
    Rule("pancreas_t_stage",
         "Pancreatic tumor T-stage: T4 when it involves the celiac axis, the superior mesenteric artery or the "
         "common hepatic artery (any contact, whatever its size); else by greatest dimension: T1 <= 2 cm, "
         "T2 > 2 and <= 4 cm, T3 > 4 cm. Without annotated arteries only the size rule can be applied (the "
         "question then says 'by size').",
         "AJCC Cancer Staging Manual, 8th ed., exocrine pancreas (Kakar S et al. 2017)"),
    Rule("renal_cyst_hu",
         "Renal lesion by attenuation on unenhanced CT: a lesion annotated as a tumour is solid; otherwise a "
         "simple cyst at -10 to 20 HU, a hyperattenuating cyst above 70 HU, indeterminate at 20-70 HU (or "
         "below -10 HU).",
         "Silverman SG et al. Bosniak Classification of Cystic Renal Masses, Version 2019. Radiology "
         "2019;292:475-488 (homogeneous -9 to 20 HU and >= 70 HU masses on unenhanced CT are benign cysts); "
         "DeepTumorVQA's knowledge base uses the same four classes"),
    Rule("kidney_lesion_asymmetry",
         "The kidney with more lesions; with as many on each side, the one with the larger total lesion volume.",
         "DeepTumorVQA's knowledge base: one kidney with substantially more lesion burden (volume or count)"),
    Rule("pancreatic_resectability",
         "Pancreatic tumour resectability from its contact with the named vessels (NCCN, simplified to what masks "
         "show): unresectable when it encases an artery (SMA, celiac trunk or common hepatic artery; > 180 degrees "
         "of its circumference); borderline resectable when it abuts an artery (<= 180 degrees) or encases the "
         "SMV or portal vein (> 180 degrees); resectable otherwise (no arterial contact, venous contact <= 180 "
         "degrees). Vein occlusion, contour irregularity and reconstructibility are not assessed.",
         "NCCN Clinical Practice Guidelines in Oncology: Pancreatic Adenocarcinoma, v2.2024 (resectability "
         "criteria); DeepTumorVQA's knowledge base states the same three classes"),
    Rule("pdac_vs_pnet",
         "PDAC is typically hypoattenuating with ill-defined margins and head-predominant (60-70% in the head); "
         "PNET is typically iso- to hyperattenuating, well circumscribed, more often in the body or tail. The "
         "answer is the lesion's annotated class; its attenuation and part are given as evidence.",
         "NCCN Guidelines, Pancreatic Adenocarcinoma 2024 and Neuroendocrine Tumors 2024; Lewis RB et al., "
         "Pancreatic endocrine tumors: radiologic-clinicopathologic correlation. RadioGraphics 2010;30:1445-1464"),
    Rule("portal_hypertension",
         "Portal hypertension is suggested when splenomegaly (spleen > 314.5 ml) and a caudate-to-right-lobe "
         "ratio > 0.65 occur together (caudate width over right-lobe width on the axial slice where the caudate, "
         "Couinaud segment 1, is largest; right lobe = segments 5-8). Collaterals and ascites, the other signs, "
         "are not assessed.",
         "Harbin WP et al. Diagnosis of cirrhosis based on regional changes in hepatic morphology. Radiology "
         "1980;135:273-283 (C/RL >= 0.65: 96% specific); Bezerra AS et al., AJR 2005. DeepTumorVQA's "
         "knowledge base states the ratio without saying how it is measured; the issue that asked for it "
         "suggested segment volumes: volvqa follows Harbin's widths (segment volumes are in the evidence)"),
    Rule("pseudocyst_hu",
         "A pancreatic cyst with a mean attenuation above 14.5 HU is more likely a pseudocyst; at or below "
         "14.5 HU a mucinous cystic lesion.",
         "PMID 21737901 (CT attenuation of pancreatic cysts, as cited by DeepTumorVQA's knowledge base)"),
    Rule("pancreatic_cyst_resection",
         "A pancreatic cyst > 3 cm (or > 3 ml here) meets a size criterion for surgical evaluation.",
         "Tanaka M et al. International consensus Fukuoka guidelines for IPMN, Pancreatology 2017"),
]}

RULES.update({r.key: r for r in [
    Rule("lung_nodule_density",
         "Lung lesion density by its mean attenuation: solid >= -300 HU, part-solid -600 to -300 HU, "
         "ground-glass < -600 HU (a volvqa approximation of the visual categories; partial volume lowers the "
         "mean of small nodules on thick slices).",
         "Ground-glass nodules average about -600 HU and lesions with solid components lie above it: Wang H et "
         "al., Iran J Radiol 2018;15:e61846 (mean CT cut-offs -581 and -464 HU); solid-component thresholds "
         "-400 to -160 HU: Lee JH et al., PLoS One 2018;13:e0205490; categories: Bankier AA et al. "
         "(Fleischner glossary), Radiology 2024;310:e232558"),
    Rule("fleischner_solid",
         "Fleischner Society 2017, incidental solid pulmonary nodule (adult, single): size as the average of "
         "long and short axis on the same slice, rounded to the nearest mm: < 6 mm (no routine follow-up in "
         "low-risk patients), 6-8 mm (CT at 6-12 months), > 8 mm (CT at 3 months, PET/CT or tissue sampling). "
         "Nodules are <= 30 mm; larger lesions are masses.",
         "MacMahon H et al. Guidelines for management of incidental pulmonary nodules detected on CT images: "
         "from the Fleischner Society 2017. Radiology 2017;284:228-243; Bankier AA et al. Recommendations for "
         "measuring pulmonary nodules at CT. Radiology 2017;285:584-600"),
    Rule("lung_rads_solid",
         "Lung-RADS v2022, solid nodule at baseline screening, by mean diameter to one decimal place: "
         "< 6 mm category 2, 6 to < 8 mm category 3, 8 to < 15 mm category 4A, >= 15 mm category 4B.",
         "American College of Radiology. Lung-RADS v2022 (2022); Christensen J et al., Radiology "
         "2024;310:e231436"),
    Rule("lung_t_category",
         "Lung cancer T category by the tumour's greatest dimension (AJCC 8th): T1a <= 1 cm, T1b > 1-2 cm, "
         "T1c > 2-3 cm, T2a > 3-4 cm, T2b > 4-5 cm, T3 > 5-7 cm, T4 > 7 cm (size only: invasion and "
         "separate nodules, which also set T, are not assessed from a mask).",
         "Amin MB et al. (eds). AJCC Cancer Staging Manual, 8th ed. Springer 2017; Rami-Porta R et al., "
         "J Thorac Oncol 2015;10:990-1003 (IASLC proposals for the T descriptors)"),
]})

SPLENOMEGALY_ML = 314.5
SPLENOMEGALY_GRADES_ML = ((314.5, "normal"), (500.0, "mild"), (800.0, "moderate"), (float("inf"), "severe"))
FATTY_LIVER_LS_RATIO = 1.0
FATTY_LIVER_HU = 40.0
STEATOSIS_HU_GRADES = ((39.0, "severe"), (51.0, "moderate"), (58.0, "mild"))      # upper limits (exclusive)
STEATOSIS_LS_GRADES = ((0.5, "severe"), (0.8, "moderate"), (1.0, "mild"))
STEATOSIS_ORDER = ("none", "mild", "moderate", "severe")
PANCREATIC_STEATOSIS_PS_RATIO = 0.70
KIDNEY_ENLARGED_LENGTH_MM = 130.0
PANCREAS_T_STAGE_MM = ((20.0, "T1"), (40.0, "T2"), (float("inf"), "T3"))
RENAL_CYST_HU_RANGE = (-10.0, 20.0)
RENAL_HYPERATTENUATING_HU = 70.0
PORTAL_HYPERTENSION_CRL = 0.65
ENCASEMENT_DEG = 180.0
PANCREATIC_ARTERIES = ("superior_mesenteric_artery", "celiac_trunk", "common_hepatic_artery")
PANCREATIC_VEINS = ("superior_mesenteric_vein", "portal_vein")
PSEUDOCYST_HU = 14.5
ENLARGED_ML = {"liver": 1800.0, "spleen": 314.5, "kidney_left": 260.0, "kidney_right": 260.0, "pancreas": 100.0}
PANCREATIC_CYST_RESECTION_MM = 30.0
PANCREATIC_CYST_RESECTION_ML = 3.0


def steatosis_grade(liver_hu: float, ls_ratio: float | None) -> str:
    """none | mild | moderate | severe: the worse of the liver-HU and L/S grades."""
    def grade(value, bands):
        for upper, name in bands:
            if value < upper:
                return name
        return "none"
    g = grade(liver_hu, STEATOSIS_HU_GRADES)
    if ls_ratio is not None:
        g2 = grade(ls_ratio, STEATOSIS_LS_GRADES)
        g = max(g, g2, key=STEATOSIS_ORDER.index)
    return g


def pancreatic_resectability(contact_deg: dict[str, float]) -> str:
    """resectable | borderline | unresectable from vessel contact angles (rule pancreatic_resectability)."""
    art = max((contact_deg.get(v, 0.0) for v in PANCREATIC_ARTERIES), default=0.0)
    vein = max((contact_deg.get(v, 0.0) for v in PANCREATIC_VEINS), default=0.0)
    if art > ENCASEMENT_DEG:
        return "unresectable"
    if art > 0 or vein > ENCASEMENT_DEG:
        return "borderline"
    return "resectable"


def pancreas_t_stage(greatest_mm: float) -> str:
    for upper, stage in PANCREAS_T_STAGE_MM:
        if greatest_mm <= upper:
            return stage
    return "T3"  # pragma: no cover


def renal_lesion_type(hu_mean: float, kind: str = "lesion") -> str:
    """simple cyst | hyperattenuating cyst | indeterminate | solid (rule renal_cyst_hu)."""
    if kind == "tumor":
        return "solid"
    lo, hi = RENAL_CYST_HU_RANGE
    if lo <= hu_mean <= hi:
        return "simple cyst"
    if hu_mean > RENAL_HYPERATTENUATING_HU:
        return "hyperattenuating cyst"
    return "indeterminate"


def splenomegaly_grade(volume_ml: float) -> str:
    for upper, grade in SPLENOMEGALY_GRADES_ML:
        if volume_ml < upper:
            return grade
    return "severe"  # pragma: no cover


# --- Mask quality control (volvqa.qc) ---------------------------------------------------------
# Generous plausibility limits: they catch broken masks (a 10x volume error, a
# 5 ml liver, a "liver" sitting on lung), not unusual patients (a big spleen,
# a fatty liver, an unenhanced or an arterial-phase scan). Each limit is
# wider than the published normal range by a margin for disease.

@dataclass(frozen=True)
class Plausible:
    volume_ml: tuple[float, float] | None   # complete organ; the upper limit also applies when cut by the scan edge
    median_hu: tuple[float, float] | None   # median HU of the mask's voxels, any contrast phase
    single: bool = False                     # one organ: more than 2 sizeable pieces is a broken mask
    max_fat_share: float | None = None       # solid organ: share of voxels at fat HU, when its median is >= 0 HU


QC_PLAUSIBLE: dict[str, Plausible] = {
    "liver": Plausible((400.0, 8000.0), (-80.0, 250.0), single=True, max_fat_share=0.10),
    "spleen": Plausible((15.0, 6000.0), (-20.0, 280.0), single=True, max_fat_share=0.10),
    "kidney_left": Plausible((20.0, 5000.0), (-50.0, 450.0), single=True, max_fat_share=0.20),
    "kidney_right": Plausible((20.0, 5000.0), (-50.0, 450.0), single=True, max_fat_share=0.20),
    "pancreas": Plausible((10.0, 400.0), (-100.0, 250.0), single=True),
    "gallbladder": Plausible((2.0, 500.0), (-50.0, 250.0), single=True),
    "aorta": Plausible(None, (-20.0, 900.0)),
    "inferior_vena_cava": Plausible(None, (-20.0, 700.0)),
}
#: Fat attenuation (Yoshizumi 1999 use -190..-30 HU; the upper end is lowered to stay clear of fatty parenchyma).
QC_FAT_HU = (-190.0, -50.0)
#: A piece of a single organ is sizeable when it holds this share of the organ.
QC_SIZEABLE_PIECE = 0.05
QC_MAX_SIZEABLE_PIECES = 2
#: Share of the mask's voxels that must lie inside its median-HU band.
QC_MIN_BAND_SHARE = 0.5
#: A left/right structure whose centroid lies beyond the midline by more than this (mm) is on the wrong side.
QC_SIDE_MARGIN_MM = 10.0
#: Two masks of a per-structure folder sharing more than this share of the smaller one.
QC_MAX_OVERLAP_SHARE = 0.10
#: Structures checked for side: those named *_left / *_right among these stems.
QC_SIDED = ("kidney", "lung", "adrenal_gland", "lung_upper_lobe", "lung_lower_lobe", "lung_middle_lobe", "autochthon",
            "iliopsoas", "gluteus_maximus", "gluteus_medius", "gluteus_minimus", "hip", "femur", "humerus",
            "scapula", "clavicula", "rib", "iliac_artery", "iliac_vena")
#: Organs that cannot be missing once their level is in the scan, and the
#: landmarks (any present) that show the level is: an empty mask of one is a
#: failed mask, not an absent organ.
QC_NOT_REMOVABLE = {"liver": ("gallbladder", "spleen"),
                    "aorta": ("liver", "spleen", "kidney_left", "kidney_right", "pancreas"),
                    "pancreas": ("spleen",)}
#: Pairwise agreement between two label sources (``volvqa qc --compare``).
QC_AGREE_MIN_DICE = 0.70
QC_AGREE_MAX_VOLUME_DIFF = 0.25      # |A - B| / mean(A, B)
QC_AGREE_MAX_CENTROID_MM = 15.0

RULES.update({r.key: r for r in [
    Rule("qc_volume",
         "Organ volume outside a generous adult range (liver 0.4-8 l, spleen 15 ml-6 l, kidney 20 ml-5 l each, "
         "pancreas 10-400 ml, gallbladder 2-500 ml) is an implausible mask (a unit or spacing error, a mask on "
         "the wrong structure); the lower limit only applies to an organ not cut by the scan's edge.",
         "Normal ranges: liver ~1.5 l (Heinemann A et al., Liver Transpl 1999;5:366-368); spleen 120-300 ml, "
         "massive splenomegaly > 1.5 l (Bezerra AS et al., AJR 2005;184:1510-1513); kidney 120-250 ml each, "
         "polycystic kidneys up to several litres (Cheong B et al., Clin J Am Soc Nephrol 2007;2:38-45; "
         "Grantham JJ et al., NEJM 2006;354:2122-2130); pancreas ~70 ml in adults (Saisho Y et al., "
         "Pancreas 2007;35:e25); limits widened by volvqa to stay clear of disease"),
    Rule("qc_hu",
         "Median HU of an organ mask outside its band for any contrast phase (liver -80..250, spleen -20..280, "
         "kidney -50..450, pancreas -100..250, gallbladder -50..250, aorta -20..900, IVC -20..700), or fewer "
         "than half its voxels inside the band, is a mask on other tissue (lung, fat, bone, air). A liver or "
         "spleen (kidney) mask with a median of 0 HU or more and over 10% (20%) of its voxels at fat "
         "attenuation (-190..-50 HU) covers fat around the organ: a misplaced mask (a solid organ's own voxels "
         "reach fat values only in severe steatosis, whose median is below 0 HU).",
         "Unenhanced values: Lamba R et al., AJR 2014;203:1013-1020; steatosis down to about -40 HU: Kodama Y "
         "et al., AJR 2007;188:1307-1312; enhanced parenchyma and vessels: Bae KT, Radiology 2010;256:32-61; "
         "fat -190..-30 HU: Yoshizumi T et al., Radiology 1999;211:283-286"),
    Rule("qc_side",
         "A structure named left (right) lies on the patient's left (right) of the midline (the spine's "
         "centroid, else the body's); beyond it by more than 10 mm it is mislabelled.",
         "Anatomy; situs inversus (about 1 in 10,000) is the exception: such a case is listed in qc.json"),
    Rule("qc_pieces",
         "A single organ (liver, spleen, a kidney, pancreas, gallbladder) in more than 2 pieces each holding "
         ">= 5% of it (26-connectivity, its lesions included) is a fragmented mask.",
         "volvqa rule in the spirit of Label Critic (Bassi PRAS et al., 2024: automatic checks that decide "
         "which AI-made labels can be trusted); splenules are far below 5% of the spleen"),
    Rule("qc_lesion_outside",
         "A lesion component (>= 50 mm^3) that does not touch its organ's mask is outside its organ.",
         "volvqa rule: an exophytic lesion still touches its organ"),
    Rule("qc_overlap",
         "Two masks of a per-structure folder sharing more than 10% of the smaller one contradict each other.",
         "volvqa rule: one voxel holds one structure"),
    Rule("qc_empty",
         "An empty mask of the liver, aorta or pancreas while a landmark at its level is present (gallbladder or "
         "spleen for the liver; liver, spleen, a kidney or pancreas for the aorta; spleen for the pancreas) is "
         "a failed mask, not an absent organ.",
         "Anatomy: these organs are not removed whole (a liver transplant replaces the liver)"),
    Rule("qc_agreement",
         "Two label sources agree on a structure when Dice >= 0.70, the volume difference is <= 25% of their "
         "mean and the centroids lie within 15 mm; both absent also agree.",
         "volvqa thresholds; Dice below 0.7 is the usual mark of a failed organ segmentation (e.g. "
         "Wasserthal J et al., Radiology: AI 2023 report organ Dice mostly > 0.9)"),
]})


# --- Lung ---------------------------------------------------------------------------------------------

LUNG_DENSITY_HU = ((-600.0, "ground-glass"), (-300.0, "part-solid"), (float("inf"), "solid"))
FLEISCHNER_MAX_NODULE_MM = 30.0
LUNG_RADS_SOLID_MM = ((6.0, "2"), (8.0, "3"), (15.0, "4A"), (float("inf"), "4B"))
LUNG_T_MM = ((10.0, "T1a"), (20.0, "T1b"), (30.0, "T1c"), (40.0, "T2a"), (50.0, "T2b"), (70.0, "T3"),
             (float("inf"), "T4"))


def lung_density(mean_hu: float) -> str:
    for upper, name in LUNG_DENSITY_HU:
        if mean_hu < upper:
            return name
    return "solid"  # pragma: no cover


def nodule_mean_diameter_mm(long_mm: float, short_mm: float) -> float:
    """Fleischner / Lung-RADS nodule size: the average of long and short axis."""
    return (long_mm + short_mm) / 2.0


def fleischner_category(long_mm: float, short_mm: float) -> str:
    """Size category of a solid nodule: the average diameter rounded to the nearest mm (half up)."""
    d = float(int(nodule_mean_diameter_mm(long_mm, short_mm) + 0.5))
    if d < 6.0:
        return "< 6 mm"
    return "6-8 mm" if d <= 8.0 else "> 8 mm"


def lung_rads_category(long_mm: float, short_mm: float) -> str:
    """Lung-RADS v2022 baseline category of a solid nodule: mean diameter to one decimal place."""
    d = int(nodule_mean_diameter_mm(long_mm, short_mm) * 10 + 0.5) / 10.0
    for upper, name in LUNG_RADS_SOLID_MM:
        if d < upper:
            return name
    return "4B"  # pragma: no cover


def lung_t_category(greatest_mm: float) -> str:
    for upper, name in LUNG_T_MM:
        if greatest_mm <= upper:
            return name
    return "T4"  # pragma: no cover
