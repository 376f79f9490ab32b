"""Reading CT volumes and masks into canonical records; the zarr cache."""
from volvqa.io.labelmap import load_labelmap, resample_nearest, save_labelmap
from volvqa.io.volume import load_volume, save_volume

__all__ = ["load_labelmap", "load_volume", "resample_nearest", "save_labelmap", "save_volume"]
