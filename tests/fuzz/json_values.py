"""JSON-shaped inputs for parsers: any JSON value, values chosen to sit on the edges of
what parsers check (64-bit limits, huge integers, -0.0, NaN, empty strings), and mutations
of a valid document (one field replaced, removed or added at any depth), which reach the
checks deep inside a document that random JSON never gets past.

Documents are encoded with the standard library, which writes integers of any size and
``NaN``/``Infinity`` tokens; whether a parser accepts those is part of what is tested.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import strategies as st

__all__ = ["EDGE_SCALARS", "deeply_nested", "edge_variants", "encode", "json_values", "mutated"]

_NUMBER_EDGES = [
    0, -1, 1, 255, 256, 65536, 2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1,
    10**400, -(10**400), 0.5, -0.0, 1e308, -1e308, 1e-320, float("nan"), float("inf"), float("-inf"),
]
_STRING_EDGES = ["", " ", "0", "1", "-1", "true", "null", "\x00", "\ud7ff", "\ud800", "é", "FP32", "BYTES", "x" * 300, "9" * 5000]
_ALL_EDGES = [*_NUMBER_EDGES, True, False, None, *_STRING_EDGES]
EDGE_SCALARS = st.sampled_from(_ALL_EDGES)
# A leaf replaced by an edge of its own JSON type gets past type checks to the range checks.
_EDGES_LIKE = {int: _NUMBER_EDGES, float: _NUMBER_EDGES, str: _STRING_EDGES}

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12) | EDGE_SCALARS)


def json_values(max_leaves: int = 12) -> st.SearchStrategy:
    return st.recursive(
        SCALARS,
        lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
        max_leaves=max_leaves,
    )


def _slots(node: Any, path: tuple = ()) -> list[tuple]:
    """Every place in a document: paths to containers' members, the root as ()."""
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _slots(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _slots(value, path + (i,))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def _mutate(draw, doc: Any) -> Any:
    path = draw(st.sampled_from(_slots(doc)))
    value = draw(json_values(6))
    if not path:
        return value
    parent, key = _get(doc, path[:-1]), path[-1]
    action = draw(st.sampled_from(["replace", "edge", "edge", "remove", "add", "wrap"]))
    if action == "replace":
        parent[key] = value
    elif action == "edge":
        parent[key] = draw(st.sampled_from(_EDGES_LIKE.get(type(parent[key]), _ALL_EDGES)))
    elif action == "remove":
        del parent[key]
    elif action == "wrap":  # the right value one level too deep, a classic shape mistake
        parent[key] = [parent[key]]
    elif isinstance(parent, dict):
        parent[draw(st.text(max_size=8))] = value
    else:
        parent.insert(draw(st.integers(0, len(parent))), value)
    return doc


_CROSS_TYPE = [None, True, [], {}, "", 0, 1.5, [1]]


def edge_variants(doc: Any):
    """Every leaf of ``doc`` replaced in turn by every edge of its own type and a value of
    each other type: a sweep that reaches each field's range checks, which random mutation
    hits only by luck. Yields (a description of the change, document)."""
    for path in _slots(doc):
        leaf = _get(doc, path)
        if not path or isinstance(leaf, (dict, list)) and leaf:
            continue
        for value in [*_EDGES_LIKE.get(type(leaf), _ALL_EDGES), *_CROSS_TYPE]:
            variant = copy.deepcopy(doc)
            _get(variant, path[:-1])[path[-1]] = value
            yield f"{'.'.join(map(str, path))} = {value!r:.40}", variant


@st.composite
def mutated(draw, documents: st.SearchStrategy, max_mutations: int = 3) -> Any:
    """A valid document with one to ``max_mutations`` mutations."""
    doc = copy.deepcopy(draw(documents))
    for _ in range(draw(st.integers(1, max_mutations))):
        doc = draw(_mutate(doc))
    return doc


def encode(doc: Any) -> bytes:
    return json.dumps(doc, allow_nan=True).encode()


def deeply_nested(min_depth: int = 2000, max_depth: int = 100_000) -> st.SearchStrategy:
    """Bodies like ``[[[[...`` or ``{"a":{"a":...``, nested well past recursive parsers' limits
    (orjson stops at 1024; the standard library at the interpreter's recursion limit)."""
    def build(args: tuple[int, str, bool]) -> bytes:
        depth, kind, closed = args
        opener, closer = ("[", "]") if kind == "list" else ('{"a":', "}")
        return (opener * depth + ("1" + closer * depth if closed else "")).encode()

    return st.tuples(st.integers(min_depth, max_depth), st.sampled_from(["list", "object"]), st.booleans()).map(build)
