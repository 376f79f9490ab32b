"""The one codec between an item's template parameters and its qid.

A qid is ``<case_id>:<template_id>[:<k>=<v>,...]`` with the parameters in
sorted key order; in memory items carry ``params``, and qa.jsonl keeps only
the qid, so whatever needs the parameters of an exported item reads them
here and nowhere else.
"""
from __future__ import annotations

#: Parameters whose values are integers (a slice index, a Couinaud segment).
INT_PARAMS = frozenset({"slice", "segment"})


def param_key(params: dict) -> str:
    """``k=v,...`` in sorted key order: the parameter part of a qid and of an item's key."""
    return ",".join(f"{k}={params[k]}" for k in sorted(params))


def make_qid(case_id: str, template_id: str, params: dict) -> str:
    pk = param_key(params)
    return f"{case_id}:{template_id}" + (f":{pk}" if pk else "")


def params_of(item_or_qid: dict | str, typed: bool = False) -> dict:
    """An item's template parameters: its ``params`` when it carries them, else
    decoded from its qid (values as text; ``typed`` makes INT_PARAMS ints)."""
    if isinstance(item_or_qid, dict) and isinstance(item_or_qid.get("params"), dict):
        params = {k: str(v) for k, v in item_or_qid["params"].items()}  # as the qid spells them
    else:
        qid = item_or_qid.get("qid", "") if isinstance(item_or_qid, dict) else item_or_qid
        parts = str(qid).split(":", 2)
        if len(parts) < 3 or not parts[2]:
            return {}
        params = dict(kv.split("=", 1) for kv in parts[2].split(",") if "=" in kv)
    if typed:
        return {k: int(v) if k in INT_PARAMS else v for k, v in params.items()}
    return params
