"""What a template sees of one case: its findings and what its masks annotate.

Every structure is present, absent (annotated, no voxel) or unknown (not
annotated, or excluded by mask quality control); see ``Findings.status``.
Templates ask only about present or absent structures.
"""
from __future__ import annotations

from dataclasses import dataclass

from volvqa import labels as L
from volvqa.findings.records import Findings, LesionFindings, OrganFindings

ORGAN_TEXT = {"liver": "liver", "spleen": "spleen", "kidney_left": "left kidney", "kidney_right": "right kidney",
              "pancreas": "pancreas", "gallbladder": "gallbladder", "stomach": "stomach", "kidney": "kidney",
              "colon": "colon", "aorta": "aorta", "inferior_vena_cava": "inferior vena cava",
              "small_bowel": "small bowel", "urinary_bladder": "urinary bladder", "heart": "heart",
              "brain": "brain", "prostate": "prostate", "thyroid_gland": "thyroid gland",
              "lung_upper_lobe_left": "left upper lobe", "lung_lower_lobe_left": "left lower lobe",
              "lung_upper_lobe_right": "right upper lobe", "lung_middle_lobe_right": "right middle lobe",
              "lung_lower_lobe_right": "right lower lobe", "lung": "lung", "lung_left": "left lung",
              "lung_right": "right lung", "esophagus": "esophagus"}

#: Lesion classes of each organ family (``kidney`` covers both sides).
FAMILY_LESIONS: dict[str, tuple[str, ...]] = {}
for _les, _org in L.LESION_ORGAN.items():
    FAMILY_LESIONS.setdefault(_org, ())
    FAMILY_LESIONS[_org] += (_les,)

#: Parameters of grouped names that stand for several structures.
GROUPS = {"kidney": ("kidney_left", "kidney_right"), "kidneys": ("kidney_left", "kidney_right"),
          "liver and spleen": ("liver", "spleen")}
#: Organ families whose lesion questions need no organ mask: a lung lesion's
#: side and lobe come from lobe masks when there are any, else from the
#: midline and the aerated lung field (``volvqa.findings.extract``).
ORGAN_OPTIONAL_FAMILIES = ("lung",)
LUNG_STRUCTURES = (*L.LUNG_LOBES, *L.WHOLE_LUNGS)


@dataclass
class CaseContext:
    case_id: str
    findings: Findings
    #: Answering (not generating): templates that pick one of several parameters
    #: for a case yield every parameter instead.
    exhaustive: bool = False

    def organ(self, name: str) -> OrganFindings | None:
        if name in self.findings.excluded:
            return None
        return self.findings.organs.get(name)

    def complete(self, name: str) -> OrganFindings | None:
        """The organ if present and not cut by the scan's edge."""
        o = self.organ(name)
        return o if o is not None and not o.touches_border else None

    def status(self, name: str) -> str:
        """present | absent | unknown; a group (``kidney``) is present when any
        member is, unknown when any member is unknown."""
        if name == "lung":  # any lung structure: lobes, whole lungs or one per side
            states = [self.findings.status(m) for m in LUNG_STRUCTURES]
            if "present" in states:
                return "present"
            return "absent" if "absent" in states else "unknown"
        members = GROUPS.get(name, (name,))
        states = [self.findings.status(m) for m in members]
        if "present" in states:
            return "present"
        return "unknown" if "unknown" in states else "absent"

    def lesions(self, family: str) -> list[LesionFindings]:
        """Lesions of an organ family ('kidney' covers both sides), largest first."""
        les = [x for x in self.findings.lesions if (x.organ == family or
               (family == "kidney" and x.organ.startswith("kidney_"))) and x.label not in self.findings.excluded]
        return sorted(les, key=lambda x: (-x.volume_ml, x.lesion_id))

    def annotated(self, family: str) -> bool:
        """Whether the masks annotate this organ family's lesions, so that "no
        lesion" is an answer: some lesion class of the family is annotated
        (or has voxels), and the organ itself is not unknown."""
        if self.status(family) == "unknown" and family not in ORGAN_OPTIONAL_FAMILIES:
            return False
        return any(self.findings.status(n) != "unknown" for n in FAMILY_LESIONS.get(family, ()))

    def kind_annotated(self, family: str, kind: str) -> bool:
        """Whether lesions of one kind (``tumor``, ``cyst``) are annotated as such."""
        names = [n for n in FAMILY_LESIONS.get(family, ()) if n.endswith(f"_{kind}") or
                 (kind == "tumor" and n.endswith(("_pdac", "_pnet")))]
        return self.annotated(family) and any(self.findings.status(n) != "unknown" for n in names)

    def slice_of(self, centroid_mm) -> int | None:
        """The axial slice index (z) through a point in world RAS mm (a key slice to show)."""
        import numpy as np
        aff = np.asarray(self.findings.affine_ras_mm)
        idx = np.linalg.solve(aff[:3, :3], np.asarray(centroid_mm) - aff[:3, 3])
        return int(round(float(idx[2])))

    def touching(self, name: str) -> set[str]:
        """Structures sharing a voxel face with ``name``."""
        return {b if a == name else a for a, b in self.findings.contacts if name in (a, b)}

    def has_parts(self, parent: str) -> bool:
        """Whether the masks delineate this organ's sub-segments (all of them)."""
        names = [p for p, par in L.PART_PARENT.items() if par == parent]
        return all(self.findings.status(n) != "unknown" for n in names)


def organ_text(name: str) -> str:
    """Words for a structure; ``a+b+c`` (organ families) reads "a, b and c"."""
    if "+" in name:
        words = [organ_text(n) + ("s" if n == "kidney" else "") for n in name.split("+")]
        return ", ".join(words[:-1]) + " and " + words[-1]
    return ORGAN_TEXT.get(name, name.replace("_", " "))
