"""Benchmark: every family's full-width model (published architecture, 2 + 2 layers) through the
conformance checks, with the time of each probe step and the peak memory.

    python benchmarks/bench_full_width.py                          # fp32, every family
    python benchmarks/bench_full_width.py --dtypes float32 bfloat16 --families smolvlm paligemma

Each (family, dtype) runs in a fresh process (``--one``), so the peak resident memory is that
model's: its weights, the eager copy the reference needs, and the activations. The image per
family is the smallest its real processor turns into the published layout (Idefics3 without
image splitting: its 364 px global tile). Prints a Markdown table for the README's "Fidelity"
section and, with ``--json``, the raw records.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# (width, height) of the input image and processor settings per family.
IMAGES = {
    "llava": ((336, 336), {}),
    "llava_next": ((336, 336), {}),
    "qwen2_vl": ((448, 448), {}),
    "qwen2_5_vl": ((448, 448), {}),
    "idefics3": ((364, 364), {"do_image_splitting": False}),
    "smolvlm": ((512, 512), {"do_image_splitting": False}),
    "paligemma": ((224, 224), {}),
}
QUESTION = "What colour is the circle?"


def one(family: str, dtype: str) -> dict:
    """Build ``family`` at full width in ``dtype``, run the conformance checks; return a record."""
    import numpy as np
    import torch
    from PIL import Image

    from analysis.conformance import conformance
    from analysis.published import PUBLISHED
    from analysis.testing import REAL_TOKENIZER, full_width_vlm

    torch.manual_seed(0)
    start = time.perf_counter()
    vlm = full_width_vlm(family, dtype=getattr(torch, dtype))
    build = time.perf_counter() - start
    size, settings = IMAGES[family]
    for key, value in settings.items():
        setattr(vlm.processor.image_processor, key, value)
    pixels = np.random.default_rng(0).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    result = conformance(vlm, Image.fromarray(pixels), QUESTION)
    parameters = sum(p.numel() for p in vlm.model.parameters())
    return {
        "family": family, "checkpoint": PUBLISHED[family].checkpoint, "tokenizer": REAL_TOKENIZER[family],
        "dtype": result.dtype, "parameters_m": round(parameters / 1e6), "image": f"{size[0]}x{size[1]}",
        "tokens": result.n_tokens, "image_tokens": result.n_image, "build_s": round(build, 1),
        **{f"{k}_s": v for k, v in result.seconds.items()}, "peak_rss_gb": result.peak_rss_gb,
        "idle": result.idle, "recorded": result.recorded, "knockout": result.knockout, "effect": result.effect,
    }


def table(records: list[dict]) -> str:
    """Return the README's Markdown table of ``records``."""
    lines = [
        "| family (published config) | real tokenizer | dtype | params (2+2 layers) | image -> image tokens / all "
        "| forward | attention maps | knockout (fast, L+2 configs) | knockout (reference) | peak RSS "
        "| idle vs stock | recorded vs eager | knockout vs reference (log p) | smallest knockout effect |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        lines.append(
            f"| {r['family']} ({r['checkpoint']}) | {r['tokenizer']} | {r['dtype']} | {r['parameters_m']}M "
            f"| {r['image']} -> {r['image_tokens']} / {r['tokens']} | {r['stock_s']:.2f} s | {r['recorded_s']:.2f} s "
            f"| {r['knockout_s']:.2f} s | {r['reference_s']:.2f} s | {r['peak_rss_gb']:.1f} GiB "
            f"| {r['idle']:.1e} | {r['recorded']:.1e} | {r['knockout']:.1e} | {r['effect']:.2g} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(IMAGES))
    parser.add_argument("--dtypes", nargs="+", default=["float32"])
    parser.add_argument("--one", nargs=2, metavar=("FAMILY", "DTYPE"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the records to this file")
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one)))
        return
    records = []
    for dtype in args.dtypes:
        for family in args.families:
            done = subprocess.run([sys.executable, __file__, "--one", family, dtype], capture_output=True, text=True,
                                  env={**os.environ, "HF_HUB_OFFLINE": "1"})
            if done.returncode != 0:
                print(f"{family} {dtype} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
                continue
            records.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"{family} {dtype}: {records[-1]}", file=sys.stderr, flush=True)
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(table(records))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(records, handle, indent=1)


if __name__ == "__main__":
    main()
