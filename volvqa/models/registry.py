"""The one registry of answerers, shared by ``volvqa predict`` / ``answer`` and the library.

A model spec is ``NAME[:ARG]`` for a registered answerer (``prior``,
``grounded``, ``encoder3d:runs/NAME``, ``agent:openai``, ``agent:module:Class``,
and whatever installed packages add through the ``volvqa.models`` entry point
group), or ``module:Class`` for a user's class with a ``generate`` method.

A registered answerer is a factory ``(arg: str | None, request: ModelRequest)
-> answerer``, where an answerer has ``name`` and ``answer(volume, item) ->
Prediction``. Built-ins are named by import reference, as entry points are,
so that the agent answerer (a layer above) is found the way a third-party
package's model is.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from volvqa.errors import VolvqaInputError
from volvqa.plugins import entry_points, load_object

GROUP = "volvqa.models"

BUILTIN_MODELS: dict[str, str] = {
    "prior": "volvqa.models.prior:from_request",
    "grounded": "volvqa.models.grounded:from_request",
    "encoder3d": "volvqa.models.encoder3d:from_request",
    "agent": "volvqa.agent.factory:from_request",
}


@dataclass
class ModelRequest:
    """What an answerer factory may use. ``items``/``cases``/``info`` are a built
    benchmark's (empty when answering one scan); ``labelmap_for`` is one scan's
    masks; ``options`` holds factory-specific settings (the agent's)."""

    mode: str = "mc"
    items: list[dict] = field(default_factory=list)
    cases: dict[str, dict] = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    segmenter: str | None = None
    device: str = "auto"
    input_format: str | None = None
    prompt_style: str = "volvqa"
    qc: str | None = None
    labelmap_for: Callable | None = None
    options: dict = field(default_factory=dict)

    @property
    def qa_dir(self) -> Path | None:
        return Path(self.info["qa_dir"]) if self.info.get("qa_dir") else None


def registered_models() -> dict[str, str]:
    """name -> factory reference: installed packages' entry points, then the built-ins (which win)."""
    return {**entry_points(GROUP), **BUILTIN_MODELS}


def is_plugin_class(spec: str) -> bool:
    """Whether a spec names a user's ``module:Class`` rather than a registered answerer."""
    return spec.partition(":")[0] not in registered_models() and ":" in spec


def make_answerer(spec: str, request: ModelRequest | None = None):
    request = request or ModelRequest()
    name, _, arg = spec.partition(":")
    table = registered_models()
    if name in table:
        factory = load_object(table[name], what=f"model {name}")
        return factory(arg or None, request)
    if ":" in spec:
        from volvqa.models.base import load_plugin
        return load_plugin(spec, mode=request.mode, input_format=request.input_format,
                           prompt_style=request.prompt_style)
    raise VolvqaInputError(None, f"unknown model: use one of {', '.join(sorted(table))}, or module:Class",
                           param="model", value=spec)
