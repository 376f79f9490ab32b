"""Structured report per case: a JSON record and a RadGPT-style text rendering.

Flags come from ``volvqa.knowledge`` (each with its source there).
"""
from __future__ import annotations

from volvqa import knowledge as K
from volvqa.findings.records import Findings, LesionFindings
from volvqa.phase import is_contrast

REPORT_ORGANS = ("liver", "spleen", "pancreas", "kidney_right", "kidney_left", "gallbladder", "stomach",
                 "colon", "aorta", "inferior_vena_cava")
_PRETTY_LUNG = {"lung": "Lungs"}
_PRETTY = {"kidney_right": "Right kidney", "kidney_left": "Left kidney", "inferior_vena_cava": "IVC"}


def organ_flags(f: Findings) -> dict[str, list[dict]]:
    """Clinical flags per organ: [{flag, value, rule}]. Incomplete organs get none."""
    out: dict[str, list[dict]] = {}
    o = f.organs
    spleen = o.get("spleen")
    if spleen and not spleen.touches_border:
        grade = K.splenomegaly_grade(spleen.volume_ml)
        if grade != "normal":
            out.setdefault("spleen", []).append({"flag": f"splenomegaly ({grade})",
                                                 "value": round(spleen.volume_ml, 1), "rule": "splenomegaly"})
    liver = o.get("liver")
    # Attenuation rules hold on unenhanced CT: no fat flags on a contrast-enhanced scan.
    unenhanced = not is_contrast(f.phase)
    if liver and unenhanced:
        if spleen and spleen.hu_mean > 0:
            ratio = liver.hu_mean / spleen.hu_mean
            if ratio < K.FATTY_LIVER_LS_RATIO:
                out.setdefault("liver", []).append({"flag": "fatty liver (L/S ratio)", "value": round(ratio, 2),
                                                    "rule": "fatty_liver_ls_ratio"})
        if liver.hu_mean < K.FATTY_LIVER_HU:
            out.setdefault("liver", []).append({"flag": "low liver attenuation (steatosis)",
                                                "value": round(liver.hu_mean, 1), "rule": "fatty_liver_hu"})
    pancreas = o.get("pancreas")
    if pancreas and spleen and spleen.hu_mean > 0 and unenhanced:
        ratio = pancreas.hu_mean / spleen.hu_mean
        if ratio < K.PANCREATIC_STEATOSIS_PS_RATIO:
            out.setdefault("pancreas", []).append({"flag": "pancreatic steatosis (P/S ratio)",
                                                   "value": round(ratio, 2), "rule": "pancreatic_steatosis"})
    for side in ("kidney_left", "kidney_right"):
        k = o.get(side)
        if k and not k.touches_border and k.length_mm and k.length_mm > K.KIDNEY_ENLARGED_LENGTH_MM:
            out.setdefault(side, []).append({"flag": "enlarged kidney", "value": round(k.length_mm, 1),
                                             "rule": "kidney_enlarged"})
    return out


def loc_text(les: LesionFindings) -> str:
    loc = les.location
    if "segments" in loc:
        return "segment" + ("s " if len(loc["segments"]) > 1 else " ") + ", ".join(map(str, loc["segments"]))
    if "part" in loc:
        return f"pancreatic {loc['part']}"
    if "pole" in loc:
        return f"{loc['pole']} pole"
    if "lobe" in loc:
        return LOBE_TEXT[loc["lobe"]]
    if "side" in loc and "third" in loc:
        return f"{loc['side']} lung, {loc['third']} third"
    return ""


LOBE_TEXT = {"lung_upper_lobe_left": "left upper lobe", "lung_lower_lobe_left": "left lower lobe",
             "lung_upper_lobe_right": "right upper lobe", "lung_middle_lobe_right": "right middle lobe",
             "lung_lower_lobe_right": "right lower lobe"}


def lesion_line(les: LesionFindings) -> str:
    loc = loc_text(les)
    att = {"hypo": "hypoattenuating", "hyper": "hyperattenuating", "iso": "isoattenuating"}.get(
        les.attenuation, les.density or "")
    words = " ".join(w for w in [att, les.kind] if w)
    return (f"{words}{' in ' + loc if loc else ''}, {les.long_axis_mm / 10:.1f} x {les.short_axis_mm / 10:.1f} cm "
            f"(slice {les.axial_slice}), volume {les.volume_ml:.1f} ml, mean {les.hu_mean:.0f} HU")


def _lesions_annotated(f: Findings, organ: str) -> bool | None:
    """Whether the masks annotate this organ's lesions (None: findings too old to say)."""
    if f.annotated is None:
        return None
    fam = "kidney" if organ.startswith("kidney") else organ
    from volvqa import labels as L
    return any(f.status(n) != "unknown" for n, o in L.LESION_ORGAN.items() if o == fam)


def structure_states(f: Findings, names=REPORT_ORGANS) -> dict[str, str]:
    """present | absent | not annotated | excluded by quality control (reason), per structure."""
    out = {}
    for n in names:
        st = f.status(n)
        if n in f.excluded:
            out[n] = f"excluded by quality control ({f.excluded[n]})"
        else:
            out[n] = {"present": "present", "absent": "absent", "unknown": "not annotated"}[st]
    return out


def structured_report(f: Findings) -> dict:
    flags = organ_flags(f)
    organs = {}
    for name, o in f.organs.items():
        organs[name] = {
            "volume_ml": None if o.touches_border else round(o.volume_ml, 1),
            "incomplete": o.touches_border,
            "hu_mean": round(o.hu_mean, 1),
            "flags": flags.get(name, []),
            "lesions": [les.lesion_id for les in f.lesions if les.organ == name],
        }
    return {
        "case_id": f.case_id,
        "organs": organs,
        "lesions": [{"id": les.lesion_id, "organ": les.organ, "text": lesion_line(les),
                     "long_axis_mm": round(les.long_axis_mm, 1), "short_axis_mm": round(les.short_axis_mm, 1),
                     "axial_slice": les.axial_slice, "volume_ml": round(les.volume_ml, 2),
                     "location": les.location, "attenuation": les.attenuation} for les in f.lesions],
        "rules": sorted({fl["rule"] for v in flags.values() for fl in v}),
        "structures": structure_states(f),
    }


def render_text(f: Findings) -> str:
    """RadGPT-style findings and impression."""
    rep = structured_report(f)
    lines = [f"CASE: {f.case_id}"] + ([f"PHASE: {f.phase}"] if f.phase != "unknown" else []) + ["", "FINDINGS:"]
    states = rep["structures"]
    names = [n for n in REPORT_ORGANS if n in f.organs or (f.annotated is not None and states[n] != "present")]
    names += sorted({les.organ for les in f.lesions if les.organ not in f.organs})
    impressions = []
    for name in names:
        pretty = _PRETTY.get(name, _PRETTY_LUNG.get(name, name.replace("_", " ").capitalize()))
        o = f.organs.get(name)
        les_here = [les for les in f.lesions if les.organ == name]
        if o is None and les_here and name not in REPORT_ORGANS:  # lesions of an organ with no mask (lungs)
            text = f"{pretty.upper()}: {len(les_here)} lesion{'s' if len(les_here) > 1 else ''}:"
            lines.append(text)
            lines += [f"  - Lesion {les.lesion_id}: {lesion_line(les)}." for les in les_here]
            big = max(les_here, key=lambda x: x.volume_ml)
            impressions.append(f"{pretty}: {len(les_here)} lesion{'s' if len(les_here) > 1 else ''}, "
                               f"largest {big.long_axis_mm / 10:.1f} x {big.short_axis_mm / 10:.1f} cm.")
            continue
        if o is not None:
            size = "incomplete in the field of view" if o.touches_border else f"volume {o.volume_ml:.1f} ml"
            text = f"{pretty.upper()}: {size}, mean attenuation {o.hu_mean:.0f} HU"
            if o.length_mm and name.startswith("kidney") and not o.touches_border:
                text += f", length {o.length_mm / 10:.1f} cm"
            for fl in rep["organs"][name]["flags"]:
                text += f"; {fl['flag']}"
                impressions.append(f"{pretty}: {fl['flag']}.")
        elif f.annotated is None:
            text = f"{pretty.upper()}: not segmented"
        else:
            text = f"{pretty.upper()}: {states.get(name, 'not annotated')}"
        annotated = _lesions_annotated(f, name)
        if les_here:
            text += f". {len(les_here)} lesion{'s' if len(les_here) > 1 else ''}:"
        elif o is None:
            text += "."
        elif annotated is False:
            text += ". Lesions not annotated."
        else:
            text += ". No lesion."
        lines.append(text)
        for les in les_here:
            lines.append(f"  - Lesion {les.lesion_id}: {lesion_line(les)}.")
        if les_here:
            big = max(les_here, key=lambda x: x.volume_ml)
            impressions.append(f"{pretty}: {len(les_here)} lesion{'s' if len(les_here) > 1 else ''}, "
                               f"largest {big.long_axis_mm / 10:.1f} x {big.short_axis_mm / 10:.1f} cm.")
    lines += ["", "IMPRESSION:"]
    lines += [f"{i}. {t}" for i, t in enumerate(impressions or ["No lesion or organ abnormality found by the masks."], 1)]
    return "\n".join(lines) + "\n"
