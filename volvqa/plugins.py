"""The one loader of plug-ins: ``module:attr`` references and entry points.

Both registries (answerers, ``volvqa.models.registry``; segmenters,
``volvqa.segment.registry``) find their built-ins and a separately installed
package's additions the same way: by an import reference resolved here.
An installed package adds one through an entry point group::

    [project.entry-points."volvqa.models"]      # or volvqa.segmenters
    mymodel = "mypkg.volvqa_plugin:make"
"""
from __future__ import annotations

import importlib
from importlib import metadata

from volvqa.errors import VolvqaInputError


def load_object(ref: str, what: str = "plug-in"):
    """``package.module:Attr`` (or ``package.module``) -> the object; a one-line
    error that says what could not be found, never a traceback."""
    mod_name, _, attr = ref.partition(":")
    if not mod_name or (":" in ref and not attr):
        raise VolvqaInputError(None, f"{what} {ref!r}: expected module:Name")
    try:
        obj = importlib.import_module(mod_name)
    except ImportError as e:
        raise VolvqaInputError(None, f"{what} {ref}: cannot load: cannot import {mod_name} "
                               f"({' '.join(str(e).split())})") from None
    for part in attr.split(".") if attr else []:
        if not hasattr(obj, part):
            raise VolvqaInputError(None, f"{what} {ref}: cannot load: {mod_name} has no {attr}")
        obj = getattr(obj, part)
    return obj


def entry_points(group: str) -> dict[str, str]:
    """name -> ``module:attr`` of the entry points installed packages declare in ``group``."""
    return {ep.name: ep.value for ep in metadata.entry_points(group=group)}
