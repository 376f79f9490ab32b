"""What a template sees of one case: its findings and which lesions the dataset annotates."""
from __future__ import annotations

from dataclasses import dataclass, field

from volvqa.findings.records import Findings, LesionFindings, OrganFindings

ORGAN_TEXT = {"liver": "liver", "spleen": "spleen", "kidney_left": "left kidney", "kidney_right": "right kidney",
              "pancreas": "pancreas", "gallbladder": "gallbladder", "stomach": "stomach", "kidney": "kidney",
              "colon": "colon", "aorta": "aorta", "inferior_vena_cava": "inferior vena cava",
              "small_bowel": "small bowel", "urinary_bladder": "urinary bladder", "heart": "heart",
              "brain": "brain", "prostate": "prostate", "thyroid_gland": "thyroid gland",
              "lung_upper_lobe_left": "left upper lung lobe", "esophagus": "esophagus"}


@dataclass
class CaseContext:
    case_id: str
    findings: Findings
    annotated_lesion_organs: set[str] = field(default_factory=lambda: {"liver", "kidney", "pancreas"})
    has_parts: bool = False
    #: Answering (not generating): templates that pick one of several parameters
    #: for a case yield every parameter instead.
    exhaustive: bool = False

    def organ(self, name: str) -> OrganFindings | None:
        return self.findings.organs.get(name)

    def complete(self, name: str) -> OrganFindings | None:
        """The organ if present and not cut by the scan's edge."""
        o = self.findings.organs.get(name)
        return o if o is not None and not o.touches_border else None

    def lesions(self, family: str) -> list[LesionFindings]:
        """Lesions of an organ family ('kidney' covers both sides), largest first."""
        les = [x for x in self.findings.lesions if x.organ == family or
               (family == "kidney" and x.organ.startswith("kidney_"))]
        return sorted(les, key=lambda x: (-x.volume_ml, x.lesion_id))

    def annotated(self, family: str) -> bool:
        return family in self.annotated_lesion_organs


def organ_text(name: str) -> str:
    return ORGAN_TEXT.get(name, name.replace("_", " "))
