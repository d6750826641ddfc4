"""Benchmark: work shared across edge sets, inputs and checkpoints, side by side with doing it again.

    python benchmarks/bench_sharing.py            # 420 questions, 6 checkpoints, 2 alternating rounds
    python benchmarks/bench_sharing.py --quick    # 70 questions, 3 checkpoints, 1 round

Each pair runs in this process on the same inputs, alternating, one torch thread (as a notebook
kernel on the 2-core machine); the table gives each side's fastest round and checks the results are
identical:

1. ``information_flow`` over the six edge sets of ``02_information_flow`` in one sweep, split with
   ``KnockoutResult.select``, against one sweep over the four knockout edge sets and one over the
   two region edge sets (the notebook before: each question's unmodified forward twice).
2. ``logit_lens`` batching inputs of equal token length (``batch_size=16``) against one input per
   forward (``batch_size=1``).
3. ``alignment_vs_accuracy`` over checkpoints of one training run, building each question's inputs
   once (``reusing_inputs``), against building them for every checkpoint and measure (its
   ``reusing_inputs`` replaced by a block that reuses nothing, for this comparison only).
4. ``information_flow(..., lens=True)``, the logit lens read from the sweep's own unmodified forwards
   (as ``02_information_flow`` runs it), against the sweep and ``logit_lens`` with its own (batched)
   forwards.
5. ``sanity_report`` with ``05_attributions``' methods on ``zoo:shapes-llava-local``: the cascade's
   occlusion and KernelSHAP batches resuming from the original lower layers' kept states, against
   every forward in full (a ``LowerStates`` budget of 0 bytes, for this comparison only).
"""

from __future__ import annotations

import argparse
import contextlib
import time

import torch

FLOW = ("question->last", "image->last", "last->last", "image->question")
REGION = ("related->question", "other->question")


def _timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=420, help="shapes questions (default 420)")
    parser.add_argument("--checkpoints", type=int, default=6, help="checkpoints of the zoo's second run (default 6)")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per pair (default 2)")
    parser.add_argument("--explained", type=int, default=10, help="questions of the sanity report (default 10)")
    parser.add_argument("--quick", action="store_true", help="70 questions, 3 checkpoints, 4 explained, 1 round")
    args = parser.parse_args()
    if args.quick:
        args.n, args.checkpoints, args.explained, args.rounds = 70, 3, 4, 1
    torch.set_num_threads(1)

    import analysis.models
    from analysis import load_vlm
    from analysis.data.samples import as_samples
    from analysis.data.shapes import make_samples
    from analysis.probes import alignment_vs_accuracy, default_methods, information_flow, logit_lens, sanity
    from analysis.zoo import trajectory

    vlm = load_vlm("zoo:shapes-llava", device="cpu")
    raw = make_samples(args.n, seed=0)  # shapes-world samples (with their answer options)
    samples = as_samples(raw)  # images rendered before the clocks start
    asked = raw[:140]
    names = trajectory(run="shapes-llava-run2")[: args.checkpoints]
    options = dict(window=1, batch_size=32, progress=False)

    def one_sweep():
        both = information_flow(vlm, samples, blocks=FLOW + REGION, **options)
        return both.select(FLOW).frame, both.select(REGION).frame

    def two_sweeps():
        return (information_flow(vlm, samples, blocks=FLOW, **options).frame,
                information_flow(vlm, samples, blocks=REGION, **options).frame)

    def with_lens(read: bool):
        flow = information_flow(vlm, samples, blocks=FLOW + REGION, lens=read, **options)
        return flow.frame, flow.lens if read else logit_lens(vlm, samples, only_correct=True, progress=False)

    def across(reuse: bool):
        if not reuse:  # every prepare builds its inputs anew
            analysis.models.reusing_inputs = contextlib.nullcontext
        try:
            return (alignment_vs_accuracy(names, asked, accuracy="options", batch_size=32, progress=False).table,)
        finally:
            analysis.models.reusing_inputs = reusing_inputs

    reusing_inputs = analysis.models.reusing_inputs
    local = load_vlm("zoo:shapes-llava-local", device="cpu")
    explained = as_samples(make_samples(args.explained, seed=0))
    methods = default_methods(local, n_steps=32, n_samples=128, batch_size=32)  # 05's parameters

    def report(resume: bool):
        kept = sanity.LowerStates
        if not resume:  # nothing is kept: every forward in full
            sanity.LowerStates = lambda: kept(budget=0)
        try:
            return (sanity.sanity_report(local, explained, methods, batch_size=32, progress=False).randomisation,)
        finally:
            sanity.LowerStates = kept

    pairs = [
        (f"information_flow, {args.n} questions, 6 edge sets", "one sweep, split", one_sweep,
         "two sweeps (4 + 2 edge sets)", two_sweeps),
        (f"logit_lens, {args.n} questions", "equal lengths batched (16)", lambda: (logit_lens(
            vlm, samples, batch_size=16, progress=False),), "one input per forward", lambda: (logit_lens(
            vlm, samples, batch_size=1, progress=False),)),
        (f"alignment_vs_accuracy, {len(names)} checkpoints x {len(asked)} questions", "inputs built once", lambda: across(True),
         "inputs built per checkpoint", lambda: across(False)),
        (f"information_flow + logit lens, {args.n} questions", "lens from the sweep's forwards",
         lambda: with_lens(True), "logit_lens' own forwards", lambda: with_lens(False)),
        (f"sanity_report (shapes-llava-local), {args.explained} questions", "cascade resuming from kept lower layers",
         lambda: report(True), "every forward in full", lambda: report(False)),
    ]
    print(f"zoo:shapes-llava, 1 torch thread, best of {args.rounds} alternating round(s)\n")
    print(f"{'what':<58} {'shared':>9} {'again':>9} {'ratio':>6}  identical")
    for what, _, fast, _, slow in pairs:
        best = {"fast": float("inf"), "slow": float("inf")}
        results = {}
        for _ in range(args.rounds):
            for side, fn in (("fast", fast), ("slow", slow)):
                seconds, results[side] = _timed(fn)
                best[side] = min(best[side], seconds)
        a, b = results["fast"], results["slow"]
        same = all(x.equals(y) for x, y in zip(a, b))
        print(f"{what:<58} {best['fast']:>8.1f}s {best['slow']:>8.1f}s {best['slow'] / best['fast']:>5.2f}x  {same}")
    print("\n" + "\n".join(f"{what}: shared = {fast_name}; again = {slow_name}"
                           for what, fast_name, _, slow_name, _ in pairs))


if __name__ == "__main__":
    main()
