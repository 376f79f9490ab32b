"""TotalSegmentator backend: the ``total`` task plus optional lesion tasks,
merged into one canonical LabelMap.

Merge order (later writes win where stated):

1. ``total`` (normal: 1.5 mm, five models; ``fast``: one 3 mm model). Its ids
   are the canonical ids (``kidney_cyst_left/right`` become ``kidney_cyst``).
2. ``liver_segments`` go to the LabelMap's ``parts`` layer; they never change
   the organ/lesion layer.
3. Non-lesion classes of the extra tasks (``liver_vessels``, the lung mask of
   ``lung_nodules``) fill background voxels only, so organ volumes stay those
   of ``total`` (its liver includes the intrahepatic vessels).
4. Lesion classes overwrite whatever is below them, as reference masks do
   (a lesion voxel carries the lesion's label, not its organ's), in this
   order: ``kidney_cysts``, ``liver_vessels`` (its ``liver_tumor`` class),
   ``liver_lesions``, ``lung_nodules``. The dedicated ``liver_lesions`` model
   goes after the vessel model's tumor class, so it wins where both speak.

Images go to TotalSegmentator in memory (a nibabel image; nnU-Net itself
still writes a temporary file). TotalSegmentator's usage statistics are
switched off in its ``config.json`` before a segmenter's first run, and the nnU-Net
trainer classes the tasks name are registered up front, because nnU-Net's
own lookup imports every trainer module, some of which need torchvision.
"""
from __future__ import annotations

import contextlib
import importlib
import io
from pathlib import Path

import numpy as np

from volvqa import labels as L
from volvqa.arrays import present_ids
from volvqa.errors import VolvqaInputError
from volvqa.records import LabelMap, Volume

TOTAL = "total"
#: Extra tasks this backend can merge, in merge order.
EXTRA_TASKS = ("liver_segments", "kidney_cysts", "liver_vessels", "liver_lesions", "lung_nodules")

#: TotalSegmentator class name -> canonical name, for the extra tasks.
TASK_CLASS_NAMES = {
    "kidney_cyst_left": "kidney_cyst",
    "kidney_cyst_right": "kidney_cyst",
    "liver_tumor": "liver_tumor",
    "liver_lesions": "liver_lesion",
    "lung_nodules": "lung_nodule",
    "liver_vessels": "liver_vessels",
    "lung": "lung",
}

#: Weights download task that provides each model id (``totalseg_download_weights -t``).
_DOWNLOAD_TASK = {297: "total_fast", 298: "total_fast", **{i: "total" for i in (291, 292, 293, 294, 295)}}

#: Trainer classes named by the tasks above -> module that defines them.
_TRAINER_MODULES = {
    "nnUNetTrainer": "nnunetv2.training.nnUNetTrainer.nnUNetTrainer",
    "nnUNetTrainerNoMirroring":
        "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerNoMirroring",
    "nnUNetTrainer_4000epochs_NoMirroring":
        "nnunetv2.training.nnUNetTrainer.variants.training_length.nnUNetTrainer_Xepochs_NoMirroring",
    "nnUNetTrainer_DASegOrd0_NoMirroring":
        "nnunetv2.training.nnUNetTrainer.variants.data_augmentation.nnUNetTrainerDAOrd0",
    "nnUNetTrainer_MOSAIC_1k_QuarterLR_NoMirroring": "totalsegmentator.custom_trainers",
}


def parse_backend(spec: str) -> tuple[bool, tuple[str, ...]]:
    """``totalsegmentator[:fast][+task...]`` -> (fast, extra tasks)."""
    head, *extra = spec.split("+")
    parts = head.split(":")
    if parts[0] != "totalsegmentator" or len(parts) > 2 or (len(parts) == 2 and parts[1] not in ("fast", "")):
        raise VolvqaInputError(None, f"bad TotalSegmentator backend {spec!r}: use "
                               "totalsegmentator[:fast][+liver_lesions+kidney_cysts+...]")
    bad = [t for t in extra if t not in EXTRA_TASKS]
    if bad:
        raise VolvqaInputError(None, f"unknown TotalSegmentator task(s) {', '.join(bad)}: "
                               f"choose from {', '.join(EXTRA_TASKS)}")
    return len(parts) == 2 and parts[1] == "fast", tuple(t for t in EXTRA_TASKS if t in extra)


def _task_config(task: str, fast: bool) -> dict:
    from totalsegmentator.python_api import get_task_config
    with contextlib.redirect_stdout(io.StringIO()):
        return get_task_config(task, fast=fast, quiet=True)


def required_models(task: str, fast: bool) -> list[tuple[int, str, str]]:
    """(model id, trainer, download task) for every nnU-Net model a task runs."""
    cfg = _task_config(task, fast and task == TOTAL)
    ids = cfg["task_id"] if isinstance(cfg["task_id"], list) else [cfg["task_id"]]
    out = [(i, cfg["trainer"], _DOWNLOAD_TASK.get(i, task)) for i in ids]
    if cfg.get("crop") is not None and cfg.get("crop_model") is None:
        crop_id = 297 if cfg.get("robust_crop") else 298
        out.append((crop_id, "nnUNetTrainer_4000epochs_NoMirroring", "total_fast"))
    return out


def weights_dir() -> Path:
    from totalsegmentator.config import get_weights_dir
    return Path(get_weights_dir())


def check_weights(tasks: list[str], fast: bool) -> None:
    """One-line error naming the weights folder and the download command."""
    from totalsegmentator.map_tasks_config import TASK_ID_WEIGHTS_CONFIGS
    root = weights_dir()
    missing: dict[str, list[str]] = {}
    for task in tasks:
        for model_id, _, dl in required_models(task, fast):
            folder = TASK_ID_WEIGHTS_CONFIGS[model_id]["foldername"]
            if not (root / folder).is_dir():
                missing.setdefault(dl, []).append(folder)
    if missing:
        folders = ", ".join(f for fs in missing.values() for f in fs)
        cmds = "; ".join(f"totalseg_download_weights -t {t}" for t in missing)
        raise VolvqaInputError(root, f"TotalSegmentator weights missing ({folders}); "
                               f"download them with: {cmds} (or set TOTALSEG_WEIGHTS_PATH)")


def register_trainers(tasks: list[str], fast: bool) -> list[str]:
    """Put the trainer classes the tasks use into TotalSegmentator's lookup table."""
    import totalsegmentator.nnunet as ts_nnunet
    names = sorted({tr for t in tasks for _, tr, _ in required_models(t, fast)})
    for name in names:
        if name in ts_nnunet.custom_trainers:
            continue
        module = _TRAINER_MODULES.get(name)
        if module is None:
            raise VolvqaInputError(None, f"TotalSegmentator trainer {name} is not known to volvqa")
        ts_nnunet.custom_trainers[name] = getattr(importlib.import_module(module), name)
    return names


def disable_usage_stats() -> Path:
    """Create or edit TotalSegmentator's config.json so that no run is reported."""
    from totalsegmentator.config import get_totalseg_dir, set_config_key, setup_totalseg
    setup_totalseg()
    set_config_key("send_usage_stats", False)
    set_config_key("statistics_disclaimer_shown", True)
    return Path(get_totalseg_dir()) / "config.json"


def totalseg_device(device: str = "auto") -> str:
    """volvqa device string (auto, cpu, cuda, cuda:N, mps) -> TotalSegmentator's."""
    from volvqa.devices import resolve_device
    return totalseg_device_name(resolve_device("cuda" if device == "gpu" else device))


def totalseg_device_name(torch_device: str) -> str:
    """A torch device string -> TotalSegmentator's name for it (cuda:N -> gpu:N)."""
    if torch_device == "cuda":
        return "gpu"
    if torch_device.startswith("cuda:"):
        return f"gpu:{torch_device[5:]}"
    return torch_device


def merge_task_outputs(outputs: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """TotalSegmentator task outputs (their own class ids) -> canonical
    (organ/lesion layer, parts layer or None), by the rules in this module's
    docstring."""
    from totalsegmentator.map_to_binary import class_map

    total = outputs[TOTAL]
    lut = np.zeros(max(class_map[TOTAL]) + 1, np.uint8)
    for i, n in class_map[TOTAL].items():
        lut[i] = L.CANONICAL_IDS[L.canonical_name(n)]
    merged = lut[total]
    parts = None
    for task in EXTRA_TASKS:
        pred = outputs.get(task)
        if pred is None:
            continue
        classes = class_map[task]
        if task == "liver_segments":
            part_lut = np.zeros(max(classes) + 1, np.uint8)
            for i, n in classes.items():
                part_lut[i] = L.PART_IDS[n]
            parts = part_lut[pred]
            continue
        canon_lut = np.zeros(max(classes) + 1, np.uint8)
        lesion_lut = np.zeros(max(classes) + 1, bool)
        for i, n in classes.items():
            canon_lut[i] = L.CANONICAL_IDS[TASK_CLASS_NAMES[n]]
            lesion_lut[i] = L.is_lesion(TASK_CLASS_NAMES[n])
        cand = canon_lut[pred]
        write = lesion_lut[pred] | ((cand > 0) & (merged == 0))
        merged[write] = cand[write]
    return merged, parts


class TotalSegmentatorSegmenter:
    """``segment(volume) -> LabelMap`` with TotalSegmentator."""

    name = "totalsegmentator"

    def __init__(self, fast: bool = False, tasks: tuple[str, ...] = (), device: str = "auto",
                 quiet: bool = True):
        self.fast, self.tasks, self.quiet = fast, tuple(tasks), quiet
        self.device = totalseg_device(device)
        self.all_tasks = [TOTAL, *self.tasks]
        self._prepared = False

    @classmethod
    def from_spec(cls, spec: str, device: str = "auto") -> TotalSegmentatorSegmenter:
        fast, tasks = parse_backend(spec)
        return cls(fast=fast, tasks=tasks, device=device)

    def prepare(self) -> None:
        """Checks weights, turns usage statistics off, registers trainers: once per segmenter."""
        if self._prepared:
            return
        try:
            import totalsegmentator  # noqa: F401
        except ImportError:
            raise VolvqaInputError(None, "TotalSegmentator is not installed: pip install "
                                   "'volvqa[seg]' (with your CUDA torch already installed)") from None
        check_weights(self.all_tasks, self.fast)
        disable_usage_stats()
        register_trainers(self.all_tasks, self.fast)
        self._prepared = True

    def _run(self, image, task: str) -> np.ndarray:
        from totalsegmentator.python_api import totalsegmentator
        # Lesion tasks do not take ``fast``; their crop model is chosen by the task.
        fast = self.fast if task == TOTAL else False
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink) if self.quiet else contextlib.nullcontext():
            out = totalsegmentator(image, None, ml=True, fast=fast, task=task, device=self.device,
                                   quiet=self.quiet, nr_thr_saving=1, skip_saving=True)
        return np.asarray(out.dataobj).astype(np.uint16)

    def segment(self, volume: Volume) -> LabelMap:
        import nibabel as nib

        self.prepare()
        image = nib.Nifti1Image(np.asarray(volume.array, dtype=np.int16), volume.affine)
        image.header.set_zooms(tuple(float(z) for z in volume.spacing_mm))
        outputs = {}
        for task in self.all_tasks:
            outputs[task] = self._run(image, task)
            self._check_grid(outputs[task], volume, task)
        merged, parts = merge_task_outputs(outputs)
        part_names = {i: n for n, i in L.PART_IDS.items()}
        present = {i: L.CANONICAL_NAMES[i] for i in present_ids(merged)}
        part_labels = {i: part_names[i] for i in present_ids(parts)} if parts is not None else {}
        meta = {"segmenter": "totalsegmentator" + (":fast" if self.fast else ""),
                "tasks": self.all_tasks, "device": self.device}
        scope = annotates("totalsegmentator" + "".join(f"+{t}" for t in self.tasks))
        return LabelMap(merged, present, volume.affine.copy(), parts=parts, part_labels=part_labels,
                        meta=meta, annotates=scope)

    @staticmethod
    def _check_grid(pred: np.ndarray, volume: Volume, task: str) -> None:
        if pred.shape != volume.shape:
            raise RuntimeError(f"TotalSegmentator task {task} returned shape {pred.shape}, "
                               f"expected the input's {volume.shape}")


#: Canonical structures each extra TotalSegmentator task outputs (merged into the ``total`` task's).
TASK_OUTPUTS: dict[str, tuple[str, ...]] = {
    "liver_segments": tuple(f"liver_segment_{i}" for i in range(1, 9)),
    "kidney_cysts": ("kidney_cyst",),
    "liver_vessels": ("liver_vessels", "liver_tumor"),
    "liver_lesions": ("liver_lesion",),
    "lung_nodules": ("lung_nodule", "lung"),
}


def make(spec: str, device: str = "auto") -> TotalSegmentatorSegmenter:
    """The registry's constructor: ``totalsegmentator[:fast][+task...]``."""
    return TotalSegmentatorSegmenter.from_spec(spec, device=device)


def annotates(spec: str) -> frozenset[str]:
    """The structures ``spec`` outputs: the total task's, plus each extra task's."""
    _fast, tasks = parse_backend(spec)
    names = {L.canonical_name(n) for n in L.TOTALSEG_TOTAL.values()}
    for t in tasks:
        names.update(TASK_OUTPUTS[t])
    return frozenset(n for n in names if n)
