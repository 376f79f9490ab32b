"""Small modules and functions: no module over 500 lines, no function over 80 (a long table belongs in
a module-level constant, which this does not count)."""
from __future__ import annotations

import ast
from pathlib import Path

import volvqa

ROOT = Path(volvqa.__file__).parent
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def _sizes():
    for path in sorted(ROOT.rglob("*.py")):
        src = path.read_text()
        rel = path.relative_to(ROOT.parent).as_posix()
        yield rel, None, len(src.splitlines())
        for node in ast.walk(ast.parse(src)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                yield rel, node.name, node.end_lineno - node.lineno + 1


def test_no_long_module_or_function():
    too_long = [f"{rel}: {lines} lines" if name is None else f"{rel}:{name}: {lines} lines"
                for rel, name, lines in _sizes()
                if lines > (MAX_MODULE_LINES if name is None else MAX_FUNCTION_LINES)]
    assert not too_long, "split these:\n" + "\n".join(too_long)


def test_the_size_check_sees_functions():
    # The walk must reach nested and method definitions, or the test above passes on anything.
    found = {(rel, name) for rel, name, _ in _sizes() if name}
    assert ("volvqa/synth/phantom.py", "generate_phantom") in found
    assert ("volvqa/models/encoder3d_net.py", "concepts") in found       # a method
    assert sum(1 for rel, name, lines in _sizes() if name is None) > 100
