"""Findings: organ and lesion geometry, attenuation, location, relations, report."""
from volvqa.findings.extract import DEFAULT_MIN_LESION_MM3, extract
from volvqa.findings.records import Findings, LesionFindings, OrganFindings

__all__ = ["DEFAULT_MIN_LESION_MM3", "Findings", "LesionFindings", "OrganFindings", "extract"]
