"""Running answerers over a built benchmark, and scoring their predictions."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from volvqa.bench.layout import TRACES_JSONL, load_qa, load_traces
from volvqa.errors import VolvqaInputError
from volvqa.eval.metrics import aggregate, score_item
from volvqa.qa.dtv import dtv_answer_text


def make_answerer(spec: str, items: list[dict], cases: dict, info: dict, mode: str,
                  segmenter: str | None = None, device: str = "auto", input_format: str | None = None,
                  prompt_style: str = "volvqa", agent_options: dict | None = None):
    """The answerer a spec names, over a built benchmark (``volvqa.models.registry``)."""
    from volvqa.models.registry import ModelRequest
    from volvqa.models.registry import make_answerer as make
    return make(spec, ModelRequest(mode=mode, items=items, cases=cases, info=info, segmenter=segmenter,
                                   device=device, input_format=input_format, prompt_style=prompt_style,
                                   options=dict(agent_options or {})))


SWAP_CT = "swap-ct"


def predict(qa_dir: Path, model: str, split: str, out: Path, mode: str = "mc", progress: bool = True,
            perturbation: str | None = None, seed: int = 0, segmenter: str | None = None,
            device: str = "auto", input_format: str | None = None, prompt_style: str = "volvqa",
            agent_options: dict | None = None) -> int:
    from volvqa.io.atomic import write_text_atomic
    items, cases, info = load_qa(qa_dir)
    chosen = [it for it in items if split == "all" or it["split"] == split]
    if not chosen:
        raise VolvqaInputError(qa_dir, f"no items in split {split!r}")
    from volvqa.models.registry import is_plugin_class
    if prompt_style != "volvqa" and not is_plugin_class(model):
        raise VolvqaInputError(None, f"this prompt style is for module:Class plug-ins, not {model}",
                               param="prompt_style", value=prompt_style)
    answerer = make_answerer(model, items, cases, info, mode, segmenter=segmenter, device=device,
                             input_format=input_format, prompt_style=prompt_style, agent_options=agent_options)
    try:
        lines = _predict_items(answerer, chosen, cases, model, mode, progress, perturbation, seed)
    finally:
        if hasattr(answerer, "close"):
            answerer.close()
    write_text_atomic(out, "\n".join(lines) + "\n")
    return len(lines)


def _predict_items(answerer, chosen: list[dict], cases: dict, model: str, mode: str, progress: bool,
                   perturbation: str | None, seed: int) -> list[str]:
    from tqdm import tqdm

    from volvqa.io import load_volume
    # Agents reach the scan through their tools only.
    needs_volume = model != "prior" and not model.startswith("agent:")
    lines = []
    by_case: dict[str, list[dict]] = {}
    for it in chosen:
        by_case.setdefault(it["case_id"], []).append(it)
    with tqdm(total=len(chosen), desc=f"predict {answerer.name}", unit="q", file=sys.stderr,
              disable=not progress or None) as bar:
        order = sorted(by_case)
        for n, cid in enumerate(order):
            # swap-ct: every question gets the next case's CT, a control for
            # how much the answers depend on the image at all.
            ct_case = order[(n + 1) % len(order)] if perturbation == SWAP_CT else cid
            vol = load_volume(cases[ct_case]["ct"]) if needs_volume else None
            if vol is not None and perturbation and perturbation != SWAP_CT:
                from volvqa.eval.perturb import perturb
                vol = perturb(vol, perturbation, seed=seed)
            for it in by_case[cid]:
                pred = answerer.answer(vol, it).to_dict()
                pred["mode"] = mode
                if perturbation:
                    pred["perturbation"] = perturbation
                    pred["ct_case"] = ct_case
                lines.append(json.dumps(pred, sort_keys=True))
                bar.update(1)
    return lines


def load_predictions(path: Path) -> list[dict]:
    """Predictions JSONL (volvqa's), or a DeepTumorVQA results file
    (``{"results": [{qid, raw_output, pred_answer}, ...]}``, JSON)."""
    path = Path(path)
    if not path.is_file():
        raise VolvqaInputError(path, "predictions file not found")
    text = path.read_text()
    if text.lstrip().startswith("{") and '"results"' in text[:2000]:
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            out = []
            for r in data["results"]:
                pred = r.get("pred_answer") or r.get("raw_output") or ""
                out.append({"qid": str(r.get("qid")), "answer": str(pred), "raw_output": r.get("raw_output", ""),
                            "model": data.get("model", path.stem), "mode": data.get("mode", r.get("mode", "mc"))})
            return out
    try:
        return [json.loads(x) for x in text.splitlines() if x.strip()]
    except ValueError as e:
        raise VolvqaInputError(path, f"not valid JSON lines ({e})") from None


PROTOCOLS = ("strict", "deeptumorvqa")


def evaluate(qa_dir: Path, prediction_files: list[Path], protocol: str = "strict") -> dict:
    """Scores per model. ``strict``: volvqa's rules (``volvqa.eval.metrics``);
    ``deeptumorvqa``: DeepTumorVQA v2's evaluator (``volvqa.qa.dtv``),
    Localization left out."""
    if protocol not in PROTOCOLS:
        raise VolvqaInputError(None, f"unknown protocol {protocol!r}: use {', '.join(PROTOCOLS)}")
    items, _cases, _info = load_qa(qa_dir)
    by_qid = {it["qid"]: it for it in items}
    results = {}
    for pf in prediction_files:
        preds = load_predictions(pf)
        its, scores, rows = [], [], []
        for p in preds:
            it = by_qid.get(p.get("qid"))
            if it is None:
                raise VolvqaInputError(pf, f"prediction for unknown qid {p.get('qid')!r}")
            its.append(it)
            if protocol == "strict":
                scores.append(score_item(it, str(p.get("answer", "")), p.get("mode", "mc")))
            elif it["category"] != "Localization":
                rows.append(dtv_row(it, p))
        name = preds[0].get("model", Path(pf).stem) if preds else Path(pf).stem
        if name in results:
            name = f"{name} ({Path(pf).name})"
        if protocol == "strict":
            results[name] = aggregate(its, scores)
        else:
            fmt = "mc" if (preds and preds[0].get("mode", "mc") == "mc") else "freeform"
            results[name] = dtv_results(rows, fmt)
        if any((p.get("evidence") or {}).get("agent") for p in preds):
            from volvqa.agent.loop import tool_metrics
            traces = load_traces(qa_dir) if (Path(qa_dir) / TRACES_JSONL).is_file() else None
            results[name]["tools"] = tool_metrics(preds, traces)
    return results


def dtv_row(item: dict, pred: dict) -> tuple[str, str, dict]:
    """(DeepTumorVQA subtype, super type, its item score) for one prediction."""
    from volvqa.qa.dtv import dtv_subtype, score_one
    fmt = "mc" if pred.get("mode", "mc") == "mc" else "freeform"
    sub = dtv_subtype(item) or item["subtype"]
    gt = item.get("correct_option") if fmt == "mc" else dtv_answer_text(item)
    return sub, item["category"].lower(), score_one(sub, str(pred.get("answer", "")), str(gt or ""), fmt)


def dtv_results(rows: list[tuple[str, str, dict]], fmt: str) -> dict:
    """DeepTumorVQA's aggregate in the shape the rest of volvqa prints (scores in 0..1)."""
    from volvqa.qa.dtv import aggregate as dtv_aggregate
    agg = dtv_aggregate(rows, fmt)
    cats = {c.title(): {"score": v["accuracy"], "n": v["n_total"]} for c, v in agg["by_super_type"].items()}
    subs = {s: {"score": m.get("mean_mra", m.get("accuracy")), "n": m["n_total"]} for s, m in agg["by_subtype"].items()}
    return {"overall": {"score": agg["overall"]["accuracy"], "n": agg["overall"]["n_total"]}, "categories": cats,
            "subtypes": subs, "protocol": "deeptumorvqa", "deeptumorvqa": agg}


def _pct(x) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _num(x) -> str:
    return "-" if x is None else f"{x:.2f}"


CATEGORY_ORDER = ("Recognition", "Measurement", "Visual Reasoning", "Medical Reasoning", "Localization")


def write_report(results: dict, report: Path) -> list[Path]:
    """report.md with per-category and per-subtype tables, and one bar chart PNG per category."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from volvqa.io.atomic import write_text_atomic
    models = list(results)
    lines = ["# Evaluation", "", "Scores (%): multiple-choice letter accuracy (free form: MRA for numbers, exact match "
             "for categories, accuracy for yes/no); Localization: mean 3D IoU.", "",
             "| category | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    cats = [c for c in CATEGORY_ORDER if any(c in r["categories"] for r in results.values())]
    for c in cats:
        cells = [f"{results[m]['categories'][c]['score'] * 100:.1f}" if c in results[m]["categories"] else "-"
                 for m in models]
        ch = [results[m]["categories"][c].get("chance") for m in models if c in results[m]["categories"]]
        chance = f" (chance {ch[0] * 100:.1f})" if ch and ch[0] is not None else ""
        lines.append(f"| {c}{chance} | " + " | ".join(cells) + " |")
    lines.append("| **overall** | " + " | ".join(f"{results[m]['overall']['score'] * 100:.1f}" for m in models) + " |")
    agents = [m for m in models if results[m].get("tools")]
    if agents:
        lines += ["", "## Tool use (agents)", "", "| model | tool mode | valid calls | calls / question | "
                  "gold calls / question | gold targets queried | stopped |", "|---|---|---|---|---|---|---|"]
        for m in agents:
            for mode, t in results[m]["tools"].items():
                lines.append(f"| {m} | {mode} | {_pct(t['valid_call_share'])} | {t['calls_per_question']:.2f} | "
                             f"{_num(t['gold_calls_per_question'])} | {_pct(t['gold_target_recall'])} | "
                             + ", ".join(f"{k} {v}" for k, v in t["stopped"].items()) + " |")
    subs = sorted({s for r in results.values() for s in r["subtypes"]})
    lines += ["", "## Per subtype", "", "| subtype | n | " + " | ".join(models) + " |", "|---|---|" + "---|" * len(models)]
    for s in subs:
        n = max(results[m]["subtypes"].get(s, {}).get("n", 0) for m in models)
        cells = [f"{results[m]['subtypes'][s]['score'] * 100:.1f}" if s in results[m]["subtypes"] else "-"
                 for m in models]
        lines.append(f"| {s} | {n} | " + " | ".join(cells) + " |")
    pngs = []
    for c in cats:
        fig, ax = plt.subplots(figsize=(6, 3.2), dpi=80)
        xs = range(len(models))
        iou = c == "Localization"   # a mean 3D IoU (0-1), not a percentage
        scale = 1.0 if iou else 100.0
        vals = [results[m]["categories"].get(c, {}).get("score", 0) * scale for m in models]
        ax.bar(list(xs), vals, color=["#4363d8", "#f58231", "#3cb44b", "#911eb4", "#e6194b"][: len(models)])
        ax.set_xticks(list(xs), models, fontsize=8)
        ax.set_ylim(0, scale)
        ax.set_ylabel("mean 3D IoU" if iou else "accuracy (%)")
        chances = [results[m]["categories"][c].get("chance") for m in models if c in results[m]["categories"]]
        if chances and chances[0] is not None:
            ax.axhline(chances[0] * scale, color="#555555", linestyle="--", linewidth=1.0, label="chance")
            ax.legend(fontsize=7, loc="upper right")
        ax.set_title(c)
        fig.tight_layout()
        png = report.parent / f"{report.stem}_{c.lower().replace(' ', '_')}.png"
        fig.savefig(png, metadata={"Software": None})
        plt.close(fig)
        pngs.append(png)
        lines.append("")
        lines.append(f"![{c}]({png.name})")
    write_text_atomic(report, "\n".join(lines) + "\n")
    return pngs


def robustness(qa_dir: Path, model: str, clean_predictions: Path, perturbation: str, work: Path) -> dict:
    """Rerun ``model`` on perturbed volumes (same items as the clean predictions);
    scores and the drop per category (clean - perturbed, in points)."""
    clean = load_predictions(clean_predictions)
    items, _c, _i = load_qa(qa_dir)
    splits = {it["split"] for it in items if it["qid"] in {p["qid"] for p in clean}}
    split = splits.pop() if len(splits) == 1 else "all"
    mode = clean[0].get("mode", "mc") if clean else "mc"
    perturbed = work / f"predictions_{perturbation}.jsonl"
    predict(qa_dir, model, split, perturbed, mode=mode, perturbation=perturbation)
    res = evaluate(qa_dir, [clean_predictions, perturbed])
    (a, ra), (b, rb) = list(res.items())[:2]
    drop = {c: (ra["categories"][c]["score"] - rb["categories"].get(c, {"score": 0.0})["score"]) * 100
            for c in ra["categories"]}
    drop["overall"] = (ra["overall"]["score"] - rb["overall"]["score"]) * 100
    return {"perturbation": perturbation, "clean": ra, "perturbed": rb, "drop_points": drop}
