"""``volvqa train``: fit the encoder3d baseline on a built benchmark.

Seeded; train/validation from the dataset's splits; volumes are read from
a zarr cache of the canonical CTs (``<qa>/cache.zarr``, written on first
use) and resized once to the preset's grid. Each step encodes a few cases'
volumes once and answers many of their questions. On a GPU: bf16 autocast
and ``torch.compile``. The checkpoint with the best validation
multiple-choice accuracy is kept (safetensors + config.json).
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
from volvqa.models.encoder3d import (PRESETS, Encoder3DAnswerer, Encoder3DConfig, _net, build_vocab, encode_text,
                                     preprocess, signed_log)


def _cached_volumes(qa_dir: Path, cases: dict, case_ids: list[str]) -> dict:
    from volvqa.io import load_volume
    from volvqa.io.cache import has_case, read_case, write_case
    store = qa_dir / "cache.zarr"
    out = {}
    for cid in case_ids:
        if not has_case(store, cid):
            write_case(store, cid, load_volume(cases[cid]["ct"]))
        vol, _ = read_case(store, cid)
        out[cid] = vol
    return out


def train(qa_dir: str | Path, out_dir: str | Path, preset: str = "cpu-small", seed: int = 0,
          progress: bool = True, max_minutes: float | None = None) -> dict:
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file
    from tqdm import tqdm

    from volvqa.eval.run import load_qa
    from volvqa.io.atomic import write_text_atomic

    if preset not in PRESETS:
        raise VolvqaInputError(None, f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    p = PRESETS[preset]
    qa_dir, out_dir = Path(qa_dir), Path(out_dir)
    items, cases, _info = load_qa(qa_dir)
    train_items = [it for it in items if it["split"] == "train"]
    val_items = [it for it in items if it["split"] == "val" and it.get("options")]
    if not train_items:
        raise VolvqaInputError(qa_dir, "no train items")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    texts = [it["question"] for it in train_items] + [o for it in train_items for o in (it.get("options") or {}).values()]
    labels = sorted({str(it["answer"]) for it in items if it["answer_type"] == "categorical"} |
                    {o for it in items if it["answer_type"] == "categorical" for o in (it.get("options") or {}).values()})
    cfg = Encoder3DConfig(grid=tuple(p["grid"]), hidden=p["hidden"], vit_layers=p["vit_layers"], heads=p["heads"],
                          visual_tokens=tuple(p["visual_tokens"]), text_layers=p["text_layers"],
                          vocab=build_vocab(texts), labels=labels, seed=seed)
    net = _net(cfg).to(device)
    model = torch.compile(net) if device == "cuda" else net
    index = {w: i for i, w in enumerate(cfg.vocab)}
    answerer = Encoder3DAnswerer(cfg, net)
    case_ids = sorted({it["case_id"] for it in train_items + val_items})
    vols = _cached_volumes(qa_dir, cases, case_ids)
    tensors = {cid: preprocess(v.array, cfg) for cid, v in vols.items()}
    shapes = {cid: np.array(v.shape * 2, float) - 1 for cid, v in vols.items()}
    by_case: dict[str, list[dict]] = {}
    for it in train_items:
        by_case.setdefault(it["case_id"], []).append(it)
    train_cases = sorted(by_case)
    opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train_cases) / p["cases_per_step"])
    total = steps_per_epoch * p["epochs"]
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=p["lr"], total_steps=total, pct_start=0.1)
    label_index = {lab: i for i, lab in enumerate(labels)}
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device == "cuda" else _null()
    best, history, t_start = -1.0, [], time.perf_counter()
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    def batch_losses(batch_cases):
        vis = model.visual(torch.stack([tensors[c] for c in batch_cases]).to(device)) \
            if device == "cpu" else net.visual(torch.stack([tensors[c] for c in batch_cases]).to(device))
        chosen, rows = [], []
        for bi, c in enumerate(batch_cases):
            its = rng.sample(by_case[c], min(len(by_case[c]), p["questions_per_case"]))
            chosen += its
            rows += [bi] * len(its)
        q = torch.tensor([encode_text(it["question"], index, cfg.max_len) for it in chosen], device=device)
        fused = net.fuse(q, vis[torch.tensor(rows, device=device)])
        losses = []
        mc = [i for i, it in enumerate(chosen) if it.get("options")]
        if mc:
            logits = answerer.mc_logits(fused[mc], [chosen[i] for i in mc])
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
            losses.append(F.binary_cross_entropy_with_logits(net.yesno(fused[yn]).squeeze(-1), y))
        cat = [i for i, it in enumerate(chosen) if it["answer_type"] == "categorical" and str(it["answer"]) in label_index]
        if cat:
            y = torch.tensor([label_index[str(chosen[i]["answer"])] for i in cat], device=device)
            losses.append(F.cross_entropy(net.category(fused[cat]), y))
        bb = [i for i, it in enumerate(chosen) if it["answer_type"] == "bbox"]
        if bb:
            y = torch.tensor(np.array([np.array(chosen[i]["answer"]["voxel"], float) / shapes[chosen[i]["case_id"]]
                                       for i in bb]), dtype=torch.float32, device=device)
            losses.append(F.l1_loss(torch.sigmoid(net.box(fused[bb])), y))
        return sum(losses) / len(losses)

    def validate() -> float:
        net.eval()
        hits = []
        with torch.no_grad():
            for it in val_items:
                answerer._vol_cache = None
                hits.append(answerer.answer(vols[it["case_id"]], it).answer == it["correct_option"])
        net.train()
        return float(np.mean(hits)) if hits else float("nan")

    with tqdm(total=total, desc=f"train encoder3d ({preset})", unit="step", file=sys.stderr,
              disable=not progress or None) as bar:
        for epoch in range(p["epochs"]):
            net.train()
            order = train_cases[:]
            rng.shuffle(order)
            losses = []
            for s in range(steps_per_epoch):
                batch = order[s * p["cases_per_step"]:(s + 1) * p["cases_per_step"]]
                with amp:
                    loss = batch_losses(batch)
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
                bar.update(1)
            val = validate() if (epoch % 5 == 4 or epoch == p["epochs"] - 1) else float("nan")
            history.append({"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_mc_accuracy": val})
            bar.set_postfix(loss=f"{np.mean(losses):.3f}", val=f"{val:.3f}")
            if not math.isnan(val) and val > best:
                best = val
                _save(net, cfg, out_dir, preset, history, save_file, write_text_atomic)
            if max_minutes and (time.perf_counter() - t_start) / 60 > max_minutes:
                break
    if best < 0:
        _save(net, cfg, out_dir, preset, history, save_file, write_text_atomic)
    minutes = (time.perf_counter() - t_start) / 60
    return {"best_val_mc_accuracy": best, "epochs": len(history), "minutes": minutes, "device": device}


def _save(net, cfg, out_dir, preset, history, save_file, write_text_atomic):
    from volvqa.io.atomic import atomic_path
    state = {k: v.detach().float().cpu().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(out_dir / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    d = {"model": {k: list(v) if isinstance(v, tuple) else v for k, v in cfg.__dict__.items()}, "preset": preset,
         "preprocessing": {"hu_window": list(cfg.hu_window), "grid_dhw": list(cfg.grid),
                           "normalisation": "clip to window, scale to [0, 1], trilinear resize to grid"},
         "history": history}
    write_text_atomic(out_dir / "config.json", json.dumps(d, indent=1) + "\n")


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False
