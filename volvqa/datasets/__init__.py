"""Dataset manifests and layout adapters."""
from volvqa.datasets.manifest import Case, Manifest, assign_split, load_cases, load_manifest

__all__ = ["Case", "Manifest", "assign_split", "load_cases", "load_manifest"]
