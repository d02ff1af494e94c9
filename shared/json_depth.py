"""How deeply a JSON text nests, measured before anything decodes it.

Every JSON decoder we use recurses: msgspec raises RecursionError near Python's recursion limit
(~1,000 levels), orjson refuses 1,024 to read and 255 to write. A body nested 10,000 deep
therefore made a 500, and one nested 300 deep passed ingest and broke the sender's encoder
later. So the services that take free-form JSON (ingest's requests, status's webhooks) refuse
anything deeper than `MAX_JSON_DEPTH` with a clear 400 first. Meta's own shapes nest about ten
levels; a flow's `flow_action_payload.data` or a template parameter is the client's, and 64
levels is far more than any real one needs.

The scan is linear: strings are cut out with one regular expression (their brackets don't
count), everything but brackets is dropped, and the running depth is summed in C
(`itertools.accumulate`). A 3 MiB webhook takes a few milliseconds.
"""

from __future__ import annotations

import re
from itertools import accumulate

MAX_JSON_DEPTH = 64

# A JSON string: quote, then runs of ordinary characters and escapes (the unrolled form, which
# the regular-expression engine walks without backtracking), then the closing quote.
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_A_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def json_depth(raw: bytes) -> int:
    """The deepest nesting of arrays and objects in `raw` (0 for a scalar). Meant for texts
    about to be decoded: for one that is not JSON the answer means nothing (the decoder will
    refuse it anyway)."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_A_BRACKET)
    if not brackets:
        return 0
    return max(0, max(accumulate(map(_STEP.__getitem__, brackets))))


def too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    # Fewer opening brackets than the limit cannot nest deeper than it: most bodies stop here
    # (two counts, no scan).
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    return json_depth(raw) > limit
