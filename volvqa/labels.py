"""Canonical label vocabulary.

Organ names follow TotalSegmentator v2's ``total`` task (class map from
TotalSegmentator, Apache-2.0, Wasserthal et al., Radiology: AI 2023). Lesion
names follow DESIGN.md. Every dataset maps its own ids or file names onto
these names through a label spec (see ``resolve_label_spec``), so nothing
downstream sees a dataset's private names.

Canonical ids: a LabelMap produced by ``volvqa.io`` always uses the ids of
``CANONICAL_IDS`` (stable across datasets, so trained networks and caches
agree). They equal TotalSegmentator ``total`` ids for the 117 organs, except
that ``total`` splits kidney cysts by side (23, 24): here side is a lesion
property, so 23 is ``kidney_cyst`` and 24 is unused.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from volvqa.errors import VolvqaInputError, shown
from volvqa.safe_yaml import load_yaml

#: TotalSegmentator v2 ``total`` task: id -> name (117 classes).
TOTALSEG_TOTAL: dict[int, str] = {
    1: "spleen",
    2: "kidney_right",
    3: "kidney_left",
    4: "gallbladder",
    5: "liver",
    6: "stomach",
    7: "pancreas",
    8: "adrenal_gland_right",
    9: "adrenal_gland_left",
    10: "lung_upper_lobe_left",
    11: "lung_lower_lobe_left",
    12: "lung_upper_lobe_right",
    13: "lung_middle_lobe_right",
    14: "lung_lower_lobe_right",
    15: "esophagus",
    16: "trachea",
    17: "thyroid_gland",
    18: "small_bowel",
    19: "duodenum",
    20: "colon",
    21: "urinary_bladder",
    22: "prostate",
    23: "kidney_cyst_left",
    24: "kidney_cyst_right",
    25: "sacrum",
    26: "vertebrae_S1",
    27: "vertebrae_L5",
    28: "vertebrae_L4",
    29: "vertebrae_L3",
    30: "vertebrae_L2",
    31: "vertebrae_L1",
    32: "vertebrae_T12",
    33: "vertebrae_T11",
    34: "vertebrae_T10",
    35: "vertebrae_T9",
    36: "vertebrae_T8",
    37: "vertebrae_T7",
    38: "vertebrae_T6",
    39: "vertebrae_T5",
    40: "vertebrae_T4",
    41: "vertebrae_T3",
    42: "vertebrae_T2",
    43: "vertebrae_T1",
    44: "vertebrae_C7",
    45: "vertebrae_C6",
    46: "vertebrae_C5",
    47: "vertebrae_C4",
    48: "vertebrae_C3",
    49: "vertebrae_C2",
    50: "vertebrae_C1",
    51: "heart",
    52: "aorta",
    53: "pulmonary_vein",
    54: "brachiocephalic_trunk",
    55: "subclavian_artery_right",
    56: "subclavian_artery_left",
    57: "common_carotid_artery_right",
    58: "common_carotid_artery_left",
    59: "brachiocephalic_vein_left",
    60: "brachiocephalic_vein_right",
    61: "atrial_appendage_left",
    62: "superior_vena_cava",
    63: "inferior_vena_cava",
    64: "portal_vein_and_splenic_vein",
    65: "iliac_artery_left",
    66: "iliac_artery_right",
    67: "iliac_vena_left",
    68: "iliac_vena_right",
    69: "humerus_left",
    70: "humerus_right",
    71: "scapula_left",
    72: "scapula_right",
    73: "clavicula_left",
    74: "clavicula_right",
    75: "femur_left",
    76: "femur_right",
    77: "hip_left",
    78: "hip_right",
    79: "spinal_cord",
    80: "gluteus_maximus_left",
    81: "gluteus_maximus_right",
    82: "gluteus_medius_left",
    83: "gluteus_medius_right",
    84: "gluteus_minimus_left",
    85: "gluteus_minimus_right",
    86: "autochthon_left",
    87: "autochthon_right",
    88: "iliopsoas_left",
    89: "iliopsoas_right",
    90: "brain",
    91: "skull",
    92: "rib_left_1",
    93: "rib_left_2",
    94: "rib_left_3",
    95: "rib_left_4",
    96: "rib_left_5",
    97: "rib_left_6",
    98: "rib_left_7",
    99: "rib_left_8",
    100: "rib_left_9",
    101: "rib_left_10",
    102: "rib_left_11",
    103: "rib_left_12",
    104: "rib_right_1",
    105: "rib_right_2",
    106: "rib_right_3",
    107: "rib_right_4",
    108: "rib_right_5",
    109: "rib_right_6",
    110: "rib_right_7",
    111: "rib_right_8",
    112: "rib_right_9",
    113: "rib_right_10",
    114: "rib_right_11",
    115: "rib_right_12",
    116: "sternum",
    117: "costal_cartilages",
}

#: Lesion classes and the organ each belongs to. ``kidney_lesion`` etc. are
#: the generic class when a dataset does not say tumor or cyst.
LESION_ORGAN: dict[str, str] = {
    "liver_lesion": "liver",
    "liver_tumor": "liver",
    "liver_cyst": "liver",
    "kidney_lesion": "kidney",
    "kidney_tumor": "kidney",
    "kidney_cyst": "kidney",
    "pancreatic_lesion": "pancreas",
    "pancreatic_pdac": "pancreas",
    "pancreatic_pnet": "pancreas",
    "pancreatic_cyst": "pancreas",
    "colon_lesion": "colon",
    "lung_nodule": "lung",
    "spleen_lesion": "spleen",
    "lung_tumor": "lung",          # a mass (primary lung cancer); new names go last: ids stay stable
}

#: TotalSegmentator's lung lobes (organs of the ``lung`` family).
LUNG_LOBES = ("lung_upper_lobe_left", "lung_lower_lobe_left", "lung_upper_lobe_right", "lung_middle_lobe_right",
              "lung_lower_lobe_right")
#: Whole lungs, for datasets that do not split lobes: both, or one per side.
WHOLE_LUNGS = ("lung", "lung_left", "lung_right")

#: Sub-segments live in LabelMap.parts (they overlap organs and lesions).
PART_IDS: dict[str, int] = {
    **{f"liver_segment_{i}": i for i in range(1, 9)},
    "pancreas_head": 9,
    "pancreas_body": 10,
    "pancreas_tail": 11,
}
PART_PARENT: dict[str, str] = {
    **{f"liver_segment_{i}": "liver" for i in range(1, 9)},
    "pancreas_head": "pancreas",
    "pancreas_body": "pancreas",
    "pancreas_tail": "pancreas",
}

#: The vessels pancreatic resectability and T4 rest on (AbdomenAtlas-style names), appended last so ids stay.
PANCREATIC_VESSELS = ("superior_mesenteric_artery", "celiac_trunk", "common_hepatic_artery",
                      "superior_mesenteric_vein", "portal_vein")
_extra = ["liver_vessels", "lung", *LESION_ORGAN, "lung_left", "lung_right", *PANCREATIC_VESSELS]
CANONICAL_IDS: dict[str, int] = {}
for _i, _n in TOTALSEG_TOTAL.items():
    if _n == "kidney_cyst_left":
        CANONICAL_IDS["kidney_cyst"] = _i
    elif _n == "kidney_cyst_right":
        continue
    else:
        CANONICAL_IDS[_n] = _i
for _n in _extra:
    if _n not in CANONICAL_IDS:
        CANONICAL_IDS[_n] = 118 + len([k for k in CANONICAL_IDS if CANONICAL_IDS[k] >= 118])
CANONICAL_NAMES: dict[int, str] = {i: n for n, i in CANONICAL_IDS.items()}

#: Names some datasets use for canonical structures (AbdomenAtlas, MSD,
#: KiTS, TotalSegmentator side-split cysts). Used by the ``auto`` spec.
ALIASES: dict[str, str] = {
    "gall_bladder": "gallbladder",
    "postcava": "inferior_vena_cava",
    "ivc": "inferior_vena_cava",
    "kidney_cyst_left": "kidney_cyst",
    "kidney_cyst_right": "kidney_cyst",
    "lung_nodules": "lung_nodule",
    "pancreas_tumor": "pancreatic_lesion",
    "pancreatic_tumor": "pancreatic_lesion",
    "liver_tumour": "liver_tumor",
    "colon_cancer_primaries": "colon_lesion",
    "kidney_tumour": "kidney_tumor",
    "lung_tumour": "lung_tumor",
    "lung_cancer": "lung_tumor",
    "lung_mass": "lung_tumor",
    "nodule": "lung_nodule",
    "left_lung": "lung_left",
    "right_lung": "lung_right",
    "lungs": "lung",
    "sma": "superior_mesenteric_artery",
    "smv": "superior_mesenteric_vein",
    "celiac_artery": "celiac_trunk",
    "celiac_axis": "celiac_trunk",
    "coeliac_trunk": "celiac_trunk",
    "cha": "common_hepatic_artery",
    "hepatic_artery_common": "common_hepatic_artery",
}

#: Name that stands for both kidneys in one mask (KiTS); the loader splits
#: it into kidney_left / kidney_right by side.
BILATERAL_KIDNEY = "kidney"

IGNORE = "ignore"


def is_lesion(name: str) -> bool:
    return name in LESION_ORGAN


def is_part(name: str) -> bool:
    return name in PART_IDS


def canonical_name(name: str) -> str | None:
    """The canonical name for ``name`` (itself or an alias), else None."""
    if name in CANONICAL_IDS or name in PART_IDS or name == BILATERAL_KIDNEY:
        return name
    return ALIASES.get(name)


BUILTIN_SPECS: dict[str, dict] = {
    "totalsegmentator": {i: canonical_name(n) for i, n in TOTALSEG_TOTAL.items()},
    "totalsegmentator_liver_segments": {i: f"liver_segment_{i}" for i in range(1, 9)},
    "volvqa_parts": {i: n for n, i in PART_IDS.items()},
}


def expand_names(name: str) -> tuple[str, ...]:
    """Canonical structures a canonical name stands for (``kidney``: both kidneys)."""
    if name == BILATERAL_KIDNEY:
        return ("kidney_left", "kidney_right")
    return (name,)


def spec_annotates(spec) -> frozenset[str] | None:
    """Structures a resolved label spec maps onto (its annotation scope), or
    None for ``auto``/``canonical``, whose scope is what the files hold."""
    if not isinstance(spec, Mapping):
        return None
    return frozenset(x for v in spec.values() if v and v != IGNORE for x in expand_names(v))


def check_structure_names(names, where=None) -> frozenset[str]:
    """Validate a list of canonical structure names (``annotates:``)."""
    if isinstance(names, str):
        names = [n for n in names.replace(",", " ").split() if n]
    if not isinstance(names, (list, tuple, set, frozenset)):
        raise VolvqaInputError(where, "annotates must be a list of canonical structure names")
    out, bad = set(), []
    for n in names:
        c = canonical_name(str(n))
        if c is None:
            bad.append(str(n))
        else:
            out.update(expand_names(c))
    if bad:
        raise VolvqaInputError(where, f"annotates names structures outside the canonical vocabulary: "
                               f"{', '.join(bad[:10])}")
    return frozenset(out)


def resolve_label_spec(spec, where: str | os.PathLike | None = None) -> dict | str:
    """Turn a label spec into a mapping ``dataset id or file stem -> canonical name``.

    ``spec`` may be a mapping, the name of a built-in spec
    (``totalsegmentator``, ``totalsegmentator_liver_segments``), ``canonical``
    (ids are canonical ids / file stems are canonical names), ``auto`` (file
    stems or names are canonical names or known aliases), or a path to a
    YAML/JSON file holding a mapping. Values must be canonical names or
    ``ignore``. Returns the mapping, or the string ``auto``/``canonical``.
    """
    if spec is None:
        return "auto"
    if isinstance(spec, (str, os.PathLike)):
        s = os.fspath(spec)
        if s in ("auto", "canonical"):
            return s
        if s in BUILTIN_SPECS:
            return dict(BUILTIN_SPECS[s])
        p = Path(s)
        if p.suffix.lower() in (".yaml", ".yml", ".json"):
            if not p.is_file():
                raise VolvqaInputError(p, "label spec file not found")
            try:
                text = p.read_text()
                data = json.loads(text) if p.suffix.lower() == ".json" else load_yaml(text, p)
            except (OSError, UnicodeDecodeError) as e:
                raise VolvqaInputError(p, f"unreadable label spec ({type(e).__name__})") from None
            except ValueError as e:
                if isinstance(e, VolvqaInputError):
                    raise
                raise VolvqaInputError(p, f"label spec is not valid JSON ({str(e)[:120]})") from None
            if isinstance(data, dict) and "labels" in data and isinstance(data["labels"], dict):
                data = data["labels"]
            return resolve_label_spec(data, where=p)
        raise VolvqaInputError(
            where, f"unknown label spec {shown(s)}: use a mapping, a .yaml/.json file, "
            f"'auto', 'canonical' or one of {sorted(BUILTIN_SPECS)}")
    if not isinstance(spec, Mapping):
        raise VolvqaInputError(where, f"label spec must be a mapping, got {type(spec).__name__}")
    out: dict = {}
    bad = []
    for k, v in spec.items():
        key = int(k) if isinstance(k, str) and k.strip().isdigit() else k
        if v is None or v == IGNORE:
            out[key] = IGNORE
            continue
        c = canonical_name(str(v))
        if c is None:
            bad.append(f"{k}->{v}")
        out[key] = c
    if bad:
        raise VolvqaInputError(where, "label spec maps onto names outside the canonical "
                               f"vocabulary: {', '.join(bad[:10])}")
    return out
