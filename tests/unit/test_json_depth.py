"""The nesting depth of a JSON text, measured before any decoder recurses into it."""

from __future__ import annotations

import pytest

from shared.json_depth import MAX_JSON_DEPTH, json_depth, too_deep


@pytest.mark.parametrize(
    ("raw", "depth"),
    [
        (b"1", 0),
        (b'"x"', 0),
        (b"[]", 1),
        (b"{}", 1),
        (b'{"a": [1, {"b": 2}]}', 3),
        (b'{"a": "[[[[{{{{"}', 1),  # brackets inside strings do not count
        (b'["a\\"[[[", "\\\\"]', 1),  # nor after an escaped quote; an escaped backslash ends one
        (b"[" * 10_000 + b"]" * 10_000, 10_000),
    ],
)
def test_depth_counts_arrays_and_objects_but_not_brackets_in_strings(
    raw: bytes, depth: int
) -> None:
    assert json_depth(raw) == depth


def test_the_limit_is_inclusive() -> None:
    assert not too_deep(b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH)
    assert too_deep(b"[" * (MAX_JSON_DEPTH + 1) + b"]" * (MAX_JSON_DEPTH + 1))
    # Many brackets side by side are not depth.
    assert not too_deep(b"[" + b",".join([b"[1]"] * 1000) + b"]")
