"""The package's layers: each imports only layers below it, imports inside
functions included, so that no cycle can creep back in through a lazy import.

The order is the one docs/design.md explains; a new upward import fails here.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

import volvqa

ROOT = Path(volvqa.__file__).parent

# Bottom first. "core" is the package's top-level modules (records, labels,
# errors, knowledge, arrays, jsonable, phase, devices, progress, plugins, safe_yaml).
LAYERS = ["core", "io", "engines", "qc", "findings", "render", "synth", "datasets", "segment", "qa", "tools",
          "bench", "models", "agent", "eval", "cli"]
RANK = {name: i for i, name in enumerate(LAYERS)}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) == 1 or not (ROOT / parts[1]).is_dir():
        return "cli" if parts[1:2] == ["cli"] else "core"
    return parts[1]


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int, list[str]]]:
    """(imported module, line, imported names) for every import in the file, at any depth."""
    mod = module_name(path)
    package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            if target == "volvqa":  # `from volvqa import labels`: the names are modules
                out += [(f"volvqa.{n}", node.lineno, []) for n in names]
            else:
                out.append((target, node.lineno, names))
    return [(t, line, names) for t, line, names in out if t == "volvqa" or t.startswith("volvqa.")]


def all_modules() -> list[Path]:
    return sorted(ROOT.rglob("*.py"))


def test_layers_list_every_package():
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert packages <= set(LAYERS), f"packages with no layer: {sorted(packages - set(LAYERS))}"


def test_no_upward_import():
    bad = []
    for path in all_modules():
        src = layer_of(module_name(path))
        for target, line, _names in imports_of(path):
            dst = layer_of(target)
            if RANK[dst] > RANK[src]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {src} imports {target} ({dst} is above)")
    assert not bad, "upward imports:\n" + "\n".join(bad)


def test_no_private_name_crosses_packages():
    bad = []
    for path in all_modules():
        src = layer_of(module_name(path))
        for target, line, names in imports_of(path):
            if layer_of(target) == src:
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".") if p.startswith("_") and not p.startswith("__")]
            if private:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line}: {target} {private}")
    assert not bad, "private names imported across packages:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_imports(tmp_path):
    # The check must not be blind to the lazy imports that kept the old cycle alive.
    f = ROOT / "io" / "__init__.py"
    found = imports_of(f)
    assert found, "imports_of found nothing in volvqa/io/__init__.py"
    src = tmp_path / "volvqa_fake.py"
    src.write_text("def f():\n    from volvqa.eval.run import predict\n")
    tree = [n for n in ast.walk(ast.parse(src.read_text())) if isinstance(n, ast.ImportFrom)]
    assert tree and tree[0].module == "volvqa.eval.run"
    assert RANK[layer_of("volvqa.eval.run")] > RANK[layer_of("volvqa.io.nifti")]


@pytest.mark.parametrize("module,layer", [("volvqa.records", "core"), ("volvqa.io.atomic", "io"),
                                          ("volvqa.cli", "cli"), ("volvqa.qa.templates.base", "qa")])
def test_layer_of(module, layer):
    assert layer_of(module) == layer
