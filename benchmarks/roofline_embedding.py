"""What the corrected roofline (2026-12-06: an untied input embedding is gathered, not read
whole each pass) does to issue 17's recorded shares of the bandwidth roofline. The engine's work
is unchanged; only the least time it is held against shrinks, so a share recorded against the
old roofline reads lower by old roofline tok/s over new.

    PYTHONPATH=src python benchmarks/roofline_embedding.py MODEL:BATCH:TOKS:OLD_ROOFLINE_TOKS ...

Each argument is one recorded figure of benchmarks/RESULTS.md: the shape, its batch, the decode
tokens/s measured and the roofline tokens/s it was held against then (a 128-token prompt and 256
new tokens, as gpu_run.py measures). The ratio of the two rooflines is computed by the package's
own `request_cost` (memory-bound decode: bytes per step), with the old one rebuilt by setting the
shape's `embedding_bytes` to 0, which is how it counted.
"""

from __future__ import annotations

import sys
from dataclasses import replace

from section import commit, table

from tradeoff.engines.base import ModelShape
from tradeoff.engines.hf_config import load_hf_config, shape_from_hf_config
from tradeoff.meters.roofline import request_cost

PROMPT, NEW = 128, 256


def decode_bytes(shape: ModelShape, batch: int) -> float:
    """Bytes moved by the decode's passes: the request's, less its prefill's."""
    return (
        request_cost(shape, PROMPT, NEW, batch).bytes - request_cost(shape, PROMPT, 1, batch).bytes
    )


def main(figures: list[str]) -> None:
    rows = []
    for figure in figures:
        model, batch_text, toks_text, old_text = figure.split(":")
        batch, toks, old = int(batch_text), float(toks_text), float(old_text)
        shape = shape_from_hf_config(load_hf_config(model), "bf16", model)
        before = decode_bytes(replace(shape, embedding_bytes=0), batch)
        after = decode_bytes(shape, batch)
        new = old * before / after
        rows.append([
            model, str(batch), f"{before / (NEW - 1) / 1e9:.3f}", f"{after / (NEW - 1) / 1e9:.3f}",
            f"{toks:,.1f}", f"{old:,.1f}", f"{toks / old:.1%}", f"{new:,.1f}", f"{toks / new:.1%}",
        ])  # fmt: skip
    print(table(
        ["shape", "batch", "GB a step, before", "GB a step, now", "decode tok/s (recorded)",
         "roofline tok/s then", "share then", "roofline tok/s now", "share now"],
        rows,
    ))  # fmt: skip
    print(f"\nTree {commit()}.")


if __name__ == "__main__":
    main(sys.argv[1:])
