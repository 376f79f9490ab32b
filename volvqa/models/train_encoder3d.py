"""``volvqa train``: fit the encoder3d baseline on a built benchmark.

Seeded; train/validation from the dataset's splits; volumes are read from
a zarr cache of the canonical CTs (``<qa>/cache.zarr``, written on first
use) and resized once to the preset's grid. Two stages: anatomy
pretraining of the image encoder on the training cases' masks, then the
questions on top of the frozen encoder (its features computed once per
case and view). On a GPU: bf16 autocast and ``torch.compile``. The
checkpoint with the best validation multiple-choice accuracy is kept
(safetensors + config.json).
"""
from __future__ import annotations

import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np

from volvqa.errors import VolvqaInputError
from volvqa.models.encoder3d import (
    ANATOMY_CHANNELS,
    PRESETS,
    Encoder3DAnswerer,
    Encoder3DConfig,
    _net,
    build_vocab,
    encode_text,
    grid_cell_ml,
    preprocess,
    signed_log,
)
from volvqa.models.encoder3d_anatomy import anatomy_targets, with_synthetic_lesions


def _cached_cases(qa_dir: Path, cases: dict, case_ids: list[str], with_masks: set[str]) -> dict:
    """case id -> (Volume, LabelMap or None) from ``<qa>/cache.zarr``; cases are
    written on first use, with their masks when they are in ``with_masks``."""
    from volvqa.io import load_volume
    from volvqa.io.cache import has_case, read_case, write_case
    from volvqa.models.grounded import dataset_masks
    store = qa_dir / "cache.zarr"
    masks_of = dataset_masks(cases)
    out = {}
    for cid in case_ids:
        need_masks = cid in with_masks and cases[cid].get("masks")
        if has_case(store, cid):
            vol, lm = read_case(store, cid)
            if need_masks and lm is None:  # cached by an earlier run without masks
                lm = masks_of(vol, {"case_id": cid})
                write_case(store, cid, vol, lm, overwrite=True)
        else:
            vol = load_volume(cases[cid]["ct"])
            lm = masks_of(vol, {"case_id": cid}) if need_masks else None
            write_case(store, cid, vol, lm)
        out[cid] = (vol, lm)
    return out


def question_phrasings(item: dict) -> list[str]:
    """Every paraphrase of the item's template with its parameters (the
    item's own question among them). Training draws one per step: on a
    small build the generator's hashed paraphrase choice can line up with the
    answer by chance (demo: "Is there hepatic steatosis by the liver-to-spleen
    ..." is "yes" for 6 of 7 training items), a shortcut a text encoder
    learns instead of reading the scan."""
    from volvqa.qa.generate import render_question
    from volvqa.qa.qid import params_of
    from volvqa.qa.templates import TEMPLATES
    t = TEMPLATES.get(item.get("template_id", ""))
    if t is None:
        return [item["question"]]
    params = params_of(item["qid"], typed=True)
    try:
        out = {render_question(t, params, k) for k in range(len(t.paraphrases))}
    except (KeyError, IndexError, ValueError):  # parameters the qid does not carry
        return [item["question"]]
    return sorted(out | {item["question"]})


def one_cycle(opt, max_lr: float, total_steps: int):
    """One-cycle schedule warming up over 10% of the steps, and over at least 2: torch's
    OneCycleLR divides by zero when the warm-up is one step (10 steps at 10%)."""
    import torch
    pct = min(max(0.1, 2.0 / max(total_steps, 1)), 0.5)
    if total_steps < 4:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=max_lr, total_steps=total_steps, pct_start=pct)


def train(qa_dir: str | Path, out_dir: str | Path, preset: str = "cpu-small", seed: int = 0,
          progress: bool = True, max_minutes: float | None = None, init_from: str | Path | None = None) -> dict:
    """Train an encoder3d run on a build's train split (anatomy pretraining, then questions), keeping the
    weights of the best validation multiple-choice accuracy in ``out_dir``; returns a summary."""
    if preset not in PRESETS:
        raise VolvqaInputError(None, f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    t = _Trainer(Path(qa_dir), Path(out_dir), preset, seed, progress, init_from)
    t.pretrain_anatomy()
    if t.frozen:
        t.precompute_views()
    best = t.train_questions(max_minutes)
    minutes = (time.perf_counter() - t.t_start) / 60
    return {"best_val_mc_accuracy": best, "epochs": sum("epoch" in h for h in t.history),
            "anatomy_epochs": sum("anatomy_epoch" in h for h in t.history), "anatomy_cases": len(t.anatomy_cases),
            "minutes": minutes, "device": t.device}


def _answer_priors(train_items: list[dict]) -> tuple[dict, dict]:
    """The question-only prior the answer heads start from (logit adjustment): train answer counts per
    question kind, and per (kind, case) to leave a training item's own case out of its prior."""
    from collections import Counter

    from volvqa.qa.audit import key_of
    answer_prior: dict[str, Counter] = {}
    own_counts: dict[tuple[str, str], Counter] = {}
    for it in train_items:
        it["key"] = it.get("key") or key_of(it)
        if it["answer_type"] in ("binary", "categorical"):
            answer_prior.setdefault(it["key"], Counter())[str(it["answer"]).lower()] += 1
            own_counts.setdefault((it["key"], it["case_id"]), Counter())[str(it["answer"]).lower()] += 1
    return answer_prior, own_counts


class _Trainer:
    """One training run: its data, network, optimiser and the random streams (one Python ``random``, one
    torch generator, both seeded), used in a fixed order so that a seed gives the same weights."""

    def __init__(self, qa_dir: Path, out_dir: Path, preset: str, seed: int, progress: bool, init_from):
        import torch

        from volvqa.bench.layout import load_qa
        self.p, self.preset, self.out_dir, self.progress = PRESETS[preset], preset, out_dir, progress
        p = self.p
        items, cases, _info = load_qa(qa_dir)
        self.train_items = [it for it in items if it["split"] == "train"]
        self.val_items = [it for it in items if it["split"] == "val" and it.get("options")]
        if not self.train_items:
            raise VolvqaInputError(qa_dir, "no train items")
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.phrasings = {it["qid"]: question_phrasings(it) if p.get("paraphrase_augment") else [it["question"]]
                          for it in self.train_items}
        answer_prior, self.own_counts = _answer_priors(self.train_items)
        case_ids = sorted({it["case_id"] for it in self.train_items + self.val_items})
        train_case_ids = {it["case_id"] for it in self.train_items}
        use_anatomy = p.get("anatomy_epochs", 0) > 0
        loaded = _cached_cases(qa_dir, cases, case_ids, train_case_ids if use_anatomy else set())
        self.vols = {cid: v for cid, (v, _) in loaded.items()}
        # Only the training cases' masks teach anatomy; validation stays unseen.
        self.anatomy_cases = sorted(cid for cid in train_case_ids if loaded[cid][1] is not None) \
            if use_anatomy else []
        self._build_model(items, answer_prior, seed, init_from)
        cfg = self.cfg
        self.tensors = {cid: preprocess(v.array, cfg) for cid, v in self.vols.items()}
        self.shapes = {cid: np.array(v.shape * 2, float) - 1 for cid, v in self.vols.items()}
        self.cell_ml = {cid: grid_cell_ml(v, cfg) for cid, v in self.vols.items()}
        self.cell_grid = tuple(g // q * cfg.anatomy_subgrid for g, q in zip(cfg.grid, cfg.patch, strict=False))
        self.anat_epochs = 0 if init_from is not None else p.get("anatomy_epochs", 0)
        # Targets teach pretraining only; a run started from another's encoder skips it.
        self.targets = {cid: torch.from_numpy(anatomy_targets(loaded[cid][1], self.cell_grid))
                        for cid in (self.anatomy_cases if self.anat_epochs else [])}
        self.by_case: dict[str, list[dict]] = {}
        for it in self.train_items:
            self.by_case.setdefault(it["case_id"], []).append(it)
        self.train_cases = sorted(self.by_case)
        self.total_steps = math.ceil(len(self.train_cases) / p["cases_per_step"]) * p["epochs"]
        self.anat_steps = math.ceil(len(self.anatomy_cases) / p["cases_per_step"]) * self.anat_epochs
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=p["lr"], weight_decay=0.01)
        self.sched = one_cycle(self.opt, p["lr"], self.total_steps)
        self.label_index = {lab: i for i, lab in enumerate(cfg.labels)}
        self.amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if self.device == "cuda" else _null()
        self.history: list[dict] = []
        self.t_start = time.perf_counter()
        self.rng = random.Random(seed)
        self.gen = torch.Generator().manual_seed(seed)
        out_dir.mkdir(parents=True, exist_ok=True)
        # A lesion lies in a few cells of thousands: its presence counts 40x, or
        # the encoder learns to call every liver cell lesion-free.
        self.pos_weight = torch.tensor([40.0 if c.startswith("lesion") else 1.0 for c in cfg.anatomy],
                                       device=self.device)
        self.frozen = bool(p.get("freeze_encoder")) and bool(cfg.anatomy)
        self.views: dict[str, list] = {}

    def _build_model(self, items: list[dict], answer_prior: dict, seed: int, init_from) -> None:
        import torch
        p = self.p
        texts = ([q for it in self.train_items for q in self.phrasings[it["qid"]]]
                 + [o for it in self.train_items for o in (it.get("options") or {}).values()])
        labels = sorted({str(it["answer"]) for it in items if it["answer_type"] == "categorical"} |
                        {o for it in items if it["answer_type"] == "categorical"
                         for o in (it.get("options") or {}).values()})
        cfg = Encoder3DConfig(grid=tuple(p["grid"]), patch=tuple(p["patch"]), hidden=p["hidden"],
                              vit_layers=p["vit_layers"], heads=p["heads"],
                              visual_tokens=tuple(p["visual_tokens"]), text_layers=p["text_layers"],
                              vocab=build_vocab(texts), labels=labels,
                              anatomy=list(ANATOMY_CHANNELS) if self.anatomy_cases else [], resize="area",
                              concept_version=2, seed=seed,
                              answer_prior={k: dict(sorted(c.items())) for k, c in sorted(answer_prior.items())})
        self.cfg = cfg
        self.net = _net(cfg).to(self.device)
        if init_from is not None:
            _load_encoder(self.net, cfg, Path(init_from))
        self.model = torch.compile(self.net) if self.device == "cuda" else self.net
        self.index = {w: i for i, w in enumerate(cfg.vocab)}
        self.answerer = Encoder3DAnswerer(cfg, self.net)

    def images(self, batch_cases):
        """The batch's volumes with a random window jitter (contrast x0.9-1.1,
        level +-0.05 of the window), so the encoder does not key on exact HU."""
        import torch
        x = torch.stack([self.tensors[c] for c in batch_cases])
        scale = 1.0 + 0.1 * (2 * torch.rand(len(batch_cases), 1, 1, 1, 1, generator=self.gen) - 1)
        shift = 0.05 * (2 * torch.rand(len(batch_cases), 1, 1, 1, 1, generator=self.gen) - 1)
        return (x - 0.5) * scale + 0.5 + shift

    def pretraining_loss(self, batch):
        import torch
        import torch.nn.functional as F
        x = self.images(batch)
        y = torch.stack([self.targets[c] for c in batch]).clone()
        x, y = with_synthetic_lesions(x, y, self.cfg, self.cell_grid, self.gen)
        logits = self.model.tokens(x.to(self.device))[1]
        return F.binary_cross_entropy_with_logits(logits.float(), y.to(self.device), pos_weight=self.pos_weight)

    def batch_losses(self, batch_cases):
        """Question losses of one batch: up to ``questions_per_case`` items per case, one phrasing each."""
        import torch
        net, device, p, rng = self.net, self.device, self.p, self.rng
        if self.frozen:  # one of each case's precomputed views
            picks = [self.views[c][int(torch.randint(len(self.views[c]), (1,), generator=self.gen))]
                     for c in batch_cases]
            feats, raw, x = (torch.stack([v[i] for v in picks]) for i in range(3))
            tokens, anat = net.tokens_from(feats, raw)
        else:
            x = self.images(batch_cases).to(device)
            tokens, anat = self.model.tokens(x)
        vis = net.visual_from(tokens, anat, x, torch.tensor([self.cell_ml[c] for c in batch_cases], device=device))
        chosen, rows = [], []
        for bi, c in enumerate(batch_cases):
            its = rng.sample(self.by_case[c], min(len(self.by_case[c]), p["questions_per_case"]))
            chosen += its
            rows += [bi] * len(its)
        q = torch.tensor([encode_text(rng.choice(self.phrasings[it["qid"]]), self.index, self.cfg.max_len)
                          for it in chosen], device=device)
        fused = net.fuse(q, vis[torch.tensor(rows, device=device)])
        losses = self.answer_losses(fused, chosen)
        return sum(losses) / len(losses)

    def answer_losses(self, fused, chosen: list[dict]) -> list:
        """One loss per answer head that the chosen items use."""
        import torch
        import torch.nn.functional as F
        net, device = self.net, self.device
        losses = []
        own = [self.own_counts.get((it["key"], it["case_id"])) for it in chosen]
        prior_yes, prior_cat = (t.to(device) for t in self.answerer.prior_answer_logits(chosen, own))
        mc = [i for i, it in enumerate(chosen) if it.get("options")]
        if mc:
            logits = self.answerer.mc_logits(fused[mc], [chosen[i] for i in mc], [own[i] for i in mc])
            target = torch.tensor([sorted(chosen[i]["options"]).index(chosen[i]["correct_option"]) for i in mc],
                                  device=device)
            losses.append(F.cross_entropy(logits, target))
        num = [i for i, it in enumerate(chosen) if it["answer_type"] == "numeric"]
        if num:
            y = torch.tensor([signed_log(float(chosen[i]["answer"])) for i in num], device=device)
            losses.append(0.5 * F.smooth_l1_loss(net.numeric(fused[num]).squeeze(-1), y))
        yn = [i for i, it in enumerate(chosen) if it["answer_type"] == "binary"]
        if yn:
            y = torch.tensor([1.0 if chosen[i]["answer"] == "yes" else 0.0 for i in yn], device=device)
            yes_logit = net.yesno(fused[yn]).squeeze(-1) + prior_yes[yn]
            losses.append(F.binary_cross_entropy_with_logits(yes_logit, y))
        cat = [i for i, it in enumerate(chosen)
               if it["answer_type"] == "categorical" and str(it["answer"]) in self.label_index]
        if cat:
            y = torch.tensor([self.label_index[str(chosen[i]["answer"])] for i in cat], device=device)
            cat_logp = torch.log_softmax(net.category(fused[cat]), -1) + prior_cat[cat]
            losses.append(F.cross_entropy(cat_logp, y))
        bb = [i for i, it in enumerate(chosen) if it["answer_type"] == "bbox"]
        if bb:
            y = torch.tensor(np.array([np.array(chosen[i]["answer"]["voxel"], float)
                                       / self.shapes[chosen[i]["case_id"]] for i in bb]),
                             dtype=torch.float32, device=device)
            losses.append(F.l1_loss(torch.sigmoid(net.box(fused[bb])), y))
        return losses

    def validate(self) -> float:
        import torch
        self.net.eval()
        hits = []
        with torch.no_grad():
            self.answerer._vol_cache = None  # weights changed since the last call
            for it in self.val_items:
                hits.append(self.answerer.answer(self.vols[it["case_id"]], it).answer == it["correct_option"])
        self.net.train()
        return float(np.mean(hits)) if hits else float("nan")

    def run_epoch(self, case_ids, loss_of, optimizer, scheduler, params, bar) -> float:
        """One pass over ``case_ids`` in shuffled batches; mean loss."""
        import torch
        self.net.train()
        order = case_ids[:]
        self.rng.shuffle(order)
        losses = []
        step_cases = self.p["cases_per_step"]
        for s in range(math.ceil(len(order) / step_cases)):
            batch = order[s * step_cases:(s + 1) * step_cases]
            with self.amp:
                loss = loss_of(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        return float(np.mean(losses))

    def _bar(self, total: int, desc: str):
        from tqdm import tqdm
        return tqdm(total=total, desc=desc, unit="step", file=sys.stderr, disable=not self.progress or None)

    def pretrain_anatomy(self) -> None:
        import torch
        if not self.anat_steps:
            return
        net = self.net
        anat_params = list(net.vit.parameters()) + list(net.anat.parameters())
        opt_a = torch.optim.AdamW(anat_params, lr=self.p["lr"], weight_decay=0.01)
        sched_a = one_cycle(opt_a, self.p["lr"], self.anat_steps)
        with self._bar(self.anat_steps, f"encoder3d anatomy pretraining ({self.preset})") as bar:
            for epoch in range(self.anat_epochs):
                loss = self.run_epoch(self.anatomy_cases, self.pretraining_loss, opt_a, sched_a, anat_params, bar)
                self.history.append({"anatomy_epoch": epoch + 1, "anatomy_loss": loss,
                                     "minutes": round((time.perf_counter() - self.t_start) / 60, 2)})
                bar.set_postfix(loss=f"{loss:.4f}")

    def precompute_views(self) -> None:
        """The question stage trains on top of the pretrained encoder: each training case's image
        features are computed once per view (view 0 as is, the others window-jittered), so a question
        step costs the text side only and the answers must come from what pretraining taught the
        encoder to see."""
        import torch
        for module in (self.net.vit, self.net.anat):
            module.requires_grad_(False)
        self.net.eval()
        step_cases = self.p["cases_per_step"]
        with torch.no_grad():
            for v in range(self.p.get("views", 1)):
                for s in range(0, len(self.train_cases), step_cases):
                    batch = self.train_cases[s:s + step_cases]
                    x = (self.images(batch) if v else torch.stack([self.tensors[c] for c in batch])).to(self.device)
                    with self.amp:
                        feats, raw = self.model.features(x)
                    for i, c in enumerate(batch):
                        self.views.setdefault(c, []).append((feats[i].float(), raw[i].float(), x[i]))

    def train_questions(self, max_minutes: float | None) -> float:
        """The question epochs, validating every 5th and the last; returns the best validation accuracy."""
        from safetensors.torch import save_file

        from volvqa.io.atomic import write_text_atomic
        net, cfg, p, best = self.net, self.cfg, self.p, -1.0
        with self._bar(self.total_steps, f"train encoder3d ({self.preset})") as bar:
            for epoch in range(p["epochs"]):
                loss = self.run_epoch(self.train_cases, self.batch_losses, self.opt, self.sched,
                                      list(net.parameters()), bar)
                val = self.validate() if (epoch % 5 == 4 or epoch == p["epochs"] - 1) else float("nan")
                self.history.append({"epoch": epoch + 1, "loss": loss, "val_mc_accuracy": val,
                                     "minutes": round((time.perf_counter() - self.t_start) / 60, 2)})
                bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}")
                if not math.isnan(val) and val > best:
                    best = val
                    _save(net, cfg, self.out_dir, self.preset, self.history, save_file, write_text_atomic)
                if max_minutes and (time.perf_counter() - self.t_start) / 60 > max_minutes:
                    break
        if best < 0:
            _save(net, cfg, self.out_dir, self.preset, self.history, save_file, write_text_atomic)
        return best


def _load_encoder(net, cfg, run_dir: Path) -> None:
    """Copy the image encoder (ViT and anatomy head) of a saved run into
    ``net``; grid, patch, width and anatomy channels must match."""
    from safetensors.torch import load_file
    if not (run_dir / "config.json").is_file() or not (run_dir / "model.safetensors").is_file():
        raise VolvqaInputError(run_dir, "not an encoder3d run (needs config.json and model.safetensors)")
    src = json.loads((run_dir / "config.json").read_text())["model"]
    for key in ("grid", "patch", "hidden", "vit_layers", "heads", "anatomy", "anatomy_subgrid"):
        if list(np.atleast_1d(src.get(key, []))) != list(np.atleast_1d(getattr(cfg, key))):
            raise VolvqaInputError(run_dir, f"its encoder does not match this preset ({key}: {src.get(key)} "
                                            f"vs {getattr(cfg, key)})")
    state = load_file(str(run_dir / "model.safetensors"))
    net.load_state_dict({k: v for k, v in state.items() if k.split(".")[0] in ("vit", "anat")}, strict=False)


def _save(net, cfg, out_dir, preset, history, save_file, write_text_atomic):
    from volvqa.io.atomic import atomic_path
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    d = {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}, "preset": preset,
         "preprocessing": {"hu_window": list(cfg.hu_window), "grid_dhw": list(cfg.grid),
                           "normalisation": f"clip to window, scale to [0, 1], {cfg.resize} resize to grid"},
         "history": history}
    write_text_atomic(out_dir / "config.json", json.dumps(d, indent=1) + "\n")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
