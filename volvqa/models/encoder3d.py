"""A trainable 3D-encoder VQA baseline in the style of M3D / RadFM.

Image: the canonical CT, HU clipped to a soft-tissue window [-160, 240] HU
(W400/L40) and scaled to [0, 1], resized to a fixed grid of
depth x height x width voxels, whatever its spacing (the grid, not mm, is
what the encoder sees; M3D used 32x256x256 with 4x16x16 patches: 2,048
tokens pooled to 256). The resize averages the voxels that fall in each grid
cell ("area"; trilinear where a scan is smaller than the grid): point
sampling kept most of the scan noise (liver 10.3 HU on the demo grid,
4.5 HU averaged), against lesions 20-50 HU from their organ. Encoder: MONAI ViT over 4x12x12 (cpu-small) or 4x16x16
(gpu) patches, its token grid average-pooled to a fixed number of visual
tokens.
Text: our own word/digit tokenizer built from the training questions and
options (numbers are spelled digit by digit), a small Transformer encoder.
Anatomy: before question answering the encoder is pretrained on the
training cases' masks: each ViT token predicts, for each of the 2x2x2 cells
of its patch, how much of each organ and liver or pancreas part it holds
and how much lesion (per organ family, per part, per kidney side) lies in
it (``ANATOMY_CHANNELS``). The question stage then keeps the encoder frozen
(presets' ``freeze_encoder``). The predictions are projected back into the
tokens and summarised into one "concept" token per channel (named by the
channel's words; peak and mean probability, size in cells and ml, centre,
intensity, a lesion's contrast with its organ), so a question can attend to
"lesion in segment 3" and read it.
Fusion: the question tokens cross-attend to the pooled patch tokens and
the concept tokens.
Heads: option scoring (multiple choice), numeric regression on a signed log
scale, yes/no, categorical answers, and box regression (normalised corners).
Checkpoints: ``model.safetensors`` + ``config.json`` (architecture, grid,
window, vocabulary, label set) in the run folder.
"""
from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from volvqa.errors import VolvqaInputError
from volvqa.models.base import Prediction

HU_WINDOW = (-160.0, 240.0)
PAD, UNK, CLS, SEP = 0, 1, 2, 3
ANATOMY_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right", "pancreas", "gallbladder", "stomach")
ANATOMY_PARTS = tuple(f"liver_segment_{i}" for i in range(1, 9)) + ("pancreas_head", "pancreas_body",
                                                                     "pancreas_tail")
ANATOMY_LESION_FAMILIES = ("liver", "kidney", "pancreas", "other")
# Fractions of each cell for organs and parts; for lesions, per organ family,
# per part and per kidney side, the covered share over 5% (capped at 1).
ANATOMY_CHANNELS = ([f"organ:{o}" for o in ANATOMY_ORGANS] + [f"part:{p}" for p in ANATOMY_PARTS]
                    + [f"lesion:{f}" for f in ANATOMY_LESION_FAMILIES]
                    + [f"lesion@{p}" for p in ANATOMY_PARTS] + ["lesion@kidney_left", "lesion@kidney_right"])
_TOKEN = re.compile(r"[a-z]+|\d|[^\sa-z\d]")


@dataclass
class Encoder3DConfig:
    grid: tuple[int, int, int] = (32, 96, 96)          # depth (z), height (y), width (x)
    patch: tuple[int, int, int] = (4, 16, 16)
    hidden: int = 192
    vit_layers: int = 4
    heads: int = 4
    visual_tokens: tuple[int, int, int] = (2, 3, 3)
    text_layers: int = 2
    max_len: int = 64
    vocab: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)    # categorical answer vocabulary
    anatomy: list[str] = field(default_factory=list)   # per-token anatomy channels (empty: none)
    anatomy_subgrid: int = 2                           # each token predicts r x r x r cells of its patch
    hu_window: tuple[float, float] = HU_WINDOW
    resize: str = "trilinear"                          # "area" (runs since anatomy pretraining) or "trilinear"
    concept_version: int = 1                           # 2: concept tokens also carry intensity and ml, named
    # Question kind -> {answer: train count} for yes/no and categorical
    # questions: option scores add its log frequency (see Encoder3DAnswerer.mc_logits).
    answer_prior: dict = field(default_factory=dict)
    seed: int = 0


PRESETS = {
    "cpu-small": dict(grid=(32, 96, 96), patch=(4, 12, 12), hidden=192, vit_layers=4, heads=4,
                      visual_tokens=(4, 4, 4), text_layers=2, anatomy_epochs=150,
                      freeze_encoder=True, views=4, epochs=60, paraphrase_augment=True, cases_per_step=4,
                      questions_per_case=32, lr=5e-4),
    # For tests only: a minute-scale run of the same code path.
    "cpu-tiny": dict(grid=(16, 48, 48), patch=(4, 16, 16), hidden=64, vit_layers=1, heads=2, visual_tokens=(1, 1, 1),
                     text_layers=1, anatomy_epochs=2, freeze_encoder=True, views=2, paraphrase_augment=True,
                     epochs=5, cases_per_step=4, questions_per_case=16, lr=1e-3),
    "gpu": dict(grid=(32, 256, 256), patch=(4, 16, 16), hidden=768, vit_layers=12, heads=12, visual_tokens=(4, 8, 8),
                text_layers=4, anatomy_epochs=40, freeze_encoder=True, views=4, paraphrase_augment=True,
                epochs=60, cases_per_step=8, questions_per_case=32, lr=1e-4),
}


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


def build_vocab(texts) -> list[str]:
    words = sorted({w for t in texts for w in tokenize(t)})
    return ["<pad>", "<unk>", "<cls>", "<sep>"] + words


def encode_text(text: str, index: dict[str, int], max_len: int) -> list[int]:
    ids = [CLS] + [index.get(w, UNK) for w in tokenize(text)]
    return (ids + [PAD] * max_len)[:max_len]


def preprocess(array_ras: np.ndarray, cfg: Encoder3DConfig):
    """HU (x, y, z) -> float tensor (1, D, H, W) on the fixed grid."""
    import torch
    import torch.nn.functional as F
    lo, hi = cfg.hu_window
    a = np.clip((np.asarray(array_ras, np.float32) - lo) / (hi - lo), 0.0, 1.0)
    t = torch.from_numpy(np.ascontiguousarray(a.transpose(2, 1, 0)))[None, None]  # (1, 1, z, y, x)
    if cfg.resize == "area" and all(n >= g for n, g in zip(t.shape[2:], cfg.grid, strict=False)):
        t = F.interpolate(t, size=tuple(cfg.grid), mode="area")
    else:
        t = F.interpolate(t, size=tuple(cfg.grid), mode="trilinear", align_corners=False)
    return t[0]


def grid_cell_ml(volume, cfg: Encoder3DConfig) -> float:
    """Volume (ml) of the scan that one anatomy cell covers: the grid maps
    the whole scan, whatever its spacing, so sizes in ml need this."""
    r = cfg.anatomy_subgrid
    cells = math.prod(g // p * r for g, p in zip(cfg.grid, cfg.patch, strict=False))
    return volume.voxel_volume_ml * math.prod(volume.shape) / cells


def concept_phrase(channel: str) -> str:
    """Words for an anatomy channel, as questions say them ("lesion@liver_segment_3"
    -> "lesion couinaud segment 3 liver"): concept tokens start from these
    words' embeddings, so a question attends to its concept from the start."""
    kind, name = re.split(r"[:@]", channel, maxsplit=1)
    words = name.replace("_", " ")
    if name.startswith("liver_segment_"):
        words = f"couinaud segment {name.rsplit('_', 1)[1]} liver"
    elif name.startswith("kidney_"):
        words = f"{name.split('_')[1]} kidney"
    return words if kind in ("organ", "part") else f"lesion {words}"


def concept_parent(channel: str) -> str | None:
    """The organ channel a lesion channel's attenuation is compared with
    (lesions of either kidney: the left one; both enhance alike)."""
    if not channel.startswith("lesion"):
        return None
    name = re.split(r"[:@]", channel, maxsplit=1)[1]
    for organ in ANATOMY_ORGANS:
        if name == organ or name.startswith(organ):
            return f"organ:{organ}"
    return {"kidney": "organ:kidney_left"}.get(name)


def signed_log(x):
    return math.copysign(math.log1p(abs(x)), x)


def cells_from_tokens(raw, tok_grid: tuple[int, int, int], r: int):
    """(B, tokens, r*r*r*C) per-token cell values -> (B, cells, C) on the cell
    grid (tok_grid * r), cells in z-y-x order: token (i, j, k)'s sub-cell
    (a, b, c) is cell (i*r + a, j*r + b, k*r + c)."""
    b, tz, ty, tx = raw.shape[0], *tok_grid
    c = raw.shape[-1] // r ** 3
    cells = raw.reshape(b, tz, ty, tx, r, r, r, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return cells.reshape(b, tz * ty * tx * r ** 3, c)


def _net(cfg: Encoder3DConfig):
    from volvqa.models.encoder3d_net import Net
    return Net(cfg)


class Encoder3DAnswerer:
    name = "encoder3d"

    def __init__(self, cfg: Encoder3DConfig, net, run: str = ""):
        self.cfg, self.net = cfg, net
        self.index = {w: i for i, w in enumerate(cfg.vocab)}
        self.name = f"encoder3d:{run}" if run else "encoder3d"
        self._vol_cache: tuple[int, object] | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> Encoder3DAnswerer:
        from safetensors.torch import load_file
        run_dir = Path(run_dir)
        if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
            raise VolvqaInputError(run_dir, "not an encoder3d run (needs config.json and model.safetensors)")
        d = json.loads((run_dir / "config.json").read_text())
        cfg = Encoder3DConfig(**{k: tuple(v) if isinstance(v, list) and k in ("grid", "patch", "visual_tokens",
                                                                             "hu_window") else v
                                 for k, v in d["model"].items()})
        net = _net(cfg)
        net.load_state_dict(load_file(str(run_dir / "model.safetensors")))
        net.eval()
        return cls(cfg, net, run_dir.name)

    def _options_tensor(self, items, k_max=5):
        import torch
        out = torch.zeros(len(items), k_max, self.cfg.max_len // 2, dtype=torch.long)
        for i, it in enumerate(items):
            for j, letter in enumerate(sorted(it.get("options") or {})[:k_max]):
                out[i, j] = torch.tensor(encode_text(it["options"][letter], self.index, self.cfg.max_len // 2))
        return out

    def prior_logp(self, item: dict, answers: list[str], exclude: dict | None = None) -> list[float]:
        """Log train frequency (add-one, over ``answers``) of each answer to
        this question kind; ``exclude`` holds counts to leave out (a training
        item's own case, so training never sees its own answer in the prior)."""
        if item["answer_type"] not in ("binary", "categorical") or not self.cfg.answer_prior:
            return [0.0] * len(answers)
        from volvqa.qa.audit import key_of
        counts = self.cfg.answer_prior.get(item.get("key") or key_of(item), {})
        exclude = exclude or {}
        n = [max(counts.get(a.lower(), 0) - exclude.get(a.lower(), 0), 0) + 1 for a in answers]
        return [math.log(c / sum(n)) for c in n]

    def prior_log_odds(self, item: dict, letters: list[str], exclude: dict | None = None) -> list[float]:
        """``prior_logp`` of the item's options, in the order of ``letters``."""
        return self.prior_logp(item, [item["options"][k] for k in letters], exclude)

    def prior_answer_logits(self, items: list[dict], prior_exclude: list[dict | None] | None = None):
        """The prior's log frequencies for the free-answer heads: (N,) yes-vs-no
        log odds and (N, labels) categorical log frequencies (zeros without a prior)."""
        import torch
        yes = torch.zeros(len(items))
        cat = torch.zeros(len(items), max(len(self.cfg.labels), 1))
        for i, it in enumerate(items):
            ex = prior_exclude[i] if prior_exclude else None
            if it["answer_type"] == "binary":
                lp = self.prior_logp(it, ["yes", "no"], ex)
                yes[i] = lp[0] - lp[1]
            elif it["answer_type"] == "categorical" and self.cfg.labels:
                cat[i] = torch.tensor(self.prior_logp(it, self.cfg.labels, ex))
        return yes, cat

    def mc_logits(self, fused, items: list[dict], prior_exclude: list[dict | None] | None = None):
        """Option scores from the answer heads (yes/no logit, closeness of a
        number to the numeric head's estimate on a log scale, categorical
        log-probability); categorical options add a learned text-matching score.
        Yes/no and categorical options also add the log frequency of their
        answer in train for the question kind (logit adjustment), so the heads
        learn what the image changes about the question-only prior, which 27
        training scans give too few examples per kind to learn alongside."""
        import torch
        opts = self._options_tensor(items).to(fused.device)
        # Numbers and yes/no are scored by their answer heads alone: a learned
        # text match between the question and "23.4 mm" can only memorise
        # option strings of the training cases.
        head_only = torch.tensor([it["answer_type"] in ("binary", "numeric") for it in items], device=fused.device)
        logits = torch.where((opts == PAD).all(-1), -1e4, 0.0)
        matched = torch.nonzero(~head_only).flatten()
        if len(matched):  # the text encoder runs on the options that use it
            logits[matched] = self.net.option_logits(fused[matched], opts[matched]).to(logits.dtype)
        yes = self.net.yesno(fused).squeeze(-1)
        num = self.net.numeric(fused).squeeze(-1)
        cat = torch.log_softmax(self.net.category(fused), -1) if self.cfg.labels else None
        label_index = {lab: i for i, lab in enumerate(self.cfg.labels)}
        bonus = torch.zeros_like(logits)
        for i, it in enumerate(items):
            letters = sorted(it["options"])[: logits.shape[1]]
            prior = self.prior_log_odds(it, letters, prior_exclude[i] if prior_exclude else None)
            for j, letter in enumerate(letters):
                bonus[i, j] += prior[j]
                text = it["options"][letter]
                if it["answer_type"] == "binary":
                    bonus[i, j] += yes[i] if text.lower() == "yes" else -yes[i]
                elif it["answer_type"] == "numeric":
                    try:
                        v = signed_log(float(text.split()[0]))
                    except (ValueError, IndexError):
                        continue
                    bonus[i, j] += -4.0 * torch.abs(num[i] - v)
                elif cat is not None and text in label_index:
                    bonus[i, j] += cat[i, label_index[text]]
        padded = logits <= -1e3  # option slots beyond the item's options
        return torch.where(head_only[:, None], bonus.masked_fill(padded, -1e4), logits + bonus)

    @staticmethod
    def question_kind(item: dict) -> dict | None:
        """A free-text item (``volvqa answer``) with its question kind filled
        in from the template registry: answer type, and the key the answer
        prior is looked up by; None when the question matches no kind."""
        if "answer_type" in item:
            return item
        from volvqa.qa.qid import param_key
        from volvqa.qa.readings import parse_question
        from volvqa.qa.templates import TEMPLATES
        readings = parse_question(item.get("question", ""))
        if not readings:
            return None
        tid, params = readings[0]
        t = TEMPLATES[tid]
        keep = params if t.key_params is None else {k: v for k, v in params.items() if k in t.key_params}
        return dict(item, template_id=tid, answer_type=t.answer_type, key=f"{tid}|{param_key(keep)}")

    def answer(self, volume, item: dict) -> Prediction:
        import torch
        t0 = time.perf_counter()
        kind = self.question_kind(item)
        if kind is None:
            from volvqa.qa.readings import supported_kinds
            msg = ("cannot answer: the question matches no question kind encoder3d was built for; supported: "
                   + "; ".join(supported_kinds()))
            return Prediction(item.get("qid", ""), msg, msg, self.name, time.perf_counter() - t0)
        item = kind
        key = volume  # identity, not id(): ids are reused once a volume is freed
        if self._vol_cache is None or self._vol_cache[0] is not key:
            with torch.no_grad():
                cell_ml = torch.tensor([grid_cell_ml(volume, self.cfg)])
                self._vol_cache = (key, self.net.visual(preprocess(volume.array, self.cfg)[None], cell_ml))
        vis = self._vol_cache[1]
        with torch.no_grad():
            q = torch.tensor([encode_text(item["question"], self.index, self.cfg.max_len)])
            fused = self.net.fuse(q, vis)
            if item.get("options"):
                logits = self.mc_logits(fused, [item])[0]
                letters = sorted(item["options"])
                out = letters[int(torch.argmax(logits[: len(letters)]))]
            elif item.get("answer_type") == "numeric":
                v = float(self.net.numeric(fused)[0, 0])
                out = f"{math.copysign(math.expm1(abs(v)), v):.2f}"
            elif item.get("answer_type") == "binary":
                yes_logit = self.net.yesno(fused)[0, 0] + self.prior_answer_logits([item])[0][0]
                out = "yes" if float(yes_logit) > 0 else "no"
            elif item.get("answer_type") == "bbox":
                b = torch.sigmoid(self.net.box(fused))[0].numpy()
                shape = np.array(volume.shape * 2, float) - 1
                out = str([int(round(x)) for x in b * shape])
            else:
                scores = torch.log_softmax(self.net.category(fused)[0], -1) + self.prior_answer_logits([item])[1][0]
                out = self.cfg.labels[int(torch.argmax(scores))] if self.cfg.labels else ""
        return Prediction(item["qid"], out, out, self.name, time.perf_counter() - t0)


def from_request(arg, request) -> Encoder3DAnswerer:
    """``encoder3d:runs/NAME``: a trained 3D-encoder run (config.json + model.safetensors)."""
    if not arg:
        raise VolvqaInputError(None, "give the run folder: encoder3d:runs/NAME", param="model", value="encoder3d")
    return Encoder3DAnswerer.load(arg)
