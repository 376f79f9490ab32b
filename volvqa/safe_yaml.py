"""YAML for manifests and label specs, bounded: aliases cannot blow a small file up.

``yaml.safe_load`` builds a billion-laughs document as a small graph of shared
objects, but anything that walks it (a message's ``repr``, a label table) sees
the expanded tree. Here the composed node graph is measured as that tree before
anything is built from it, and refused past :data:`MAX_NODES`.
"""
from __future__ import annotations

import yaml

from volvqa.errors import VolvqaInputError

#: Nodes of the document once every alias is expanded (a large label spec has ~200).
MAX_NODES = 100_000


def load_yaml(text: str, where) -> object:
    """The document in ``text`` (safe tags only); ``where`` names the file in errors."""
    loader = None
    try:
        loader = yaml.SafeLoader(text)   # the reader refuses control characters here already
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expanded_size(node, where)
        return loader.construct_document(node)
    except yaml.YAMLError as e:
        raise VolvqaInputError(where, f"not valid YAML ({str(e).splitlines()[0][:120]})") from None
    finally:
        if loader is not None:
            loader.dispose()


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def _check_expanded_size(root, where) -> None:
    size: dict[int, int] = {}
    open_: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            size[key] = 1 + sum(size[id(c)] for c in _children(node))
            if size[key] > MAX_NODES:
                raise VolvqaInputError(where, f"YAML expands to more than {MAX_NODES} nodes through its "
                                       "aliases (an alias bomb?)")
            continue
        if key in size:
            continue
        if key in open_:
            raise VolvqaInputError(where, "YAML alias refers to itself (a recursive document)")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
