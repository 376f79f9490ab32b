"""A trainable 3D-encoder VQA baseline in the style of M3D / RadFM.

Image: the canonical CT, HU clipped to a soft-tissue window [-160, 240] HU
(W400/L40) and scaled to [0, 1], resized (trilinear) to a fixed grid of
depth x height x width voxels, whatever its spacing (the grid, not mm, is
what the encoder sees; M3D used 32x256x256 with 4x16x16 patches: 2,048
tokens pooled to 256). Encoder: MONAI ViT over 4x16x16 patches, its token
grid average-pooled to a fixed number of visual tokens.
Text: our own word/digit tokenizer built from the training questions and
options (numbers are spelled digit by digit), a small Transformer encoder.
Fusion: the question tokens cross-attend to the visual tokens.
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
    hu_window: tuple[float, float] = HU_WINDOW
    seed: int = 0


PRESETS = {
    "cpu-small": dict(grid=(32, 96, 96), hidden=192, vit_layers=4, heads=4, visual_tokens=(2, 3, 3), text_layers=2,
                      epochs=60, cases_per_step=4, questions_per_case=32, lr=5e-4),
    # For tests only: a minute-scale run of the same code path.
    "cpu-tiny": dict(grid=(16, 48, 48), hidden=64, vit_layers=1, heads=2, visual_tokens=(1, 1, 1), text_layers=1,
                     epochs=5, cases_per_step=4, questions_per_case=16, lr=1e-3),
    "gpu": dict(grid=(32, 256, 256), hidden=768, vit_layers=12, heads=12, visual_tokens=(4, 8, 8), text_layers=4,
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
    t = F.interpolate(t, size=tuple(cfg.grid), mode="trilinear", align_corners=False)
    return t[0]


def signed_log(x):
    return math.copysign(math.log1p(abs(x)), x)


def _net(cfg: Encoder3DConfig):
    import torch
    from monai.networks.nets import ViT
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            h = cfg.hidden
            self.vit = ViT(in_channels=1, img_size=tuple(cfg.grid), patch_size=tuple(cfg.patch), hidden_size=h,
                           mlp_dim=2 * h, num_layers=cfg.vit_layers, num_heads=cfg.heads, classification=False)
            self.tok_grid = tuple(g // p for g, p in zip(cfg.grid, cfg.patch))
            self.pool = nn.AdaptiveAvgPool3d(tuple(cfg.visual_tokens))
            self.emb = nn.Embedding(len(cfg.vocab), h, padding_idx=PAD)
            self.pos = nn.Parameter(torch.zeros(1, cfg.max_len, h))
            layer = nn.TransformerEncoderLayer(h, cfg.heads, 2 * h, dropout=0.1, batch_first=True)
            self.text = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
            self.cross = nn.MultiheadAttention(h, cfg.heads, batch_first=True)
            self.norm = nn.LayerNorm(h)
            self.opt_score = nn.Sequential(nn.Linear(3 * h, h), nn.GELU(), nn.Linear(h, 1))
            self.numeric = nn.Linear(h, 1)
            self.yesno = nn.Linear(h, 1)
            self.category = nn.Linear(h, max(len(cfg.labels), 1))
            self.box = nn.Linear(h, 6)

        def visual(self, vol):  # (B, 1, D, H, W) -> (B, T, h)
            tokens, _ = self.vit(vol)
            b, n, h = tokens.shape
            g = tokens.transpose(1, 2).reshape(b, h, *self.tok_grid)
            return self.pool(g).flatten(2).transpose(1, 2)

        def encode(self, ids):  # (N, L) -> (N, L, h), mask
            mask = ids == PAD
            x = self.emb(ids) + self.pos[:, : ids.shape[1]]
            return self.text(x, src_key_padding_mask=mask), mask

        def fuse(self, q_ids, vis):  # vis: (N, T, h) one row per question
            q, mask = self.encode(q_ids)
            att, _ = self.cross(q, vis, vis)
            x = self.norm(q + att)
            keep = (~mask).unsqueeze(-1).float()
            return (x * keep).sum(1) / keep.sum(1).clamp(min=1)

        def option_logits(self, fused, opt_ids):  # fused (N, h); opt_ids (N, K, L)
            n, k, l_ = opt_ids.shape
            o, m = self.encode(opt_ids.reshape(n * k, l_))
            keep = (~m).unsqueeze(-1).float()
            o = ((o * keep).sum(1) / keep.sum(1).clamp(min=1)).reshape(n, k, -1)
            f = fused.unsqueeze(1).expand_as(o)
            logits = self.opt_score(torch.cat([f, o, f * o], -1)).squeeze(-1)
            return logits.masked_fill((opt_ids == PAD).all(-1), -1e4)

    return Net()


class Encoder3DAnswerer:
    name = "encoder3d"

    def __init__(self, cfg: Encoder3DConfig, net, run: str = ""):
        self.cfg, self.net = cfg, net
        self.index = {w: i for i, w in enumerate(cfg.vocab)}
        self.name = f"encoder3d:{run}" if run else "encoder3d"
        self._vol_cache: tuple[int, object] | None = None

    @classmethod
    def load(cls, run_dir: str | Path) -> "Encoder3DAnswerer":
        import torch
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
        torch.set_grad_enabled(False)
        return cls(cfg, net, run_dir.name)

    def _options_tensor(self, items, k_max=5):
        import torch
        out = torch.zeros(len(items), k_max, self.cfg.max_len // 2, dtype=torch.long)
        for i, it in enumerate(items):
            for j, letter in enumerate(sorted(it.get("options") or {})[:k_max]):
                out[i, j] = torch.tensor(encode_text(it["options"][letter], self.index, self.cfg.max_len // 2))
        return out

    def mc_logits(self, fused, items: list[dict]):
        """Option scores from the answer heads (yes/no logit, closeness of a
        number to the numeric head's estimate on a log scale, categorical
        log-probability); categorical options add a learned text-matching score."""
        import torch
        opts = self._options_tensor(items).to(fused.device)
        logits = self.net.option_logits(fused, opts)
        yes = self.net.yesno(fused).squeeze(-1)
        num = self.net.numeric(fused).squeeze(-1)
        cat = torch.log_softmax(self.net.category(fused), -1) if self.cfg.labels else None
        label_index = {lab: i for i, lab in enumerate(self.cfg.labels)}
        bonus = torch.zeros_like(logits)
        # Numbers and yes/no are scored by their answer heads alone: a learned
        # text match between the question and "23.4 mm" can only memorise
        # option strings of the training cases.
        head_only = torch.zeros(logits.shape[0], dtype=torch.bool, device=logits.device)
        for i, it in enumerate(items):
            head_only[i] = it["answer_type"] in ("binary", "numeric")
            for j, letter in enumerate(sorted(it["options"])[: logits.shape[1]]):
                text = it["options"][letter]
                if it["answer_type"] == "binary":
                    bonus[i, j] = yes[i] if text.lower() == "yes" else -yes[i]
                elif it["answer_type"] == "numeric":
                    try:
                        v = signed_log(float(text.split()[0]))
                    except (ValueError, IndexError):
                        continue
                    bonus[i, j] = -4.0 * torch.abs(num[i] - v)
                elif cat is not None and text in label_index:
                    bonus[i, j] = cat[i, label_index[text]]
        padded = logits <= -1e3  # option slots beyond the item's options
        return torch.where(head_only[:, None], bonus.masked_fill(padded, -1e4), logits + bonus)

    def answer(self, volume, item: dict) -> Prediction:
        import torch
        t0 = time.perf_counter()
        key = volume  # identity, not id(): ids are reused once a volume is freed
        if self._vol_cache is None or self._vol_cache[0] is not key:
            with torch.no_grad():
                self._vol_cache = (key, self.net.visual(preprocess(volume.array, self.cfg)[None]))
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
                out = "yes" if float(self.net.yesno(fused)[0, 0]) > 0 else "no"
            elif item.get("answer_type") == "bbox":
                b = torch.sigmoid(self.net.box(fused))[0].numpy()
                shape = np.array(volume.shape * 2, float) - 1
                out = str([int(round(x)) for x in b * shape])
            else:
                out = self.cfg.labels[int(torch.argmax(self.net.category(fused)[0]))] if self.cfg.labels else ""
        return Prediction(item["qid"], out, out, self.name, time.perf_counter() - t0)
