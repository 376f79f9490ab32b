"""MONAI segmentation backend: SegResNet, MONAI transforms, sliding-window
inference with Gaussian blending, safetensors checkpoints.

Preprocessing (recorded in the run's config.json): canonical RAS input,
resampled to ``spacing_mm`` with ``monai.transforms.Spacing`` (bilinear for
CT, nearest for labels), HU clipped to [-200, 300] and scaled to [0, 1]
(``ScaleIntensityRange``). Predictions are argmaxed on that grid and mapped
back to the input grid through world coordinates (nearest neighbour).
"""
from __future__ import annotations

import json
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from volvqa import labels as L
from volvqa.errors import VolvqaInputError
from volvqa.records import LabelMap, Volume

HU_RANGE = (-200.0, 300.0)

SEG_PRESETS = {
    "cpu-small": dict(spacing_mm=(4.0, 4.0, 4.0), roi=(64, 64, 48), init_filters=8, batch=2, steps=800, lr=2e-3,
                      val_every=100),
    "cpu-tiny": dict(spacing_mm=(6.0, 6.0, 6.0), roi=(32, 32, 32), init_filters=8, batch=2, steps=20, lr=2e-3,
                     val_every=10),
    # Lesions: 3 mm voxels (a 10 mm lesion spans 3 of them, not 2) and longer training for the extra classes.
    "cpu-lesions": dict(spacing_mm=(3.0, 3.0, 3.0), roi=(64, 64, 48), init_filters=8, batch=2, steps=1500, lr=2e-3,
                        val_every=250),
    "gpu": dict(spacing_mm=(1.5, 1.5, 1.5), roi=(128, 128, 128), init_filters=32, batch=4, steps=20000, lr=1e-3,
                val_every=500),
}


@dataclass
class SegConfig:
    labels: list[str] = field(default_factory=lambda: ["liver", "spleen", "kidney_left", "kidney_right"])
    spacing_mm: tuple[float, float, float] = (3.0, 3.0, 3.0)
    roi: tuple[int, int, int] = (96, 96, 64)
    init_filters: int = 8
    hu_range: tuple[float, float] = HU_RANGE
    overlap: float = 0.25
    #: Learn ``X_left``/``X_right`` as one class ``X`` and split the prediction
    #: by side afterwards: random crops carry no left/right context, so a
    #: network asked to tell the kidneys apart from a crop learns it late.
    pair_sides: bool = False

    @property
    def classes(self) -> list[tuple[str, list[str]]]:
        """Network output classes (index 1..): (class name, canonical labels it stands for)."""
        out: list[tuple[str, list[str]]] = []
        for n in self.labels:
            base = n.rsplit("_", 1)[0]
            pair = n.endswith(("_left", "_right")) and {f"{base}_left", f"{base}_right"} <= set(self.labels)
            if self.pair_sides and pair:
                if not any(c == base for c, _ in out):
                    out.append((base, [f"{base}_left", f"{base}_right"]))
            else:
                out.append((n, [n]))
        return out


def _device(device: str) -> str:
    from volvqa.devices import resolve_device
    return resolve_device(device)


def _network(cfg: SegConfig):
    from monai.networks.nets import SegResNet
    return SegResNet(spatial_dims=3, init_filters=cfg.init_filters, in_channels=1, out_channels=len(cfg.classes) + 1,
                     blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))


def to_network_grid(volume: Volume, cfg: SegConfig, labels: np.ndarray | None = None):
    """(image (1, X, Y, Z) in [0, 1], label map or None, affine) on the network's grid."""
    import torch
    from monai.data import MetaTensor
    from monai.transforms import ScaleIntensityRange, Spacing
    img = MetaTensor(torch.from_numpy(volume.array.astype(np.float32))[None], affine=torch.tensor(volume.affine))
    img = Spacing(pixdim=cfg.spacing_mm, mode="bilinear")(img)
    img = ScaleIntensityRange(a_min=cfg.hu_range[0], a_max=cfg.hu_range[1], b_min=0.0, b_max=1.0, clip=True)(img)
    lab = None
    if labels is not None:
        lt = MetaTensor(torch.from_numpy(labels.astype(np.float32))[None], affine=torch.tensor(volume.affine))
        lab = Spacing(pixdim=cfg.spacing_mm, mode="nearest")(lt)
    return img, lab, np.asarray(img.affine, float)


def class_lut(cfg: SegConfig) -> np.ndarray:
    """Canonical id -> network class index (0 for what the network does not learn)."""
    lut = np.zeros(256, np.uint8)
    for i, (_c, members) in enumerate(cfg.classes, start=1):
        for n in members:
            lut[L.CANONICAL_IDS[n]] = i
    return lut


class MonaiSegmenter:
    name = "monai"

    def __init__(self, cfg: SegConfig, net, device: str = "cpu"):
        self.cfg, self.net, self.device = cfg, net, device

    @classmethod
    def load(cls, run_dir: Path, device: str = "auto") -> MonaiSegmenter:
        from safetensors.torch import load_file
        if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
            raise VolvqaInputError(run_dir, "not a MONAI segmentation run (needs config.json and model.safetensors)")
        d = json.loads((run_dir / "config.json").read_text())["model"]
        cfg = SegConfig(**{k: tuple(v) if k in ("spacing_mm", "roi", "hu_range") else v for k, v in d.items()})
        net = _network(cfg)
        net.load_state_dict(load_file(str(run_dir / "model.safetensors")))
        dev = _device(device)
        net.to(dev).eval()
        return cls(cfg, net, dev)

    def predict_grid(self, img) -> np.ndarray:
        import torch
        from monai.inferers import sliding_window_inference
        x = img.as_tensor()[None].to(self.device) if hasattr(img, "as_tensor") else img[None].to(self.device)
        amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.device == "cuda" else _Null()
        with torch.no_grad(), amp:
            logits = sliding_window_inference(x, self.cfg.roi, 2, self.net, overlap=self.cfg.overlap, mode="gaussian")
        return torch.argmax(logits.float(), dim=1)[0].cpu().numpy().astype(np.uint8)

    def segment(self, volume: Volume) -> LabelMap:
        from scipy import ndimage

        from volvqa.arrays import present_ids
        from volvqa.io.labelmap import resample_nearest, split_by_side
        img, _, grid_affine = to_network_grid(volume, self.cfg)
        classes = self.cfg.classes
        lesion_idx = tuple(i for i, (c, _m) in enumerate(classes, start=1) if L.is_lesion(c))
        pred = drop_fragments(self.predict_grid(img), len(classes), keep_classes=lesion_idx)
        on_grid = resample_nearest(pred, grid_affine, volume.shape, volume.affine)
        lut = np.zeros(len(classes) + 1, np.uint8)
        for i, (_c, members) in enumerate(classes, start=1):
            lut[i] = L.CANONICAL_IDS[members[0]]
        on_input = lut[on_grid]  # a paired class starts as its left member
        boxes = ndimage.find_objects(on_grid, max_label=len(classes))
        for i, (_c, members) in enumerate(classes, start=1):
            box = boxes[i - 1]
            if len(members) == 2 and box is not None:
                sub = on_grid[box] == i
                left, _right = split_by_side(sub, volume, offset=[s.start for s in box])
                on_input[box][sub & ~left] = L.CANONICAL_IDS[members[1]]
        present = {i: L.CANONICAL_NAMES[i] for i in present_ids(on_input)}
        return LabelMap(on_input, present, volume.affine.copy(), meta={"segmenter": "monai"},
                        annotates=frozenset(x for n in self.cfg.labels for x in L.expand_names(n)))


class _Null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


#: A predicted component smaller than this share of its class's largest is dropped.
MIN_FRAGMENT_FRACTION = 0.1

#: Lesion classes ``train-seg --lesions`` adds (the kinds the phantoms and public datasets label), and the organ
#: classes they need: a lesion question is asked only where its organ is annotated.
LESION_CLASSES = ("liver_tumor", "liver_cyst", "kidney_tumor", "kidney_cyst", "pancreatic_pdac", "pancreatic_pnet",
                  "pancreatic_cyst")
LESION_HOST_ORGANS = ("liver", "kidney_left", "kidney_right", "pancreas")


def drop_fragments(pred: np.ndarray, n_classes: int, fraction: float = MIN_FRAGMENT_FRACTION,
                   keep_classes: tuple[int, ...] = ()) -> np.ndarray:
    """Remove stray components (26-connected) smaller than ``fraction`` of the
    largest component of their class: organs are one piece (two for a paired
    class), and a few hundred voxels where an organ was removed would
    otherwise become an organ."""
    import cc3d
    # One multi-label pass: cc3d labels each class's components separately.
    comp, n = cc3d.connected_components(pred, connectivity=26, return_N=True)
    if n == 0:
        return pred
    sizes = np.bincount(comp.ravel(), minlength=n + 1)
    comp_class = np.zeros(n + 1, np.int64)
    comp_class[comp.ravel()] = pred.ravel()
    largest = np.zeros(n_classes + 1, np.int64)
    np.maximum.at(largest, comp_class[1:], sizes[1:])
    keep = sizes >= fraction * largest[comp_class]
    if keep_classes:    # lesions come in many pieces of any size: each is kept
        keep |= np.isin(comp_class, keep_classes)
    keep[0] = True
    return np.where(keep[comp], pred, 0).astype(pred.dtype)


def segmentation_dice(pred: LabelMap, reference: LabelMap, names: list[str]) -> dict[str, float]:
    """Dice per canonical structure between two label maps on the same grid
    (NaN where both are empty)."""
    out = {}
    for n in names:
        p = pred.array == L.CANONICAL_IDS[n]
        t = reference.array == L.CANONICAL_IDS[n]
        denom = int(p.sum()) + int(t.sum())
        out[n] = float(2 * int((p & t).sum()) / denom) if denom else float("nan")
    return out


def dice_per_label(pred: np.ndarray, truth: np.ndarray, n_labels: int) -> list[float]:
    out = []
    for k in range(1, n_labels + 1):
        p, t = pred == k, truth == k
        denom = p.sum() + t.sum()
        out.append(float(2 * (p & t).sum() / denom) if denom else float("nan"))
    return out


#: With lesion classes: share of crops centred on a lesion voxel, and the cross-entropy weight of lesion
#: classes. Lesions are a few hundred of a crop's 200,000 voxels; with crops centred on a class drawn
#: uniformly and unit weights, a 1,250-step CPU run learnt the organs (Dice 0.77-0.95) and no lesion at all.
LESION_CROP_SHARE = 0.5
LESION_CE_WEIGHT = 4.0


def train_seg(manifest: str | Path, out_dir: str | Path, preset: str = "cpu-small", seed: int = 0,
              labels: list[str] | None = None, progress: bool = True, max_minutes: float | None = None,
              init_from: str | Path | None = None, steps: int | None = None) -> dict:
    """Train a SegResNet on a manifest with masks (Dice + cross-entropy, random crops). ``init_from``: start
    from another run's weights (same classes and preset: e.g. an organ stage, then lesion-focused steps)."""
    import torch
    from monai.losses import DiceCELoss
    from tqdm import tqdm

    if preset not in SEG_PRESETS:
        raise VolvqaInputError(None, f"unknown preset {preset!r}; choose from {sorted(SEG_PRESETS)}")
    p = SEG_PRESETS[preset]
    cfg = SegConfig(labels=list(labels or SegConfig().labels), spacing_mm=tuple(p["spacing_mm"]), roi=tuple(p["roi"]),
                    init_filters=p["init_filters"], pair_sides=True)
    class_names = [c for c, _ in cfg.classes]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    data, heldout = _seg_training_data(manifest, cfg)
    device = _device("auto")
    net = _seg_network(cfg, init_from).to(device)
    n_steps = int(steps or p["steps"])
    opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=1e-5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=n_steps)
    lesion_idx = [i for i, (c, _m) in enumerate(cfg.classes, start=1) if L.is_lesion(c)]
    weight = None
    if lesion_idx:
        weight = torch.ones(len(cfg.classes) + 1)
        weight[lesion_idx] = LESION_CE_WEIGHT
        weight = weight.to(device)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, weight=weight)
    rng = np.random.default_rng(seed)
    seg = MonaiSegmenter(cfg, net, device)
    best, history, t0 = -1.0, [], time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tqdm(total=n_steps, desc=f"train-seg ({preset})", unit="step", file=sys.stderr,
              disable=not progress or None) as bar:
        for step in range(1, n_steps + 1):
            batch = [data["train"][int(rng.integers(len(data["train"])))] for _ in range(p["batch"])]
            crops = [_random_crop(img, lab, np.array(cfg.roi), len(cfg.classes), lesion_idx, rng)
                     for _cid, img, lab in batch]
            x = torch.stack([c[0] for c in crops]).to(device)
            y = torch.stack([c[1] for c in crops]).to(device)
            loss = loss_fn(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            stop = bool(max_minutes) and (time.perf_counter() - t0) / 60 > max_minutes
            if step % p["val_every"] == 0 or step == n_steps or stop:
                dice = _validate_seg(seg, data["val"], len(cfg.classes))
                mean = float(np.nanmean(dice)) if dice else float("nan")
                history.append({"step": step, "loss": float(loss.detach()), "val_dice": dict(zip(class_names, dice, strict=False))})
                bar.set_postfix(loss=f"{float(loss.detach()):.3f}", dice=f"{mean:.3f}")
                if not dice or mean > best:
                    best = mean if dice else best
                    _save_seg_run(net, cfg, preset, history, out_dir)
            if stop:
                break
    train_minutes = (time.perf_counter() - t0) / 60
    heldout_dice = _heldout_report(out_dir, cfg, heldout, history, train_minutes, device)
    return {"best_mean_val_dice": best, "val_dice": history[-1]["val_dice"] if history else {},
            "heldout_dice": heldout_dice,
            "minutes": train_minutes, "device": device, "train_cases": len(data["train"]),
            "val_cases": len(data["val"])}


def _seg_training_data(manifest, cfg: SegConfig) -> tuple[dict, list]:
    """The manifest's cases with masks on the network grid, split into train and val (val and test
    cases), and the held-out cases as read (for the end-to-end Dice)."""
    from volvqa.datasets.manifest import cases_for, load_manifest
    from volvqa.io import load_labelmap, load_volume
    m = load_manifest(manifest)
    cases = [c for c in cases_for(m) if c.masks]
    data = {"train": [], "val": []}
    heldout = []
    lut = class_lut(cfg)
    for c in cases:
        if not Path(c.ct).exists():
            continue
        v = load_volume(c.ct)
        masks = c.masks if isinstance(c.masks, list) else [c.masks]
        lm = load_labelmap(masks, c.label_spec, reference=v)
        img, lab, _ = to_network_grid(v, cfg, lut[lm.array])
        split = "val" if c.split in ("val", "test") else "train"
        data[split].append((c.case_id, img.as_tensor(), lab.as_tensor().long()))
        if split == "val":
            heldout.append((c.case_id, v, lm))
    if not data["train"]:
        raise VolvqaInputError(manifest, "no training cases with masks found (generate or download them first)")
    return data, heldout


def _seg_network(cfg: SegConfig, init_from):
    net = _network(cfg)
    if init_from is not None:
        from safetensors.torch import load_file
        prev = json.loads((Path(init_from) / "config.json").read_text())["model"]
        if prev.get("labels") != cfg.labels or tuple(prev.get("spacing_mm", ())) != tuple(cfg.spacing_mm):
            raise VolvqaInputError(init_from, "the run to start from must have the same labels and preset",
                                   param="init_from")
        net.load_state_dict(load_file(str(Path(init_from) / "model.safetensors")))
    return net


def _random_crop(img, lab, roi: np.ndarray, n_classes: int, lesion_idx: list[int], rng):
    """A training crop of ``roi`` voxels (padded where the image is smaller): centred on a voxel of a
    class drawn uniformly 75% of the time (a lesion class in LESION_CROP_SHARE of those where the case
    has one), so small organs are seen as often as the liver; anywhere otherwise."""
    import torch
    shape = np.array(img.shape[1:])
    pad = np.maximum(roi - shape, 0)
    if pad.any():
        pw = [(0, 0)] + [(0, int(x)) for x in pad]
        img = torch.nn.functional.pad(img, [x for pr in reversed(pw[1:]) for x in pr])
        lab = torch.nn.functional.pad(lab, [x for pr in reversed(pw[1:]) for x in pr])
        shape = np.array(img.shape[1:])
    classes = [k for k in range(1, n_classes + 1) if bool((lab[0] == k).any())]
    lesions_here = [k for k in classes if k in lesion_idx]
    if lesions_here and rng.random() < LESION_CROP_SHARE:
        classes = lesions_here
    if classes and rng.random() < 0.75:
        k = classes[int(rng.integers(len(classes)))]
        fg = torch.nonzero(lab[0] == k)
        c = fg[int(rng.integers(len(fg)))].numpy()
        lo = np.clip(c - roi // 2, 0, shape - roi)
    else:
        lo = np.array([int(rng.integers(0, s - r + 1)) for s, r in zip(shape, roi, strict=False)])
    sl = (slice(None),) + tuple(slice(int(a), int(a + r)) for a, r in zip(lo, roi, strict=False))
    return img[sl], lab[sl]


def _validate_seg(seg: MonaiSegmenter, val: list, n_classes: int) -> list[float]:
    """Mean Dice per network class over the validation cases, on the network grid."""
    seg.net.eval()
    scores = []
    for _cid, img, lab in val:
        pred = seg.predict_grid(img)
        scores.append(dice_per_label(pred, lab[0].numpy(), n_classes))
    seg.net.train()
    return np.nanmean(np.array(scores), axis=0).tolist() if scores else []


def _save_seg_run(net, cfg: SegConfig, preset: str, history: list, out_dir: Path) -> None:
    from safetensors.torch import save_file

    from volvqa.io.atomic import atomic_path, write_text_atomic
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    write_text_atomic(out_dir / "config.json", json.dumps(
        {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
         "preset": preset, "preprocessing": {"orientation": "RAS", "spacing_mm": list(cfg.spacing_mm),
                                             "hu_range": list(cfg.hu_range), "scale": [0, 1]},
         "history": history}, indent=1) + "\n")


def _heldout_report(out_dir: Path, cfg: SegConfig, heldout: list, history: list, train_minutes: float,
                    device: str) -> dict:
    """The number that matters: the saved checkpoint through the full segment() path (side split,
    mapping back to the input grid) against the reference; written to heldout_dice.json."""
    from volvqa.io.atomic import write_text_atomic
    per_case = {}
    if heldout:
        best_seg = MonaiSegmenter.load(out_dir, device=device)
        per_case = {cid: segmentation_dice(best_seg.segment(v), lm, cfg.labels) for cid, v, lm in heldout}
    heldout_dice = {n: float(np.nanmean([d[n] for d in per_case.values()])) for n in cfg.labels} if per_case else {}
    write_text_atomic(out_dir / "heldout_dice.json", json.dumps(
        {"mean": heldout_dice, "cases": per_case, "steps": history[-1]["step"] if history else 0,
         "train_minutes": round(train_minutes, 2)}, indent=1, sort_keys=True) + "\n")
    return heldout_dice


def _run_dir(spec: str) -> Path:
    return Path(spec.split(":", 1)[1]) if ":" in spec else Path("")


def make(spec: str, device: str = "auto") -> MonaiSegmenter:
    """The registry's constructor: ``monai:runs/NAME``."""
    return MonaiSegmenter.load(_run_dir(spec), device=device)


def annotates(spec: str) -> frozenset[str]:
    """The structures a trained run outputs (its config's labels, expanded)."""
    cfg = _run_dir(spec) / "config.json"
    if not cfg.is_file():
        raise VolvqaInputError(cfg.parent, "not a MONAI segmentation run (needs config.json and model.safetensors)")
    return frozenset(x for n in json.loads(cfg.read_text())["model"]["labels"] for x in L.expand_names(n))
