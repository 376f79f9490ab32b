"""The dataset-level stage of build-qa: every finished case's items -> options,
balance, the shortcut audit, gold traces, and the build folder's files."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from volvqa.bench import layout as F
from volvqa.bench.build import BuildConfig, qc_settings, segmenter_settings
from volvqa.datasets.manifest import Case, Manifest
from volvqa.io.atomic import write_bytes_atomic, write_text_atomic


@dataclass
class Collected:
    """What the finished cases' work folders hold, in case order."""

    raw: list[dict] = field(default_factory=list)
    case_rows: list[dict] = field(default_factory=list)
    scopes: dict[str, list[str]] = field(default_factory=dict)
    qc_reports: dict[str, dict] = field(default_factory=dict)


def collect_cases(cases: list[Case], out: Path) -> Collected:
    """Each case's items and table row; its findings, report and QC copied into cases/<id>/."""
    errors = F.read_errors(out)
    got = Collected()
    for c in cases:
        wd = F.work_dir(out, c.case_id)
        row = {"case_id": c.case_id, "split": c.split, "ct": F.build_relative(c.ct, out),
               "error": errors.get(c.case_id)}
        if F.case_done(out, c.case_id):
            its = json.loads((wd / F.ITEMS_JSON).read_text())
            for it in its:
                it["split"] = c.split
            got.raw += its
            meta = json.loads((wd / F.CASE_JSON).read_text())
            exp = meta.get("exported")
            masks = exp["masks"] if exp else [F.build_relative(p, out) for p in meta.get("masks") or []]
            row.update(n_lesions=meta["n_lesions"], shape=meta["shape"], spacing_mm=meta["spacing_mm"],
                       masks=json.dumps(masks), label_spec=json.dumps(exp["label_spec"] if exp else meta.get("label_spec")),
                       annotates=json.dumps(meta.get("annotates")), phase=meta.get("phase", "unknown"))
            if exp:
                row["ct"] = exp["ct"]
            got.scopes[c.case_id] = meta.get("annotates") or []
            # Cases processed by a volvqa without quality control have no qc.json.
            qc_file = wd / F.CASE_QC_JSON
            got.qc_reports[c.case_id] = json.loads(qc_file.read_text()) if qc_file.is_file() else \
                {"case_id": c.case_id, "mode": "not run", "findings": [], "excluded": {}}
            _publish_case_files(wd, F.case_dir(out, c.case_id))
        got.case_rows.append(row)
    return got


def _publish_case_files(wd: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for name in (F.FINDINGS_JSON, F.REPORT_TXT, F.CASE_QC_JSON):
        if not (wd / name).is_file():
            continue
        src = (wd / name).read_bytes()
        if not (dest / name).exists() or (dest / name).read_bytes() != src:
            write_bytes_atomic(dest / name, src)


def numeric_pools(raw: list[dict]) -> dict[str, list[float]]:
    """Answer pools per question key for the distractors and "the usual answer".

    They come from the train split's answers: that is the median a question-only model can learn
    (with answers that depend on the contrast phase, the median of all splits sits elsewhere, and
    the option layout balanced around it is not balanced for such a model). A key with fewer than
    5 train answers uses all splits'."""
    pools: dict[str, list[float]] = {}
    all_pools: dict[str, list[float]] = {}
    for it in raw:
        if it["answer_type"] == "numeric":
            all_pools.setdefault(it["key"], []).append(float(it["answer"]))
            if it.get("split") == "train":
                pools.setdefault(it["key"], []).append(float(it["answer"]))
    for key, values in all_pools.items():
        if len(pools.get(key, [])) < 5:
            pools[key] = values
    return pools


def select_items(raw: list[dict], m: Manifest, cfg: BuildConfig) -> tuple[list[dict], dict, int]:
    """(the benchmark's items in qid order, the audit rows, numeric items dropped as central)."""
    from volvqa.qa.audit import audit
    from volvqa.qa.balance import balance
    from volvqa.qa.options import balance_median_rank, build_options
    pools = numeric_pools(raw)
    items = [build_options(it, pools, cfg.n_options, m.seed) for it in raw]
    # A numeric item whose truth sits at the dataset's typical value (so the
    # drawn number of distractors nearer that value could not be placed) is
    # answered by "pick the usual value" without the image: dropped.
    balance_median_rank(items, cfg.n_options, m.seed)
    central_dropped = sum(1 for it in items if it.get("drop_reason"))
    items = [it for it in items if not it.get("drop_reason")]
    items = balance(items, m.seed)
    rows = audit(items)
    flagged = {s for s, r in rows.items() if r["flagged"]}
    final = items if cfg.include_flagged else [it for it in items if it["subtype"] not in flagged]
    final.sort(key=lambda it: it["qid"])
    return final, rows, central_dropped


def effective_qc(m: Manifest, cfg: BuildConfig, qc_reports: dict[str, dict]) -> dict:
    """The QC settings the cases ran with (shards merged later may not repeat the options)."""
    qc = qc_settings(m, cfg)
    modes = {r.get("mode") for r in qc_reports.values()}
    if len(modes) == 1:
        qc["mode"] = modes.pop()
    others = {r.get("require_agreement") for r in qc_reports.values()}
    if len(others) == 1 and others != {None}:
        qc["require_agreement"] = others.pop()
    return qc


def _prune_unused_images(out: Path, final: list[dict]) -> None:
    used = {it["image"] for it in final if it.get("image")}
    used |= {p for it in final if it.get("views") for ps in it["views"].values() for p in ps}
    for folder in (F.IMAGES_DIR, F.VIEWS_DIR):
        for p in sorted((out / folder).glob("*.png")) if (out / folder).exists() else []:
            if f"{folder}/{p.name}" not in used:
                p.unlink()


def finalize(m: Manifest, cases: list[Case], out: Path, cfg: BuildConfig) -> dict:
    from volvqa.bench.export import (
        dataset_card,
        hf_card_header,
        write_cases_parquet,
        write_jsonl,
        write_parquet,
        write_split_parquets,
    )
    from volvqa.tools.traces import build_traces

    errors = F.read_errors(out)
    got = collect_cases(cases, out)
    final, rows, central_dropped = select_items(got.raw, m, cfg)
    flagged = sorted(s for s, r in rows.items() if r["flagged"])
    unaudited = sorted(s for s, r in rows.items() if r.get("status") == "not enough items")
    n_items = Counter(it["case_id"] for it in final)
    for r in got.case_rows:
        r["n_items"] = n_items.get(r["case_id"], 0)
    # Gold tool traces, each verified by replay; they also put a rationale in the item's evidence.
    traces, trace_failures = build_traces(final, lambda cid: F.load_findings(out, cid))
    write_text_atomic(out / F.TRACES_JSONL, "".join(json.dumps(r, sort_keys=True) + "\n" for r in traces))
    write_jsonl(out / F.QA_JSONL, final)
    write_parquet(out / F.QA_PARQUET, final)
    write_cases_parquet(out / F.CASES_PARQUET, got.case_rows)
    write_text_atomic(out / F.AUDIT_JSON, json.dumps(rows, indent=1, sort_keys=True) + "\n")
    qc = effective_qc(m, cfg, got.qc_reports)
    qc_summary = qc_overview(got.qc_reports, qc)
    write_text_atomic(out / F.QC_JSON, json.dumps(qc_summary, indent=1, sort_keys=True) + "\n")
    scopes = got.scopes
    annotates = {n: sum(n in s_ for s_ in scopes.values()) for n in sorted(set().union(*scopes.values()))} \
        if scopes else {}
    phases = dict(sorted(Counter(c.get("phase") or "unknown" for c in got.case_rows if not c["error"]).items()))
    build_info = {"dataset": m.name, "manifest": m.path.name, "seed": m.seed, "n_options": cfg.n_options,
                  "annotates": annotates, "qc": qc, "numeric_items_dropped_central": central_dropped,
                  "phases": phases}
    seg = segmenter_settings(m, cfg)
    if seg is not None:
        build_info["segmenter"] = {"backend": seg["backend"], "segment_all": seg["segment_all"]}
    card = dataset_card(m.name, {"path": str(m.path.name), "layout": m.layout, "seed": m.seed, "license": m.license},
                        final, rows, flagged, cfg.include_flagged, len(cases),
                        [c for c in got.case_rows if c["error"]], central_dropped, annotates=annotates,
                        qc=qc_summary, phases=phases)
    write_text_atomic(out / F.DATASET_CARD, card)
    splits = write_split_parquets(out, final)
    write_text_atomic(out / F.HF_README, hf_card_header(m.name, m.license, splits) + card)
    _prune_unused_images(out, final)
    per_cat = {c: sum(it["category"] == c for it in final) for c in sorted({it["category"] for it in final})}
    n_subtypes = len({it["subtype"] for it in final})
    build_info["summary"] = {"questions": len(final), "subtypes": n_subtypes, "questions_per_category": per_cat,
                             "flagged": flagged, "not_enough_items": unaudited, "failed_cases": len(errors),
                             "traces": len(traces), "untraced": trace_failures}
    write_text_atomic(out / F.BUILD_JSON, json.dumps(build_info, indent=1, sort_keys=True) + "\n")
    return {"questions": len(final), "subtypes": n_subtypes, "numeric_items_dropped_central": central_dropped,
            "categories": sorted(per_cat), "questions_per_category": per_cat, "flagged": flagged,
            "not_enough_items": unaudited, "include_flagged": cfg.include_flagged, "failed_cases": len(errors),
            "traces": len(traces), "untraced": trace_failures,
            "qc_excluded_structures": sum(qc_summary["excluded_per_structure"].values())}


def summary_text(res: dict, out: Path) -> str:
    """What a person reads after build-qa (the JSON is in build.json and with --json)."""
    lines = []
    if "cases" in res:
        lines.append(f"{res['processed']} of {res['cases']} cases processed now, {res['failed_now']} failed"
                     + (f" (see {Path(out) / 'errors.jsonl'})" if res["failed_now"] else ""))
    if "questions" not in res:
        lines.append("per-case stage only: run build-qa --merge-only once every shard has finished")
        return "\n".join(lines)
    cats = ", ".join(f"{c} {n}" for c, n in res.get("questions_per_category", {}).items())
    lines.append(f"{res['questions']} questions in {res['subtypes']} subtypes ({cats})")
    if res.get("flagged"):
        verb = "flagged" if res.get("include_flagged") else "excluded"
        lines.append(f"{len(res['flagged'])} subtypes {verb} by the shortcut audit (audit.json)")
    if res.get("not_enough_items"):
        lines.append(f"{len(res['not_enough_items'])} subtypes kept unaudited: not enough items to audit")
    if res.get("numeric_items_dropped_central"):
        lines.append(f"{res['numeric_items_dropped_central']} numeric questions dropped (answer at the dataset's "
                     "typical value)")
    if res.get("qc_excluded_structures"):
        lines.append(f"{res['qc_excluded_structures']} structures excluded by mask quality control (qc.json)")
    if "traces" in res:
        lines.append(f"{res['traces']} gold tool traces (traces.jsonl), each verified by replay"
                     + (f"; {len(res['untraced'])} items without one (build.json)" if res.get("untraced") else ""))
    lines.append(f"benchmark: {Path(out) / 'qa.jsonl'}; card: {Path(out) / 'dataset_card.md'}; "
                 f"summary: {Path(out) / 'build.json'}")
    return "\n".join(lines)


def qc_overview(reports: dict[str, dict], qc: dict) -> dict:
    """The build's ``qc.json``: settings, counts per check and per
    structure, and each case's findings and exclusions."""
    by_check: dict[str, int] = {}
    by_structure: dict[str, int] = {}
    for r in reports.values():
        for f in r.get("findings", []):
            by_check[f["check"]] = by_check.get(f["check"], 0) + 1
        for n in r.get("excluded", {}):
            by_structure[n] = by_structure.get(n, 0) + 1
    return {"mode": qc["mode"], "require_agreement": qc["require_agreement"],
            "cases_with_findings": sum(1 for r in reports.values() if r.get("findings") or r.get("excluded")),
            "findings_per_check": dict(sorted(by_check.items())),
            "excluded_per_structure": dict(sorted(by_structure.items())),
            "cases": {k: {"findings": r.get("findings", []), "excluded": r.get("excluded", {})}
                      for k, r in sorted(reports.items()) if r.get("findings") or r.get("excluded")}}
