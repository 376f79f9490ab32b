"""Preview pictures: axial, coronal and sagittal slices through a structure.

Radiological display convention: the patient's right on the image's left;
anterior up in axial, superior up in coronal and sagittal (anterior left).
Soft-tissue window W400/L50 by default; mask contours and boxes on top.
"""
from __future__ import annotations

import io
import os

import numpy as np

from volvqa.records import LabelMap, Volume

SOFT_TISSUE_WINDOW = (400.0, 50.0)  # width, level (HU)
_COLOURS = ["#e6194b", "#3cb44b", "#ffe119", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
            "#bcf60c", "#fabebe", "#008080", "#e6beff", "#9a6324", "#fffac8", "#800000", "#aaffc3"]


def windowed(hu: np.ndarray, width: float, level: float) -> np.ndarray:
    lo = level - width / 2
    return np.clip((hu.astype(np.float32) - lo) / width, 0.0, 1.0)


def panel(arr2d_xy: np.ndarray) -> np.ndarray:
    """(first axis, second axis) slice -> display image: rows = second axis reversed,
    columns = first axis reversed (patient's right / anterior on the left)."""
    return arr2d_xy.T[::-1, ::-1]


def centre_of(labelmap: LabelMap | None, structure: str | None, shape) -> tuple[int, int, int]:
    if labelmap is not None and structure:
        ids = [i for i, n in labelmap.labels.items() if n == structure or n.startswith(structure)]
        m = np.isin(labelmap.array, ids)
        if m.any():
            return tuple(int(round(c)) for c in np.argwhere(m).mean(axis=0))  # type: ignore[return-value]
    return tuple(s // 2 for s in shape)  # type: ignore[return-value]


def structure_ids(labelmap: LabelMap, structure: str) -> list[int]:
    """Label ids a ``--structure`` names: the structure itself, else every label it prefixes
    (``liver`` -> liver; ``kidney`` -> both kidneys); an error naming what the masks hold."""
    from volvqa.errors import VolvqaInputError
    exact = [i for i, n in labelmap.labels.items() if n == structure]
    ids = exact or [i for i, n in labelmap.labels.items() if n.startswith(structure)]
    if not ids:
        raise VolvqaInputError(None, f"no structure {structure!r} in the masks; they hold: "
                               f"{', '.join(sorted(labelmap.labels.values())) or 'nothing'}")
    return ids


def render_png(volume: Volume, labelmap: LabelMap | None = None, *, structure: str | None = None,
               boxes: list[list[int]] | None = None, centre: tuple[int, int, int] | None = None,
               window: tuple[float, float] = SOFT_TISSUE_WINDOW, title: str | None = None,
               dpi: int = 80, views: tuple[str, ...] = ("axial", "coronal", "sagittal"),
               caption: str | None = None, box_label: str | None = None, legend: bool = True) -> bytes:
    """PNG bytes of the chosen views through ``centre`` (voxel) or the structure's centroid.

    Mask contours get a legend; the requested ``structure`` is drawn thick,
    the others thin. ``caption`` (e.g. the question and its answer) is
    written under the views, ``box_label`` beside the boxes' legend entry.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    focus = set(structure_ids(labelmap, structure)) if (labelmap is not None and structure) else set()
    c = centre or centre_of(labelmap, structure, volume.shape)
    sx, sy, sz = volume.spacing_mm
    img = windowed(volume.array, *window)
    specs = {
        "axial": (lambda a: a[:, :, c[2]], (sx, sy), (0, 1), f"axial z={c[2]}"),
        "coronal": (lambda a: a[:, c[1], :], (sx, sz), (0, 2), f"coronal y={c[1]}"),
        "sagittal": (lambda a: a[c[0], :, :], (sy, sz), (1, 2), f"sagittal x={c[0]}"),
    }
    extra_h = (0.5 if caption else 0.0) + (0.6 if legend and labelmap is not None else 0.0)
    fig, axes = plt.subplots(1, len(views), figsize=(4.2 * len(views), 4.4 + extra_h), dpi=dpi)
    axes = np.atleast_1d(axes)
    drawn: dict[int, str] = {}
    for ax, view in zip(axes, views, strict=False):
        take, (pu, pv), (au, av), name = specs[view]
        sl = take(img)
        nu, nv = sl.shape
        ax.imshow(panel(sl), cmap="gray", vmin=0, vmax=1, extent=(0, nu * pu, 0, nv * pv), interpolation="nearest")
        if labelmap is not None:
            drawn.update(_draw_contours(ax, take(labelmap.array), sorted(labelmap.labels), focus, pu, pv))
        _draw_boxes(ax, boxes or [], c, au, av, nu, pu, pv)
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.text(0.01, 0.5, "A" if view == "sagittal" else "R", color="yellow", transform=ax.transAxes,
                fontsize=8, va="center")
    if title:
        fig.suptitle(title, fontsize=10)
    handles = []
    if legend and labelmap is not None:
        handles = [Line2D([], [], color=col, linewidth=2.2 if lid in focus else 1.0,
                          label=labelmap.labels[lid] + (" (requested)" if lid in focus else ""))
                   for lid, col in sorted(drawn.items())]
    if boxes:
        handles.append(Line2D([], [], color="#00ff00", linewidth=1.2, label=box_label or "box"))
    bottom = 0.0
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
        bottom += 0.6 / (4.4 + extra_h) * (1 + (len(handles) - 1) // 6)
    if caption:
        fig.text(0.5, bottom + 0.01, caption, ha="center", va="bottom", fontsize=9, wrap=True)
        bottom += 0.5 / (4.4 + extra_h)
    fig.tight_layout(rect=(0, min(bottom, 0.45), 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def _draw_contours(ax, lab2d: np.ndarray, present: list[int], focus: set[int], pu: float, pv: float
                   ) -> dict[int, str]:
    """Each label's contour on one view (the focus thick); returns the colour of each label drawn."""
    drawn = {}
    for k, lid in enumerate(present):
        m = lab2d == lid
        if not m.any():
            continue
        # Display coordinates in mm, same flips as the image.
        shown = panel(m.astype(np.float32))
        ys = (np.arange(shown.shape[0])[::-1] + 0.5) * pv
        xs = (np.arange(shown.shape[1]) + 0.5) * pu
        thick = lid in focus
        ax.contour(xs, ys, shown, levels=[0.5], colors=_COLOURS[k % len(_COLOURS)],
                   linewidths=2.2 if thick else (0.5 if focus else 0.8))
        drawn[lid] = _COLOURS[k % len(_COLOURS)]
    return drawn


def _draw_boxes(ax, boxes: list[list[int]], c, au: int, av: int, nu: int, pu: float, pv: float) -> None:
    """Boxes (voxel, inclusive) on one view: solid where the view's slice cuts the box, dashed elsewhere."""
    from matplotlib.patches import Rectangle
    normal = next(i for i in range(3) if i not in (au, av))
    for b in boxes:
        lo_u, hi_u, lo_v, hi_v = b[au], b[au + 3], b[av], b[av + 3]
        on = b[normal] <= c[normal] <= b[normal + 3]
        x0 = (nu - 1 - hi_u) * pu
        y0 = (lo_v) * pv
        ax.add_patch(Rectangle((x0, y0), (hi_u - lo_u + 1) * pu, (hi_v - lo_v + 1) * pv, fill=False,
                               edgecolor="#00ff00" if on else "#00aa00", linewidth=1.2,
                               linestyle="-" if on else "--"))


def write_png(path: str | os.PathLike, data: bytes) -> None:
    from volvqa.io.atomic import write_bytes_atomic
    write_bytes_atomic(path, data)
