"""Benchmark: capture every layer's pooled hidden states for zoo samples; time and peak memory.

    python benchmarks/bench_capture.py              # 1,000 samples, then the memory check
    python benchmarks/bench_capture.py --n 200      # fewer samples

1. Time: ``capture`` of the LLM input and every decoder layer's output, mean-pooled over the
   image, question and last positions, for ``--n`` shapes-world samples, on ``zoo:shapes-llava``
   (or, before the zoo is built, a random-weight model of the same architecture and processor).
   Target: 1,000 samples in under 2 minutes on 2 CPU cores.
2. Memory: the peak RSS growth of the capture, each run in a fresh process, for ``n / 4`` and
   ``n`` samples. Memory is bounded by the batch when the growth barely changes with ``n``
   (only the pooled ``(n, hidden)`` results grow: a few MB per thousand samples).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch


def load_model():
    """Return (vlm, description): the zoo's shapes-llava, or a random model of its architecture."""
    from analysis.models import VLM, load_vlm
    from analysis.zoo import build_model, build_processor, list_checkpoints

    if "shapes-llava" in list_checkpoints():
        return load_vlm("zoo:shapes-llava", device="cpu"), "zoo:shapes-llava"
    return VLM.from_parts(build_model(), build_processor(), "random shapes-llava"), "random-weight shapes-llava"


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``: now, ``VmHWM``: peak since reset) in MB."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # Linux: "5" resets VmHWM to the current RSS
        handle.write("5")


def run(n: int, batch_size: int) -> dict:
    """Capture ``n`` samples; return timings and the peak RSS growth during the capture."""
    from analysis.capture import capture
    from analysis.data.shapes import make_samples
    from analysis.data.samples import as_samples

    vlm, model = load_model()
    samples = as_samples(make_samples(n, seed=123))  # renders the images before the clock starts
    sites = ["embed"] + [("resid_post", layer) for layer in range(vlm.n_layers)]
    capture(vlm, samples[:batch_size], sites=sites, batch_size=batch_size, progress=False)  # warm-up
    before = _status_mb("VmRSS")
    _reset_peak()
    start = time.perf_counter()
    acts = capture(vlm, samples, sites=sites, roles=["image", "question", "last"], pool="mean",
                   batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    result_mb = sum(v.numel() * v.element_size() for v in acts.features.values()) / 2**20
    return {"model": model, "samples": n, "sites": len(sites), "batch_size": batch_size, "seconds": seconds,
            "samples_per_s": n / seconds, "peak_growth_mb": _status_mb("VmHWM") - before,
            "result_mb": result_mb, "threads": torch.get_num_threads()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="samples (default 1000)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run(args.n, args.batch_size)))
        return
    rows = []
    for n in (max(args.batch_size, args.n // 4), args.n):
        out = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--batch-size", str(args.batch_size)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"model: {rows[0]['model']}, {rows[0]['sites']} sites (LLM input + every layer), roles image / question"
          f" / last, mean-pooled, batch {args.batch_size}, {rows[0]['threads']} threads")
    print(f"{'samples':>8} {'seconds':>8} {'samples/s':>10} {'peak RSS growth MB':>19} {'results MB':>11}")
    for r in rows:
        print(f"{r['samples']:>8} {r['seconds']:>8.1f} {r['samples_per_s']:>10.1f} {r['peak_growth_mb']:>19.1f}"
              f" {r['result_mb']:>11.2f}")
    small, large = rows
    growth = large["peak_growth_mb"] / max(small["peak_growth_mb"], 1e-9)
    print(f"target: {large['samples']} samples in < 120 s: {'met' if large['seconds'] < 120 else 'NOT met'} "
          f"({large['seconds']:.1f} s); peak memory growth x{growth:.2f} for x{large['samples'] / small['samples']:.0f}"
          " samples")


if __name__ == "__main__":
    main()
