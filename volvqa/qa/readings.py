"""Readings and answers of template questions, shared by generation, the
grounded answerer and the gold tool traces.

- ``parse_question``: a question in one of the generator's wordings -> its
  (template id, params) readings (free-text wordings: ``volvqa.qa.freetext``).
- ``answer_text`` / ``pick_option``: a template's answer as text / as the
  option letter it matches.
- ``same_params``: whether an instance is the one a reading asks about.
"""
from __future__ import annotations

import re

from volvqa.qa.context import ORGAN_TEXT
from volvqa.qa.options import fmt
from volvqa.qa.qid import INT_PARAMS
from volvqa.qa.templates import TEMPLATES, Template

_NAME_OF = {v: k for k, v in ORGAN_TEXT.items()}
_NAME_OF.update({"kidneys": "kidneys", "liver and spleen": "liver and spleen"})


def _pattern(paraphrase: str) -> re.Pattern:
    parts = re.split(r"(\{[a-z_]+\})", paraphrase)
    out = []
    seen = set()
    for p in parts:
        if p.startswith("{") and p.endswith("}"):
            name = p[1:-1]
            if name in seen:
                out.append(rf"(?P={name})")
                continue
            seen.add(name)
            out.append(rf"(?P<{name}>\d+)" if name in INT_PARAMS else rf"(?P<{name}>.+?)")
        else:
            out.append(re.escape(p))
    return re.compile("^" + "".join(out) + "$", re.I)


_PATTERNS: list[tuple[int, str, re.Pattern]] = sorted(
    ((p.count("{"), t.id, _pattern(p)) for t in TEMPLATES.values() for p in t.paraphrases),
    key=lambda x: (x[0], x[1]))


def supported_kinds() -> list[str]:
    return sorted({t.subtype.replace("{organ}", "<organ>").replace("{kind}", "<kind>") for t in TEMPLATES.values()})


def parse_question(question: str) -> list[tuple[str, dict]]:
    """Candidate (template id, params) readings of a free-text question, best first."""
    q = " ".join(question.strip().split())
    out = []
    for _n, tid, pat in _PATTERNS:
        m = pat.match(q)
        if not m:
            continue
        params = {}
        ok = True
        for k, v in m.groupdict().items():
            if k in INT_PARAMS:
                params[k] = int(v)
            elif k == "organ":
                if v.lower() not in _NAME_OF:
                    ok = False
                    break
                params[k] = _NAME_OF[v.lower()]
            elif k == "organs":  # "liver, kidneys and pancreas" -> liver+kidney+pancreas
                names = [w.strip().lower() for w in re.split(r",|\band\b", v) if w.strip()]
                names = [n[:-1] if n == "kidneys" else n for n in names]
                if not names or any(n not in _NAME_OF for n in names):
                    ok = False
                    break
                params[k] = "+".join(_NAME_OF[n] for n in names)
            else:
                params[k] = v
        if ok:
            out.append((tid, params))
    return out


def same_params(a: dict, b: dict) -> bool:
    """Whether instance params ``a`` are the reading ``b`` (values compared as text; ``where`` may be extra)."""
    keys = set(a) & set(b)
    return all(str(a[k]) == str(b[k]) for k in keys) and set(b) <= set(a) | {"where"}


def answer_text(t: Template, answer) -> str:
    if t.answer_type == "numeric":
        return fmt(float(answer), t.decimals, t.unit, t.integer)
    if t.answer_type == "bbox":
        return str(list(answer["voxel"]))
    return str(answer)


def pick_option(t: Template, answer, options: dict[str, str], evidence: dict | None = None) -> str | None:
    if t.answer_type == "numeric":
        vals = {}
        for k, v in options.items():
            try:
                vals[k] = float(v.split()[0])
            except (ValueError, IndexError):
                continue
        if not vals:
            return None
        return min(vals, key=lambda k: (abs(vals[k] - float(answer)), k))
    wants = [str(answer)]
    if evidence and evidence.get("touching"):  # any structure in contact is a right answer
        wants += [ORGAN_TEXT.get(n, n) for n in evidence["touching"]]
    for want in wants:
        for k, v in sorted(options.items()):
            if v.lower() == want.lower():
                return k
    return None
