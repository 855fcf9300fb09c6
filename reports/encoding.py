"""Shorter ONNX-Net encodings for tables: an unrolled recurrent graph repeats the same block of lines once per
time step, differing only in which earlier node each line reads (`Add(n812, n481)` then `Add(n828, n482)`).
Such a block is written once, with the first step's wiring, followed by `[above K lines x N]`.

Rendering only: the record keeps the full encoding (records.json); records.csv gets the folded one, so any
CSV reader's default field limit (131,072 characters) holds it.
"""
from __future__ import annotations

import re

_REF = re.compile(r"\b[nt]\d+\b")  # node refs (ONNX, TFLite) and TFLite tensor refs
MAX_BLOCK_LINES = 256


def _key(line: str) -> str:
    return _REF.sub("n", line)


def fold_blocks(text: str, max_block: int = MAX_BLOCK_LINES) -> str:
    lines = text.split("\n")
    keys = [_key(line) for line in lines]
    out: list[str] = []
    i, n = 0, len(lines)
    while i < n:
        best_p, best_r = 1, 1
        for p in range(1, min(max_block, (n - i) // 2) + 1):
            block = keys[i:i + p]
            r = 1
            while i + (r + 1) * p <= n and keys[i + r * p:i + (r + 1) * p] == block:
                r += 1
            if r > 1 and p * r > best_p * best_r:
                best_p, best_r = p, r
        if best_r == 1:
            out.append(lines[i])
            i += 1
            continue
        if best_p == 1:  # one line, as exact repeats are written by the encoder itself
            out.append(f"{lines[i]}  [x{best_r}]")
        else:
            out.extend(lines[i:i + best_p])
            out.append(f"[above {best_p} lines x{best_r}]")
        i += best_p * best_r
    return "\n".join(out)
