"""A built benchmark in DeepTumorVQA v2's data layout (``volvqa export
deeptumorvqa BUILD OUT``), so its loader (local mode, ``data_dir``), its
evaluator and its model runners read it unchanged::

    OUT/benchmark/test_qa.json            {"questions": [record, ...]}  (the build's test split)
    OUT/benchmark/images_2d/whole/<image_id>.png
    OUT/benchmark/videos/whole/<image_id>.mp4
    OUT/benchmark/ct/<image_id>/ct.nii.gz  canonical RAS int16 HU (the build's volumes/)
    OUT/train/train_qa.csv                 the train split's records (its loader reads train as CSV;
                                           train CTs are not part of its layout)

A record carries its fields ``qid``, ``image_id`` (the case id), ``spacing``
(mm, x y z of the canonical grid), ``shape``, ``question``, ``answer`` (a plain
string), ``mc_question`` (the question and its lettered options), ``correct_option``,
``organ``, ``lesion``, ``question_type`` (its lower-case super-type),
``question_subtype`` (its subtype name, ``volvqa.qa.dtv.DTV_SUBTYPE``) and
``requires_tools`` (the tools of its agent that compute the answer, in call
order), plus volvqa's ``template_id`` and ``image_slice`` (the axial slice the
PNG shows). Localization items are left out (DeepTumorVQA has none); so are
volvqa-only subtypes with ``dtv_only``.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from volvqa.bench.layout import CASES_PARQUET, VOLUMES_DIR, findings_path, load_qa
from volvqa.errors import VolvqaInputError
from volvqa.io.atomic import link_or_copy_atomic, write_text_atomic
from volvqa.qa import dtv
from volvqa.qa.qid import params_of

#: Its agent's tools, by the primitive each stands for.
TOOL_OF_PRIMITIVE = {"segment": "segment_organ", "measure": "measure", "knowledge": "lookup_medical_knowledge"}

#: The tool chain of each of its subtypes (its subtype table's ``required_primitives``; checked against the
#: reference table in tests).
DTV_PRIMITIVES: dict[str, str] = {
    **{s: "segment" for s in (
        "PDAC existence", "PNET existence", "adjacent organ", "colon lesion existence", "kidney cyst existence",
        "kidney lesion existence", "kidney tumor existence", "largest lesion location", "largest lesion slice",
        "liver lesion existence", "pancreatic lesion existence")},
    **{s: "segment→measure" for s in (
        "inter-segment comparison", "largest lesion diameter", "lesion count by location", "lesion counting",
        "lesion outlier", "lesion volume measurement", "liver lesion clustering", "organ HU measurement",
        "organ enlargement", "organ volume measurement")},
    **{s: "segment→measure→segment→measure" for s in (
        "kidney volume comparison", "largest lesion attenuation", "multi-organ lesion burden comparison",
        "organ HU ratio", "organ aggregation", "tumor burden percentage", "tumor organ HU difference")},
    "bilateral kidney asymmetry": "segment→measure→segment→measure→segment",
    "splenomegaly detection": "segment→measure→knowledge",
    **{s: "knowledge→segment→measure" for s in (
        "PDAC vs PNET classification", "lesion type classification", "pancreatic cyst resectability",
        "pancreatic lesion resectability", "pancreatic tumor staging", "pseudocyst determination",
        "renal mass characterization", "splenomegaly grading")},
    **{s: "knowledge→segment→measure→segment→measure" for s in (
        "fatty liver", "hepatic steatosis grading", "pancreatic steatosis", "portal hypertension assessment")},
}

RECORD_FIELDS = ("qid", "image_id", "spacing", "shape", "question", "answer", "mc_question", "correct_option",
                 "organ", "lesion", "question_type", "question_subtype", "requires_tools", "template_id",
                 "image_slice")


def requires_tools(item: dict, subtype: str) -> list[str]:
    """Its tool names in call order (duplicates dropped): from its table for its subtypes; for a volvqa-only
    subtype, segment, then measure unless the answer is a plain existence, then knowledge for a rule."""
    chain = DTV_PRIMITIVES.get(subtype)
    if chain is None:
        chain = "segment"
        if item["answer_type"] != "binary" or item.get("evidence", {}).get("rule"):
            chain += "→measure"
        if item.get("evidence", {}).get("rule"):
            chain += "→knowledge"
    out: list[str] = []
    for p in chain.split("→"):
        if TOOL_OF_PRIMITIVE[p] not in out:
            out.append(TOOL_OF_PRIMITIVE[p])
    return out


def mc_question(item: dict) -> str:
    return item["question"] + "".join(f"\n{k}. {item['options'][k]}" for k in sorted(item["options"]))


def record(item: dict, case: dict, image_slice: int | None) -> dict:
    params = params_of(item.get("qid", ""))
    sub = dtv.dtv_subtype(item) or item["subtype"]
    return {
        "qid": item["qid"], "image_id": item["case_id"],
        "spacing": [float(s) for s in case["spacing_mm"]], "shape": [int(s) for s in case["shape"]],
        "question": item["question"], "answer": dtv.dtv_answer_text(item),
        "mc_question": mc_question(item), "correct_option": item["correct_option"],
        "organ": params.get("organ") or params.get("organ_a") or None,
        "lesion": params.get("kind") or params.get("lesion") or None,
        "question_type": item["category"].lower(), "question_subtype": sub,
        "requires_tools": requires_tools(item, sub), "template_id": item["template_id"], "image_slice": image_slice,
    }


def case_image_slice(build: Path, case_id: str, n_slices: int) -> int:
    """The axial slice the case's single image shows: through the centre of its largest lesion, else of the
    liver, else the middle of the scan."""
    f = findings_path(build, case_id)
    if f.is_file():
        fd = json.loads(f.read_text())
        les = sorted(fd.get("lesions") or [], key=lambda x: -float(x.get("volume_ml") or 0))
        if les and les[0].get("axial_slice") is not None:
            return int(les[0]["axial_slice"])
        liver = (fd.get("organs") or {}).get("liver")
        if liver and liver.get("bbox_voxel"):
            b = liver["bbox_voxel"]
            return int((b[2] + b[5]) // 2)
    return n_slices // 2


def write_case_assets(build: Path, split_dir: Path, case: dict, *, video: bool, ct: bool) -> int:
    """PNG (and MP4, CT) of one case; existing files are kept (reruns resume). Returns the PNG's slice."""
    from volvqa.io import load_volume, save_volume
    from volvqa.io.atomic import atomic_path
    from volvqa.render.inputs import axial_frames, key_slice_image, png_bytes, write_mp4
    cid = case["case_id"]
    png = split_dir / "images_2d" / "whole" / f"{cid}.png"
    mp4 = split_dir / "videos" / "whole" / f"{cid}.mp4"
    nii = split_dir / "ct" / cid / "ct.nii.gz"
    z = case_image_slice(build, cid, int(case["shape"][2]))
    todo = [p for p, want in ((png, True), (mp4, video), (nii, ct)) if want and not p.is_file()]
    if not todo:
        return z
    src = Path(case["ct"])
    if not src.exists():
        raise VolvqaInputError(src, f"CT of case {cid} not found (export needs the build's volumes/ or its sources)")
    v = load_volume(src)
    for p in todo:
        p.parent.mkdir(parents=True, exist_ok=True)
    if png in todo:
        with atomic_path(png) as tmp:
            tmp.write_bytes(png_bytes(key_slice_image(v, z)))
    if mp4 in todo:
        write_mp4(mp4, axial_frames(v))
    if nii in todo:
        canonical = src.parent.name == VOLUMES_DIR and src.parent.parent == build   # written canonical by build-qa
        if canonical:
            link_or_copy_atomic(src, nii)
        else:
            save_volume(v, nii)
    return z


def export_deeptumorvqa(build: Path, out: Path, *, dtv_only: bool = False, video: bool = True, train: bool = True,
                        progress=None) -> dict:
    """Write the layout; returns counts. ``test_qa.json`` is written last, so an interrupted export is not
    loadable (and a rerun resumes from the assets already written)."""
    build, out = Path(build), Path(out)
    items, cases, _ = load_qa(build)
    if not cases:
        raise VolvqaInputError(build / CASES_PARQUET, "not found: the export needs the build's case table")
    items = [it for it in items if it["category"] != "Localization"]
    if dtv_only:
        items = [it for it in items if dtv.dtv_subtype(it)]
    splits = {"benchmark": [it for it in items if it["split"] == "test"]}
    if train:
        splits["train"] = [it for it in items if it["split"] == "train"]
    counts: dict = {"questions": {}, "images": {}, "subtypes": {}}
    for split, its in splits.items():
        split_dir = out / split
        split_dir.mkdir(parents=True, exist_ok=True)
        case_ids = sorted({it["case_id"] for it in its})
        slices = {}
        for k, cid in enumerate(case_ids):
            slices[cid] = write_case_assets(build, split_dir, cases[cid], video=video, ct=(split == "benchmark"))
            if progress:
                progress(split, k + 1, len(case_ids))
        recs = [record(it, cases[it["case_id"]], slices[it["case_id"]]) for it in its]
        counts["questions"][split] = len(recs)
        counts["images"][split] = len(case_ids)
        counts["subtypes"][split] = len({r["question_subtype"] for r in recs})
        if split == "benchmark":
            write_text_atomic(split_dir / "test_qa.json", json.dumps({"questions": recs}, indent=1) + "\n")
        else:
            buf = io.StringIO()
            w = csv.DictWriter(buf, fieldnames=RECORD_FIELDS, lineterminator="\n")
            w.writeheader()
            for r in recs:
                w.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else ("" if v is None else v)
                            for k, v in r.items()})
            write_text_atomic(split_dir / "train_qa.csv", buf.getvalue())
    return counts
