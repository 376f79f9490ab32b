"""The encoder3d network (``volvqa.models.encoder3d``): imported when a model is built or loaded, so that
importing the answerer's module does not import torch."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.nets import ViT
from torch import nn

from volvqa.models.encoder3d import PAD, Encoder3DConfig, cells_from_tokens, concept_parent, concept_phrase, tokenize


class Net(nn.Module):
    """The encoder3d network: a MONAI ViT over the CT grid (with anatomy logits per token and concept
    tokens when the config names anatomy channels), a text transformer, cross-attention and the
    answer heads."""

    def __init__(self, cfg: Encoder3DConfig):
        super().__init__()
        self.cfg = cfg
        h = cfg.hidden
        self.vit = ViT(in_channels=1, img_size=tuple(cfg.grid), patch_size=tuple(cfg.patch), hidden_size=h,
                       mlp_dim=2 * h, num_layers=cfg.vit_layers, num_heads=cfg.heads, classification=False)
        self.tok_grid = tuple(g // p for g, p in zip(cfg.grid, cfg.patch, strict=False))
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
        if cfg.anatomy:
            c, r = len(cfg.anatomy), cfg.anatomy_subgrid
            self.anat = nn.Linear(h, c * r ** 3)
            self.anat_in = nn.Linear(c * r ** 3, h)
            # One "concept" token per anatomy channel: its learned name plus
            # what the scan shows of it (peak and mean probability, size,
            # probability-weighted centre), so a question can attend to
            # "lesion in segment 3" and read its value.
            self.concept_name = nn.Parameter(torch.randn(1, c, h) * 0.02)
            n_feat = 6 if cfg.concept_version < 2 else 11
            self.concept_value = nn.Sequential(nn.Linear(n_feat, h), nn.GELU(), nn.Linear(h, h))
            if cfg.concept_version >= 2:
                index = {w: i for i, w in enumerate(cfg.vocab)}
                words = torch.zeros(c, 8, dtype=torch.long)
                for i, ch in enumerate(cfg.anatomy):
                    ids = [index[w] for w in tokenize(concept_phrase(ch)) if w in index][:8]
                    words[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
                self.register_buffer("concept_words", words, persistent=False)
                col = {ch: i for i, ch in enumerate(cfg.anatomy)}
                parent = [col.get(concept_parent(ch) or "", -1) for ch in cfg.anatomy]
                self.register_buffer("concept_parent", torch.tensor(parent), persistent=False)
            self.cell_grid = tuple(n * r for n in self.tok_grid)
            grid = torch.stack(torch.meshgrid(*[torch.linspace(0, 1, n) for n in self.cell_grid],
                                              indexing="ij"), -1)
            self.register_buffer("cell_zyx", grid.reshape(-1, 3), persistent=False)

    def features(self, vol):
        """(B, 1, D, H, W) -> the image encoder's output: ViT tokens (B, N, h)
        and per-token anatomy logits (B, N, r*r*r*C), or None."""
        tokens, _ = self.vit(vol)
        return tokens, (self.anat(tokens) if self.cfg.anatomy else None)

    def tokens_from(self, tokens, raw):
        """Image features -> tokens with the anatomy predictions added back,
        and anatomy logits (B, cells, C) on the cell grid (token grid x
        subgrid, z-y-x order), or None."""
        if raw is None:
            return tokens, None
        tokens = tokens + self.anat_in(torch.sigmoid(raw))
        return tokens, cells_from_tokens(raw, self.tok_grid, self.cfg.anatomy_subgrid)

    def tokens(self, vol):
        return self.tokens_from(*self.features(vol))

    def pooled(self, tokens):  # (B, N, h) -> (B, T, h)
        b, n, h = tokens.shape
        g = tokens.transpose(1, 2).reshape(b, h, *self.tok_grid)
        return self.pool(g).flatten(2).transpose(1, 2)

    def concepts(self, logits, vol=None, cell_ml=None):  # (B, N, C) -> (B, C, h)
        prob = torch.sigmoid(logits.float()).detach()
        mass = prob.sum(1)                                              # (B, C)
        centre = torch.einsum("bnc,nk->bck", prob, self.cell_zyx) / mass.clamp(min=1e-3)[..., None]
        feats = [prob.amax(1)[..., None], prob.mean(1)[..., None], torch.log1p(mass)[..., None] / 4, centre]
        name = self.concept_name
        if self.cfg.concept_version >= 2:
            # What the channel's cells look like: probability-weighted and
            # peak-cell intensity (window units, 0.1 = 40 HU), its contrast
            # with the parent organ (lesion vs liver), and its size in ml.
            if vol is None or cell_ml is None:
                raise ValueError("concept tokens need the volume on the grid and its cell volume (ml)")
            cell = [g // c for g, c in zip(self.cfg.grid, self.cell_grid, strict=False)]
            img = F.avg_pool3d(vol.float(), cell).flatten(1)               # (B, N)
            w = prob / mass.clamp(min=1e-3)[:, None]
            mean_i = torch.einsum("bnc,bn->bc", w, img)
            peak_i = torch.gather(img, 1, prob.argmax(1))
            has_parent = (self.concept_parent >= 0).float()
            contrast = (mean_i - mean_i[:, self.concept_parent.clamp(min=0)]) * has_parent
            ml = mass * cell_ml.float()[:, None]
            feats += [(mean_i[..., None] - 0.5) * 4, (peak_i[..., None] - 0.5) * 4, contrast[..., None] * 10,
                      torch.log1p(ml)[..., None] / 4, has_parent.expand_as(mass)[..., None]]
            words = self.concept_words
            emb = self.emb(words) * (words != PAD).unsqueeze(-1)
            name = name + emb.sum(1) / (words != PAD).sum(1, keepdim=True).clamp(min=1)
        feats = torch.cat(feats, -1)
        return name + self.concept_value(feats.to(self.concept_name.dtype))

    def visual_from(self, tokens, logits, vol=None, cell_ml=None):
        """-> (B, T, h): pooled patch tokens, then concept tokens."""
        pooled = self.pooled(tokens)
        return pooled if logits is None else torch.cat([pooled, self.concepts(logits, vol, cell_ml)], 1)

    def visual(self, vol, cell_ml=None):  # (B, 1, D, H, W), (B,) ml per cell -> (B, T, h)
        return self.visual_from(*self.tokens(vol), vol, cell_ml)

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

