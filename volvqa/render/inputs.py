"""Model-ready inputs from a canonical volume and a QA item.

The formats a plug-in can ask for (``input_format`` on its class, or
``--input-format`` in ``predict`` / ``answer``), each what
``generate(prompt, volume=..., images=...)`` receives:

- ``volume``: the ``Volume`` (canonical RAS int16 HU), no images;
- ``key_slice``: one PIL image, the item's axial key slice (W400/L50, as the
  build's ``images/`` PNG);
- ``views``: three PIL images, axial / coronal / sagittal through the
  centre of the item's first evidence box (W400/L50, radiological display,
  square pixels); ``views_boxed``: the same with the evidence boxes drawn
  (RadVUQA's plain and boxed variants);
- ``video``: the axial stack as PIL frames, inferior to superior (W400/L50);
  the build writes it as ``videos/<case>.mp4`` with ``--video``;
- ``m3d``: a float32 array (1, 32, 256, 256) prepared as M3D does
  (BAAI-DCAI/M3D, ``Data/process/m3d_seg_data_prepare.py``): the volume
  min-max normalised to [0, 1], cropped to its foreground (MONAI
  ``CropForeground``: voxels above the minimum), resized to 32 x 256 x 256
  (MONAI ``Resize``, bilinear), depth first; here depth is the
  inferior-superior axis (z) and the slices are (y, x) of the canonical RAS
  grid. No HU window, as M3D; pass ``window=(w, l)`` to clip first.
"""
from __future__ import annotations

import io
import os

import numpy as np

from volvqa.errors import VolvqaInputError
from volvqa.records import Volume
from volvqa.render import panel, windowed

INPUT_FORMATS = ("volume", "key_slice", "views", "views_boxed", "video", "m3d")
WINDOW = (400.0, 50.0)
M3D_SHAPE = (32, 256, 256)


def _gray(plane: np.ndarray):
    from PIL import Image
    return Image.fromarray((plane * 255).round().astype(np.uint8), mode="L")


def key_slice_image(volume: Volume, z: int):
    z = min(max(int(z), 0), volume.shape[2] - 1)
    return _gray(panel(windowed(volume.array[:, :, z], *WINDOW)))


def item_centre(volume: Volume, item: dict) -> tuple[int, int, int]:
    """The centre of the item's first evidence box (voxels), on its key slice when it has one."""
    boxes = item.get("bbox_voxel") or []
    if boxes:
        b = boxes[0]
        c = [(b[i] + b[i + 3]) // 2 for i in range(3)]
    else:
        c = [s // 2 for s in volume.shape]
    if item.get("key_slice") is not None:
        c[2] = int(item["key_slice"])
    return tuple(min(max(int(v), 0), s - 1) for v, s in zip(c, volume.shape, strict=False))  # type: ignore[return-value]


def view_images(volume: Volume, centre, boxes=None) -> list:
    """Axial, coronal and sagittal PIL images through ``centre``, resampled to
    square pixels (mm), radiological display; evidence boxes drawn in green."""
    from PIL import Image, ImageDraw
    img = windowed(volume.array, *WINDOW)
    sx, sy, sz = volume.spacing_mm
    cx, cy, cz = centre
    planes = [(img[:, :, cz], (sx, sy), (0, 1)), (img[:, cy, :], (sx, sz), (0, 2)), (img[cx, :, :], (sy, sz), (1, 2))]
    out = []
    for plane, (pu, pv), (au, av) in planes:
        shown = _gray(panel(plane))
        scale = min(pu, pv)
        w, h = round(plane.shape[0] * pu / scale), round(plane.shape[1] * pv / scale)
        shown = shown.resize((w, h), Image.NEAREST) if (w, h) != shown.size else shown
        if boxes:
            shown = shown.convert("RGB")
            d = ImageDraw.Draw(shown)
            for b in boxes:
                # display: columns = first axis reversed, rows = second axis reversed
                x0 = (plane.shape[0] - 1 - b[au + 3]) * pu / scale
                x1 = (plane.shape[0] - b[au]) * pu / scale - 1
                y0 = (plane.shape[1] - 1 - b[av + 3]) * pv / scale
                y1 = (plane.shape[1] - b[av]) * pv / scale - 1
                d.rectangle([x0, y0, x1, y1], outline=(0, 255, 0))
        out.append(shown)
    return out


def axial_frames(volume: Volume) -> list:
    """Every axial slice, inferior to superior, W400/L50."""
    img = windowed(volume.array, *WINDOW)
    return [_gray(panel(img[:, :, z])) for z in range(volume.shape[2])]


def write_mp4(path: str | os.PathLike, frames: list, fps: int = 8) -> None:
    """An H.264 MP4 of the frames (imageio-ffmpeg; one encoder thread so the
    bytes repeat), written atomically; odd sizes are padded by one pixel."""
    try:
        import imageio.v2 as imageio
    except ImportError:
        raise VolvqaInputError(path, "videos need imageio and imageio-ffmpeg: pip install 'volvqa[video]'") from None
    from volvqa.io.atomic import atomic_path
    arrs = [np.asarray(f) for f in frames]
    h, w = arrs[0].shape[:2]
    ph, pw = h + h % 2, w + w % 2
    arrs = [np.pad(a, ((0, ph - h), (0, pw - w))) for a in arrs]
    with atomic_path(path) as tmp:
        # ffmpeg picks the container from the suffix: a unique name ending in .mp4, removed on failure.
        tmp_mp4 = tmp.with_suffix(".mp4")
        try:
            with imageio.get_writer(tmp_mp4, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                    macro_block_size=1, ffmpeg_params=[
                                        "-threads", "1", "-fflags", "+bitexact", "-flags:v", "+bitexact",
                                        "-map_metadata", "-1"]) as wr:
                for a in arrs:
                    wr.append_data(np.stack([a] * 3, axis=-1))
            os.replace(tmp_mp4, tmp)
        finally:
            tmp_mp4.unlink(missing_ok=True)


def m3d_array(volume: Volume, window: tuple[float, float] | None = None) -> np.ndarray:
    """(1, 32, 256, 256) float32 in [0, 1], as M3D prepares its CTs (see the module docstring)."""
    import monai.transforms as mtf
    a = volume.array.astype(np.float32)
    if window is not None:
        w, lvl = window
        a = np.clip(a, lvl - w / 2, lvl + w / 2)
    a = np.transpose(a, (2, 1, 0))[None]          # C, D=z, H=y, W=x
    a = a - a.min()
    a = a / max(float(a.max()), 1e-8)
    out = mtf.Compose([mtf.CropForeground(), mtf.Resize(spatial_size=list(M3D_SHAPE), mode="bilinear")])(a)
    return np.asarray(out, dtype=np.float32)


def model_inputs(fmt: str, volume: Volume, item: dict):
    """(volume argument, images argument) of ``generate`` for an input format."""
    if fmt not in INPUT_FORMATS:
        raise VolvqaInputError(None, f"unknown input format {fmt!r}: use {', '.join(INPUT_FORMATS)}")
    if fmt == "volume":
        return volume, None
    if volume is None:
        raise VolvqaInputError(None, f"input format {fmt} needs the scan")
    if fmt == "key_slice":
        z = item.get("key_slice")
        return None, [key_slice_image(volume, volume.shape[2] // 2 if z is None else z)]
    if fmt in ("views", "views_boxed"):
        return None, view_images(volume, item_centre(volume, item),
                                 item.get("bbox_voxel") if fmt == "views_boxed" else None)
    if fmt == "video":
        return None, axial_frames(volume)
    return m3d_array(volume), None


def png_bytes(image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False)
    return buf.getvalue()
