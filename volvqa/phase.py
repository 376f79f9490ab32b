"""The contrast phase of a scan, and which rules it allows.

Attenuation rules that classify tissue by its HU (Kodama steatosis grades,
liver-to-spleen and pancreas-to-spleen ratios, the Bosniak unenhanced-CT
renal cyst range, the 14.5 HU pseudocyst threshold) hold on unenhanced CT
only: iodine raises the liver by ~50 HU and the spleen and pancreas by
more. A case whose phase is known to be contrast-enhanced carries none of
those questions; a case whose phase is unknown (most public datasets say
nothing) keeps them, and its items record ``phase: unknown`` in their
evidence. A manifest may state the phase (``phase:`` for the dataset, or a
``phase`` column per case); a DICOM series with a ContrastBolusAgent is
"contrast"; phantoms record the phase they were drawn in.
"""
from __future__ import annotations

from volvqa.errors import VolvqaInputError

PHASES = ("non-contrast", "arterial", "portal venous", "delayed", "contrast", "unknown")
CONTRAST_PHASES = ("arterial", "portal venous", "delayed", "contrast")
_ALIASES = {
    "non-contrast": "non-contrast", "noncontrast": "non-contrast", "nc": "non-contrast", "unenhanced": "non-contrast",
    "plain": "non-contrast", "native": "non-contrast", "none": "non-contrast", "pre-contrast": "non-contrast",
    "arterial": "arterial", "late arterial": "arterial", "early arterial": "arterial", "art": "arterial",
    "pancreatic": "arterial",
    "portal venous": "portal venous", "portal": "portal venous", "portal-venous": "portal venous",
    "venous": "portal venous", "pv": "portal venous", "pvp": "portal venous",
    "delayed": "delayed", "equilibrium": "delayed", "excretory": "delayed",
    "contrast": "contrast", "contrast-enhanced": "contrast", "enhanced": "contrast", "ce": "contrast",
    "unknown": "unknown", "": "unknown",
}


def normalise_phase(value, where=None) -> str:
    """A phase name from a manifest, a CSV cell or the command line; a clear error otherwise."""
    if value is None:
        return "unknown"
    key = str(value).strip().lower().replace("_", " ")
    if key in _ALIASES:
        return _ALIASES[key]
    raise VolvqaInputError(where, f"unknown contrast phase {value!r}: use one of {', '.join(PHASES)}")


def is_contrast(phase: str | None) -> bool:
    return (phase or "unknown") in CONTRAST_PHASES
