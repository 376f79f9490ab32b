"""Models: predict, evaluate, answer."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from volvqa.cli.main import main, with_load_opts
from volvqa.errors import VolvqaInputError


@main.command("predict")
@click.option("--qa", "qa_dir", required=True, type=click.Path(path_type=Path), help="build-qa output folder.")
@click.option("--model", required=True,
              help="prior | grounded | encoder3d:runs/NAME | module:Class | agent:module:Class | agent:openai")
@click.option("--split", default="test", show_default=True, help="train | val | test | all")
@click.option("--mode", type=click.Choice(["mc", "free"]), default="mc", show_default=True,
              help="Multiple choice (options shown) or free form.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Predictions JSONL (default: out/predictions/<model>_<split>.jsonl).")
@click.option("--segmenter", default=None,
              help="With --model grounded: predicted mode, masks from this segmenter instead of the dataset's.")
@click.option("--device", default="auto", show_default=True, help="Segmenter device.")
@click.option("--input-format", type=click.Choice(["volume", "key_slice", "views", "views_boxed", "video", "m3d"]),
              default=None, help="What a module:Class plug-in receives (default: its input_format, else volume).")
@click.option("--prompt", "prompt_style", type=click.Choice(["volvqa", "deeptumorvqa"]), default="volvqa",
              show_default=True, help="A plug-in's prompt wording: volvqa's, or DeepTumorVQA's runners'.")
@click.option("--tool-mode", type=click.Choice(["oracle", "predicted", "vision"]), default="oracle",
              show_default=True, help="agent: tools backed by the dataset's masks, a segmenter's (--segmenter), "
                                      "or render only.")
@click.option("--tools-via", type=click.Choice(["local", "mcp"]), default="local", show_default=True,
              help="agent: run tools in this process, or through `volvqa serve-tools` over MCP stdio.")
@click.option("--max-steps", type=int, default=None, help="agent: turns per question (default 12).")
@click.option("--agent-timeout", type=float, default=None, help="agent: seconds per question (default 300).")
@click.option("--base-url", default=None, help="agent:openai: the OpenAI-compatible endpoint (…/v1).")
@click.option("--model-name", default=None, help="agent:openai: the served model's name.")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="agent:openai: environment variable holding the key.")
def predict_cmd(qa_dir, model, split, mode, out, segmenter, device, input_format, prompt_style, tool_mode,
                tools_via, max_steps, agent_timeout, base_url, model_name, api_key_env):
    """Run a model over a benchmark split."""
    import re as _re

    from volvqa.eval.run import predict
    if out is None:
        name = _re.sub(r"[^A-Za-z0-9._-]+", "_", model.split("/")[-1] if model.startswith("encoder3d:") else model)
        name += "-predicted" if segmenter else ""
        out = Path("out") / "predictions" / f"{name}_{split}{'_free' if mode == 'free' else ''}.jsonl"
        out.parent.mkdir(parents=True, exist_ok=True)
    if not out.parent.exists():
        raise VolvqaInputError(out, "output folder does not exist")
    agent = model.startswith("agent:")
    if segmenter and model != "grounded" and not agent:
        raise click.UsageError("--segmenter goes with --model grounded or an agent in --tool-mode predicted")
    if agent and segmenter and tool_mode != "predicted":
        raise click.UsageError("an agent with --segmenter runs in --tool-mode predicted")
    options = dict(tool_mode=tool_mode, tools_via=tools_via, max_steps=max_steps, timeout_s=agent_timeout,
                   base_url=base_url, model_name=model_name, api_key_env=api_key_env) if agent else None
    n = predict(qa_dir, model, split, out, mode=mode, segmenter=segmenter, device=device, input_format=input_format,
                prompt_style=prompt_style, agent_options=options)
    click.echo(f"{n} predictions -> {out}")

@main.command("evaluate")
@click.option("--qa", "qa_dir", required=True, type=click.Path(path_type=Path), help="build-qa output folder.")
@click.option("--predictions", "pred_files", required=True, multiple=True, type=click.Path(path_type=Path),
              help="Predictions JSONL; repeat to compare models.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), help="Scores JSON.")
@click.option("--report", "report_out", type=click.Path(path_type=Path), help="report.md (+ one PNG per category).")
@click.option("--perturb", "perturbation", type=click.Choice(["noise", "blur", "downsample", "intensity-shift",
                                                             "reorient", "swap-ct"]), default=None,
              help="Rerun --model on perturbed volumes and report the drop per category "
                   "(swap-ct: each case's questions with another case's CT).")
@click.option("--model", default=None, help="Model to rerun with --perturb (as in predict).")
@click.option("--protocol", type=click.Choice(["strict", "deeptumorvqa", "both"]), default="strict", show_default=True,
              help="strict: volvqa's rules; deeptumorvqa: DeepTumorVQA v2's evaluator (continuous MRA, its letter, "
                   "yes/no and category parsing, no Localization); both: one line each.")
def evaluate_cmd(qa_dir, pred_files, json_out, report_out, perturbation, model, protocol):
    """Score predictions per subtype, category and overall."""
    from volvqa.eval.run import CATEGORY_ORDER, evaluate, write_report
    from volvqa.io.atomic import write_text_atomic
    for out in (json_out, report_out):
        if out is not None and not out.parent.exists():
            raise VolvqaInputError(out, "output folder does not exist")
    if perturbation:
        from volvqa.eval.run import robustness
        if not model:
            raise click.UsageError("--perturb needs --model (the model to rerun)")
        # Perturbed predictions go beside the requested scores, else under out/robustness/.
        work = (json_out or report_out).parent if (json_out or report_out) else Path("out") / "robustness"
        work.mkdir(parents=True, exist_ok=True)
        rob = robustness(qa_dir, model, pred_files[0], perturbation, work)
        for c, d in rob["drop_points"].items():
            click.echo(f"{perturbation}: {c}: drop {d:+.1f} points")
        if json_out:
            write_text_atomic(json_out, json.dumps(rob, indent=1, sort_keys=True) + "\n")
        return
    protocols = ["strict", "deeptumorvqa"] if protocol == "both" else [protocol]
    all_res = {}
    for proto in protocols:
        res = evaluate(qa_dir, list(pred_files), protocol=proto)
        all_res[proto] = res
        for m, r in res.items():
            cats = ", ".join(f"{c} {r['categories'][c]['score'] * 100:.1f}"
                             + (f" (chance {r['categories'][c]['chance'] * 100:.1f})" if "chance" in r["categories"][c]
                                else "")
                             for c in CATEGORY_ORDER if c in r["categories"])
            tag = f"[{proto}] " if len(protocols) > 1 or proto != "strict" else ""
            click.echo(f"{tag}{m}: overall {r['overall']['score'] * 100:.1f} ({r['overall']['n']} q) | {cats}")
            for tm, t in (r.get("tools") or {}).items():
                vs = "-" if t["valid_call_share"] is None else f"{t['valid_call_share'] * 100:.1f}%"
                gold = "-" if t["gold_calls_per_question"] is None else f"{t['gold_calls_per_question']:.2f}"
                rec = "-" if t["gold_target_recall"] is None else f"{t['gold_target_recall'] * 100:.1f}%"
                click.echo(f"{tag}{m}: tools ({tm}): {t['calls']} calls, {vs} valid, "
                           f"{t['calls_per_question']:.2f} per question (gold {gold}), gold targets queried {rec}, "
                           "stopped: " + ", ".join(f"{k} {v}" for k, v in t["stopped"].items()))
    res = all_res[protocols[0]] if len(protocols) == 1 else all_res
    if json_out:
        write_text_atomic(json_out, json.dumps(res, indent=1, sort_keys=True) + "\n")
    if report_out:
        write_report(all_res[protocols[0]], report_out)


@main.command("answer")
@click.option("--volume", required=True, type=click.Path(path_type=Path))
@click.option("--question", required=True)
@click.option("--options", "options_text", default=None, help='"A=..;B=..;C=.."')
@click.option("--model", default="grounded", show_default=True, help="grounded | module:Class | encoder3d:runs/NAME")
@click.option("--masks", multiple=True, type=click.Path(path_type=Path),
              help="Masks for grounded mode (repeat to merge, e.g. a label map and its parts).")
@click.option("--labels", "label_spec", multiple=True, help="Label spec of each --masks (default auto).")
@click.option("--annotates", default=None,
              help="Comma-separated canonical structures the masks annotate (default: read off the label spec or "
                   "mask folder; with --labels auto/canonical, what the masks hold). Nothing is answered about "
                   "a structure they do not annotate.")
@click.option("--qc", "qc_mode", type=click.Choice(["exclude", "warn", "off"]), default="exclude", show_default=True,
              help="Mask quality control: structures whose masks fail it are not answered about.")
@click.option("--segmenter", default=None,
              help="Grounded predicted mode: segment the scan with this backend instead of --masks "
                   "(`monai:runs/NAME` | `totalsegmentator[:fast][+...]`).")
@click.option("--device", default="auto", show_default=True, help="Segmenter device.")
@click.option("--json", "as_json", is_flag=True, help="Print the prediction with its evidence as JSON.")
@click.option("--png", "png_out", type=click.Path(path_type=Path), help="Key slice with the evidence box.")
@click.option("--input-format", type=click.Choice(["volume", "key_slice", "views", "views_boxed", "video", "m3d"]),
              default=None, help="What a module:Class plug-in receives (default: its input_format, else volume).")
@click.option("--phase", default=None,
              help="Contrast phase: non-contrast | arterial | portal venous | delayed | contrast | unknown "
                   "(attenuation rules such as steatosis need unenhanced CT; default: what the file says).")
@with_load_opts
def answer_cmd(volume, question, options_text, model, masks, label_spec, annotates, qc_mode, segmenter, device,
               as_json, png_out, input_format, phase, series_uid, allow_non_ct, max_voxels):
    """Answer one question about one scan, with its evidence."""
    from volvqa.io import load_volume
    item = {"qid": "q", "case_id": volume.name.split(".nii")[0], "question": question}
    if options_text:
        try:
            item["options"] = dict(kv.split("=", 1) for kv in options_text.split(";") if kv.strip())
            item["options"] = {k.strip().upper(): v.strip() for k, v in item["options"].items()}
        except ValueError:
            raise click.BadParameter('--options takes "A=..;B=.."') from None
    v = load_volume(volume, series_uid=series_uid, allow_non_ct=allow_non_ct, max_voxels=max_voxels)
    if phase is not None:
        from volvqa.phase import normalise_phase
        v.meta["phase"] = normalise_phase(phase, "--phase")
    from volvqa.models.registry import ModelRequest, make_answerer
    labelmap_for = None
    if masks:
        from volvqa.models.grounded import fixed_masks
        specs = list(label_spec) or ["auto"]
        if len(specs) == 1:
            specs = specs * len(masks)
        if len(specs) != len(masks):
            raise click.BadParameter("give one --labels per --masks, or one for all")
        labelmap_for = fixed_masks(list(masks), specs, annotates=annotates)
    ans = make_answerer(model, ModelRequest(mode="mc" if options_text else "free", segmenter=segmenter,
                                            device=device, input_format=input_format, qc=qc_mode,
                                            labelmap_for=labelmap_for))
    pred = ans.answer(v, item)
    if as_json:
        click.echo(json.dumps(pred.to_dict(), indent=1, sort_keys=True, default=str))
    else:
        click.echo(pred.answer)
        if pred.evidence:
            click.echo(f"evidence: {json.dumps(pred.evidence.get('values'), default=str)}; "
                       f"box (voxels): {pred.evidence.get('bbox_voxel')}")
    if png_out is not None and pred.evidence and pred.evidence.get("bbox_voxel"):
        from volvqa.render import render_png, write_png
        b = pred.evidence["bbox_voxel"][0]
        z = pred.evidence.get("key_slice")
        c = ((b[0] + b[3]) // 2, (b[1] + b[4]) // 2, z if z is not None else (b[2] + b[5]) // 2)
        label = pred.evidence.get("template_id", "")
        params = pred.evidence.get("params") or {}
        if label in __import__("volvqa.qa.templates", fromlist=["TEMPLATES"]).TEMPLATES:
            from volvqa.qa.templates import TEMPLATES
            try:
                label = TEMPLATES[label].subtype_of(params)
            except (KeyError, IndexError):
                label = TEMPLATES[label].subtype
        write_png(png_out, render_png(v, None, boxes=pred.evidence["bbox_voxel"], centre=c, views=("axial",),
                                      title=question[:90], caption=f"answer: {pred.answer}"[:120],
                                      box_label=f"evidence: {label} (slice {c[2]})"))
    if pred.answer.startswith("cannot answer"):
        sys.exit(1)
