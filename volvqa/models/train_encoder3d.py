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


# A lesion channel's target is its share of the block over this, capped at 1:
# half the cells a lesion touches hold under 5% of it, invisible on the grid
# (a detector given the liver mask finds cells holding over 5% against cells
# holding none with AUC 0.98 on the demo grid), and marking every touched
# cell 1 taught the encoder to hedge.
LESION_FULL_COVERAGE = 0.05


def anatomy_targets(labelmap, token_grid: tuple[int, int, int]) -> np.ndarray:
    """(tokens, channels) float32 targets for ``ANATOMY_CHANNELS`` in the ViT's
    token order (z, y, x): the fraction of each token's block covered by an
    organ or part, and for lesions (per family, per part, per kidney side)
    the fraction covered over ``LESION_FULL_COVERAGE``, capped at 1. The
    volume is cut into token blocks the way the encoder's resize maps it: block k along an axis of n voxels holds
    voxels i with floor(i * tokens / n) == k."""
    from volvqa.labels import LESION_ORGAN, is_lesion
    from volvqa.models.encoder3d import ANATOMY_CHANNELS, ANATOMY_LESION_FAMILIES, ANATOMY_ORGANS, ANATOMY_PARTS
    arr = np.asarray(labelmap.array)
    nx, ny, nz = arr.shape
    tz, ty, tx = token_grid
    bx = (np.arange(nx) * tx // nx).astype(np.int64)
    by = (np.arange(ny) * ty // ny).astype(np.int64)
    bz = (np.arange(nz) * tz // nz).astype(np.int64)
    block = (bz[None, None, :] * (ty * tx) + by[None, :, None] * tx + bx[:, None, None]).ravel()
    n_tok = tz * ty * tx
    size = np.bincount(block, minlength=n_tok).astype(np.float32)
    col = {c: i for i, c in enumerate(ANATOMY_CHANNELS)}
    out = np.zeros((n_tok, len(ANATOMY_CHANNELS)), np.float32)
    flat = arr.ravel()
    max_id = int(flat.max()) if flat.size else 0

    def lut(mapping: dict[int, int]) -> np.ndarray:
        t = np.full(max(max_id, max(mapping, default=0)) + 1, -1, np.int64)
        for k, v in mapping.items():
            t[k] = v
        return t

    organ_ch = lut({i: col[f"organ:{n}"] for i, n in labelmap.labels.items() if n in ANATOMY_ORGANS})
    ch = organ_ch[flat]
    keep = ch >= 0
    counts = np.bincount(block[keep] * out.shape[1] + ch[keep], minlength=out.size).reshape(out.shape)
    out += counts / size[:, None]

    def family(name: str) -> str:
        f = LESION_ORGAN.get(name, "other")
        return f if f in ANATOMY_LESION_FAMILIES else "other"

    lesion_ch = lut({i: col[f"lesion:{family(n)}"] for i, n in labelmap.labels.items() if is_lesion(n)})
    lesion = np.nonzero(lesion_ch[flat] >= 0)[0]       # flat indices of lesion voxels (few)
    les_ch, les_block = lesion_ch[flat[lesion]], block[lesion]
    lesion_count = np.zeros_like(out)
    np.add.at(lesion_count, (les_block, les_ch), 1.0)
    if labelmap.parts is not None:
        parts = np.asarray(labelmap.parts).ravel()
        pmax = int(parts.max()) if parts.size else 0
        part_ch = np.full(max(pmax, max(labelmap.part_labels, default=0)) + 1, -1, np.int64)
        for i, n in labelmap.part_labels.items():
            if n in ANATOMY_PARTS:
                part_ch[i] = col[f"part:{n}"]
        ch = part_ch[parts]
        keep = ch >= 0
        counts = np.bincount(block[keep] * out.shape[1] + ch[keep], minlength=out.size).reshape(out.shape)
        out += counts / size[:, None]
        ch = part_ch[parts[lesion]]
        keep = ch >= 0
        np.add.at(lesion_count, (les_block[keep], ch[keep] - col["part:liver_segment_1"] + col["lesion@liver_segment_1"]),
                  1.0)
    kidney_lesion = les_ch == col["lesion:kidney"]
    if kidney_lesion.any():
        # A kidney lesion voxel belongs to the kidney whose centre (x) is nearer.
        x_of = lesion[kidney_lesion] // (ny * nz)
        centre_x = {}
        for side in ("left", "right"):
            i = labelmap.id_of(f"kidney_{side}")
            xs = np.nonzero(np.any(arr == i, axis=(1, 2)))[0] if i is not None else []
            if len(xs):
                counts = np.count_nonzero(arr[xs[0]:xs[-1] + 1] == i, axis=(1, 2))
                centre_x[side] = float((np.arange(xs[0], xs[-1] + 1) * counts).sum() / counts.sum())
        if centre_x:
            names = sorted(centre_x)
            nearest = np.argmin(np.abs(x_of[:, None] - np.array([centre_x[n] for n in names])[None]), axis=1)
            for j, side in enumerate(names):
                np.add.at(lesion_count, (les_block[kidney_lesion][nearest == j], col[f"lesion@kidney_{side}"]), 1.0)
    out += np.minimum(lesion_count / size[:, None] / LESION_FULL_COVERAGE, 1.0)
    return out


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
    import torch
    import torch.nn.functional as F
    from safetensors.torch import save_file
    from tqdm import tqdm

    from volvqa.bench.layout import load_qa
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
    phrasings = {it["qid"]: question_phrasings(it) if p.get("paraphrase_augment") else [it["question"]]
                 for it in train_items}
    texts = ([q for it in train_items for q in phrasings[it["qid"]]]
             + [o for it in train_items for o in (it.get("options") or {}).values()])
    labels = sorted({str(it["answer"]) for it in items if it["answer_type"] == "categorical"} |
                    {o for it in items if it["answer_type"] == "categorical" for o in (it.get("options") or {}).values()})
    # The question-only prior the answer heads start from (logit adjustment):
    # train answer counts per question kind, and per case to leave a training
    # item's own case out of its prior.
    from collections import Counter

    from volvqa.qa.audit import key_of
    answer_prior: dict[str, Counter] = {}
    own_counts: dict[tuple[str, str], Counter] = {}
    for it in train_items:
        it["key"] = it.get("key") or key_of(it)
        if it["answer_type"] in ("binary", "categorical"):
            answer_prior.setdefault(it["key"], Counter())[str(it["answer"]).lower()] += 1
            own_counts.setdefault((it["key"], it["case_id"]), Counter())[str(it["answer"]).lower()] += 1
    case_ids = sorted({it["case_id"] for it in train_items + val_items})
    train_case_ids = {it["case_id"] for it in train_items}
    use_anatomy = p.get("anatomy_epochs", 0) > 0
    loaded = _cached_cases(qa_dir, cases, case_ids, train_case_ids if use_anatomy else set())
    vols = {cid: v for cid, (v, _) in loaded.items()}
    # Only the training cases' masks teach anatomy; validation stays unseen.
    anatomy_cases = sorted(cid for cid in train_case_ids if loaded[cid][1] is not None) if use_anatomy else []
    cfg = Encoder3DConfig(grid=tuple(p["grid"]), patch=tuple(p["patch"]), hidden=p["hidden"],
                          vit_layers=p["vit_layers"], heads=p["heads"],
                          visual_tokens=tuple(p["visual_tokens"]), text_layers=p["text_layers"],
                          vocab=build_vocab(texts), labels=labels,
                          anatomy=list(ANATOMY_CHANNELS) if anatomy_cases else [], resize="area",
                          concept_version=2, seed=seed,
                          answer_prior={k: dict(sorted(c.items())) for k, c in sorted(answer_prior.items())})
    net = _net(cfg).to(device)
    if init_from is not None:
        _load_encoder(net, cfg, Path(init_from))
    model = torch.compile(net) if device == "cuda" else net
    index = {w: i for i, w in enumerate(cfg.vocab)}
    answerer = Encoder3DAnswerer(cfg, net)
    tensors = {cid: preprocess(v.array, cfg) for cid, v in vols.items()}
    shapes = {cid: np.array(v.shape * 2, float) - 1 for cid, v in vols.items()}
    cell_ml = {cid: grid_cell_ml(v, cfg) for cid, v in vols.items()}
    cell_grid = tuple(g // q * cfg.anatomy_subgrid for g, q in zip(cfg.grid, cfg.patch, strict=False))
    anat_epochs = 0 if init_from is not None else p.get("anatomy_epochs", 0)
    # Targets teach pretraining only; a run started from another's encoder skips it.
    targets = {cid: torch.from_numpy(anatomy_targets(loaded[cid][1], cell_grid))
               for cid in (anatomy_cases if anat_epochs else [])}
    col = {c: i for i, c in enumerate(ANATOMY_CHANNELS)}
    by_case: dict[str, list[dict]] = {}
    for it in train_items:
        by_case.setdefault(it["case_id"], []).append(it)
    train_cases = sorted(by_case)
    steps_per_epoch = math.ceil(len(train_cases) / p["cases_per_step"])
    total = steps_per_epoch * p["epochs"]
    anat_steps = math.ceil(len(anatomy_cases) / p["cases_per_step"]) * anat_epochs
    opt = torch.optim.AdamW(net.parameters(), lr=p["lr"], weight_decay=0.01)
    sched = one_cycle(opt, p["lr"], total)
    label_index = {lab: i for i, lab in enumerate(labels)}
    amp = torch.autocast(device_type="cuda", dtype=torch.bfloat16) if device == "cuda" else _null()
    best, history, t_start = -1.0, [], time.perf_counter()
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    # A lesion lies in a few cells of thousands: its presence counts 40x, or
    # the encoder learns to call every liver cell lesion-free.
    pos_weight = torch.tensor([40.0 if c.startswith("lesion") else 1.0 for c in cfg.anatomy], device=device)

    def images(batch_cases):
        """The batch's volumes with a random window jitter (contrast x0.9-1.1,
        level +-0.05 of the window), so the encoder does not key on exact HU."""
        x = torch.stack([tensors[c] for c in batch_cases])
        scale = 1.0 + 0.1 * (2 * torch.rand(len(batch_cases), 1, 1, 1, 1, generator=gen) - 1)
        shift = 0.05 * (2 * torch.rand(len(batch_cases), 1, 1, 1, 1, generator=gen) - 1)
        return (x - 0.5) * scale + 0.5 + shift

    def anatomy_loss(logits, y):
        return F.binary_cross_entropy_with_logits(logits.float(), y.to(device), pos_weight=pos_weight)

    def with_synthetic_lesions(x, batch_cases):
        """Pretraining only: 0-3 extra liver lesions per volume, painted on the
        grid (ellipsoids 1-3 cells across, -0.13 to -0.04 or +0.06 to +0.1 of
        the window, soft 1-voxel edge) with their cells marked in the targets:
        27 training cases hold too few real lesions to learn to find them."""
        y = torch.stack([targets[c] for c in batch_cases]).clone()
        cz, cy, cx = cell_grid
        gz, gy, gx = cfg.grid
        kz, ky, kx = gz // cz, gy // cy, gx // cx
        liver_c, les_c, seg0, les_seg0 = (col[k] for k in ("organ:liver", "lesion:liver", "part:liver_segment_1",
                                                            "lesion@liver_segment_1"))
        for b in range(len(batch_cases)):
            inside = torch.nonzero(y[b, :, liver_c] > 0.8).flatten()
            for _ in range(int(torch.randint(0, 4, (1,), generator=gen)) if len(inside) else 0):
                cell = int(inside[torch.randint(len(inside), (1,), generator=gen)])
                iz, iy, ix = cell // (cy * cx), (cell // cx) % cy, cell % cx
                centre = torch.tensor([(iz + 0.5) * kz, (iy + 0.5) * ky, (ix + 0.5) * kx])
                radius = torch.tensor([kz, ky, kx]) * (0.5 + torch.rand(3, generator=gen) * 1.0)
                # The weight is 0 beyond d = 1 + 0.5 / min radius: only the box around that is computed.
                reach = radius * (1.0 + 0.5 / radius.min())
                box = tuple(slice(max(int(math.floor(c - r)), 0), min(int(math.ceil(c + r)) + 1, n))
                            for c, r, n in zip(centre.tolist(), reach.tolist(), cfg.grid, strict=False))
                zz, yy, xx = torch.meshgrid(*[torch.arange(sl.start, sl.stop) for sl in box], indexing="ij")
                d = torch.sqrt(((zz - centre[0]) / radius[0]) ** 2 + ((yy - centre[1]) / radius[1]) ** 2
                               + ((xx - centre[2]) / radius[2]) ** 2)
                weight = torch.clamp((1.0 - d) * radius.min() + 0.5, 0.0, 1.0)
                hyper = float(torch.rand(1, generator=gen)) < 0.15
                contrast = (0.06 + 0.04 * float(torch.rand(1, generator=gen))) if hyper else \
                    -(0.04 + 0.09 * float(torch.rand(1, generator=gen)))
                x[b, 0][box] += contrast * weight
                inside_lesion = torch.zeros(tuple(cfg.grid))
                inside_lesion[box] = (weight > 0.5).float()
                cover = F.avg_pool3d(inside_lesion[None, None], (kz, ky, kx))[0, 0].flatten()
                cover = torch.clamp(cover / LESION_FULL_COVERAGE, max=1.0)
                y[b, :, les_c] = torch.maximum(y[b, :, les_c], cover)
                seg = y[b][:, seg0:seg0 + 8].argmax(1)
                rows = torch.nonzero((cover > 0) & (y[b][:, seg0:seg0 + 8].amax(1) > 0)).flatten()
                y[b, rows, les_seg0 + seg[rows]] = torch.maximum(y[b, rows, les_seg0 + seg[rows]], cover[rows])
        return x, y

    frozen = bool(p.get("freeze_encoder")) and bool(cfg.anatomy)
    views: dict[str, list] = {}

    def batch_losses(batch_cases):
        if frozen:  # one of each case's precomputed views
            picks = [views[c][int(torch.randint(len(views[c]), (1,), generator=gen))] for c in batch_cases]
            feats, raw, x = (torch.stack([v[i] for v in picks]) for i in range(3))
            tokens, anat = net.tokens_from(feats, raw)
        else:
            x = images(batch_cases).to(device)
            tokens, anat = model.tokens(x)
        vis = net.visual_from(tokens, anat, x, torch.tensor([cell_ml[c] for c in batch_cases], device=device))
        chosen, rows = [], []
        for bi, c in enumerate(batch_cases):
            its = rng.sample(by_case[c], min(len(by_case[c]), p["questions_per_case"]))
            chosen += its
            rows += [bi] * len(its)
        q = torch.tensor([encode_text(rng.choice(phrasings[it["qid"]]), index, cfg.max_len) for it in chosen],
                         device=device)
        fused = net.fuse(q, vis[torch.tensor(rows, device=device)])
        losses = []
        own = [own_counts.get((it["key"], it["case_id"])) for it in chosen]
        prior_yes, prior_cat = (t.to(device) for t in answerer.prior_answer_logits(chosen, own))
        mc = [i for i, it in enumerate(chosen) if it.get("options")]
        if mc:
            logits = answerer.mc_logits(fused[mc], [chosen[i] for i in mc], [own[i] for i in mc])
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
        cat = [i for i, it in enumerate(chosen) if it["answer_type"] == "categorical" and str(it["answer"]) in label_index]
        if cat:
            y = torch.tensor([label_index[str(chosen[i]["answer"])] for i in cat], device=device)
            cat_logp = torch.log_softmax(net.category(fused[cat]), -1) + prior_cat[cat]
            losses.append(F.cross_entropy(cat_logp, y))
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
            answerer._vol_cache = None  # weights changed since the last call
            for it in val_items:
                hits.append(answerer.answer(vols[it["case_id"]], it).answer == it["correct_option"])
        net.train()
        return float(np.mean(hits)) if hits else float("nan")

    def run_epoch(case_ids, loss_of, optimizer, scheduler, params, bar) -> float:
        """One pass over ``case_ids`` in shuffled batches; mean loss."""
        net.train()
        order = case_ids[:]
        rng.shuffle(order)
        losses = []
        for s in range(math.ceil(len(order) / p["cases_per_step"])):
            batch = order[s * p["cases_per_step"]:(s + 1) * p["cases_per_step"]]
            with amp:
                loss = loss_of(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            scheduler.step()
            losses.append(float(loss.detach()))
            bar.update(1)
        return float(np.mean(losses))

    def pretraining_loss(batch):
        x, y = with_synthetic_lesions(images(batch), batch)
        return anatomy_loss(model.tokens(x.to(device))[1], y)

    if anat_steps:
        anat_params = list(net.vit.parameters()) + list(net.anat.parameters())
        opt_a = torch.optim.AdamW(anat_params, lr=p["lr"], weight_decay=0.01)
        sched_a = one_cycle(opt_a, p["lr"], anat_steps)
        with tqdm(total=anat_steps, desc=f"encoder3d anatomy pretraining ({preset})", unit="step", file=sys.stderr,
                  disable=not progress or None) as bar:
            for epoch in range(anat_epochs):
                loss = run_epoch(anatomy_cases, pretraining_loss, opt_a, sched_a, anat_params, bar)
                history.append({"anatomy_epoch": epoch + 1, "anatomy_loss": loss,
                                "minutes": round((time.perf_counter() - t_start) / 60, 2)})
                bar.set_postfix(loss=f"{loss:.4f}")
    if frozen:
        # The question stage trains on top of the pretrained encoder: each
        # training case's image features are computed once per view (view 0
        # as is, the others window-jittered), so a question step costs the
        # text side only and the answers must come from what pretraining
        # taught the encoder to see.
        for module in (net.vit, net.anat):
            module.requires_grad_(False)
        net.eval()
        with torch.no_grad():
            for v in range(p.get("views", 1)):
                for s in range(0, len(train_cases), p["cases_per_step"]):
                    batch = train_cases[s:s + p["cases_per_step"]]
                    x = (images(batch) if v else torch.stack([tensors[c] for c in batch])).to(device)
                    with amp:
                        feats, raw = model.features(x)
                    for i, c in enumerate(batch):
                        views.setdefault(c, []).append((feats[i].float(), raw[i].float(), x[i]))
    with tqdm(total=total, desc=f"train encoder3d ({preset})", unit="step", file=sys.stderr,
              disable=not progress or None) as bar:
        for epoch in range(p["epochs"]):
            loss = run_epoch(train_cases, batch_losses, opt, sched, list(net.parameters()), bar)
            val = validate() if (epoch % 5 == 4 or epoch == p["epochs"] - 1) else float("nan")
            history.append({"epoch": epoch + 1, "loss": loss, "val_mc_accuracy": val,
                            "minutes": round((time.perf_counter() - t_start) / 60, 2)})
            bar.set_postfix(loss=f"{loss:.3f}", val=f"{val:.3f}")
            if not math.isnan(val) and val > best:
                best = val
                _save(net, cfg, out_dir, preset, history, save_file, write_text_atomic)
            if max_minutes and (time.perf_counter() - t_start) / 60 > max_minutes:
                break
    if best < 0:
        _save(net, cfg, out_dir, preset, history, save_file, write_text_atomic)
    minutes = (time.perf_counter() - t_start) / 60
    return {"best_val_mc_accuracy": best, "epochs": sum("epoch" in h for h in history),
            "anatomy_epochs": sum("anatomy_epoch" in h for h in history), "anatomy_cases": len(anatomy_cases),
            "minutes": minutes, "device": device}


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
