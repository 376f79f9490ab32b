"""volvqa: 3D CT visual question answering benchmarks computed from segmentation masks."""
from volvqa.errors import VolvqaInputError
from volvqa.records import LabelMap, Source, Volume

__version__ = "0.1.0"
__all__ = ["LabelMap", "Source", "Volume", "VolvqaInputError", "__version__"]
