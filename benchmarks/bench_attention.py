"""Benchmark of the attention backend against the plain reference, as ratios measured in one run.

    python benchmarks/bench_attention.py            # all three, prints a table
    python benchmarks/bench_attention.py --quick    # fewer layers / repeats

1. Knockout sweep (3 edge sets x every window of the paper's 9-of-32 size) on a random-weight
   Llama-style decoder at LLaVA-1.5's layout (576 image tokens + ~40 text tokens), 32 layers (16
   with --quick): the engine (analysis.probes.knockout) vs both naive baselines, one full forward
   per configuration: eager with the edges in its additive mask (the reference paper's way) and
   sdpa with a 4-D boolean mask per layer; probabilities compared, peak RSS growth of each.
2. Peak memory of recording text -> image attention for every layer at a LLaVA-NeXT length
   (~2900 tokens) vs a plain forward, with ``output_attentions=True`` beside it. Each
   measurement runs in a fresh process and reports the peak RSS growth during the forward
   (Linux: the peak is reset through /proc/self/clear_refs just before it).
3. Idle backend vs stock forward time (median of repeats).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import statistics
import subprocess
import sys
import time

import torch
from PIL import Image

from analysis.probes.backend import Edges, Recording, install, probing
from analysis.models.answers import next_token_logits
from analysis.models.sites import hooked
from analysis.probes.flow import block_positions, default_window, layer_windows
from analysis.probes.knockout import knockout_probs
from analysis.probes.reference import eager_copy, reference_knockout
from analysis.testing import tiny_vlm

QUESTION = ("what color is the large circle that is left of the small red square and above the blue "
            "triangle in this picture , and is it the same color as the square or not ?")


def decoder(layers: int, hidden: int = 256, heads: int = 8) -> dict:
    """Config overrides for a Llama-style decoder of the given size."""
    return dict(hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers, max_position_embeddings=4096,
                num_attention_heads=heads, num_key_value_heads=heads, head_dim=hidden // heads)


def naive_sdpa_knockout(model, prepared, configs: list, token: int) -> torch.Tensor:
    """Probability of ``token`` per configuration, one sdpa full forward each: every decoder layer
    gets a 4-D boolean mask (causal, with the configuration's blocked edges False)."""
    length = prepared.length
    causal = torch.ones(length, length, dtype=torch.bool).tril()[None, None]
    out = []
    for edges in configs:
        masks = []
        for layer in range(len(model.get_decoder().layers)):
            mask = causal.clone()
            for e in edges:
                if layer in e.layers:
                    mask[..., e.targets[:, None], e.sources[None, :]] = False
            masks.append(mask)
        with contextlib.ExitStack() as stack:
            for index, module in enumerate(model.get_decoder().layers):
                stack.enter_context(hooked(module.self_attn, pre=lambda a, k, m=masks[index]: (a, {**k, "attention_mask": m})))
            with torch.no_grad():
                logits = model(**prepared.inputs, logits_to_keep=1).logits[0, -1].float()
        out.append(torch.softmax(logits, -1)[token])
    return torch.stack(out)


def _timed(run) -> tuple[torch.Tensor, float, float, float]:
    """Return ``(result, wall seconds, CPU seconds of this process, peak RSS growth in MB)`` of
    ``run()``; CPU seconds hold up better than wall time on a shared machine (with one thread)."""
    _reset_peak()
    before = _status_mb("VmRSS")
    start, cpu = time.perf_counter(), time.process_time()
    result = run()
    return result, time.perf_counter() - start, time.process_time() - cpu, _status_mb("VmHWM") - before


def bench_sweep(layers: int) -> dict:
    """The information-flow sweep of one sample (3 edge sets x every window of the paper's scaled
    size) by the engine and by both naive baselines, one full forward per configuration."""
    vlm = tiny_vlm("llava", text=decoder(layers), image_geometry="published")  # LLaVA-1.5: 336 px, 576 tokens
    prepared = vlm.prepare(Image.new("RGB", (336, 336), (90, 30, 200)), QUESTION)
    token = int(next_token_logits(vlm, prepared).argmax())
    window = default_window(layers)
    configs = []
    for block in ("question->last", "image->last", "image->question"):
        sources, targets = block_positions(prepared, block)
        configs += [[Edges.make(sources, targets, r)] for _, r in layer_windows(vlm.n_layers, window)]
    eager_model, sdpa_model = eager_copy(vlm), copy.deepcopy(vlm.model)
    sdpa_model.config.get_text_config()._attn_implementation_internal = "sdpa"
    eager, t_eager, c_eager, m_eager = _timed(lambda: reference_knockout(vlm, prepared, configs, token,
                                                                          model=eager_model))
    sdpa, t_sdpa, c_sdpa, m_sdpa = _timed(lambda: naive_sdpa_knockout(sdpa_model, prepared, configs, token))
    fast, t_fast, c_fast, m_fast = _timed(lambda: knockout_probs(vlm, prepared, configs, token, batch_size=16))
    return {"layers": layers, "tokens": prepared.length, "image_tokens": len(prepared.image_positions),
            "window": window, "configs": len(configs), "threads": torch.get_num_threads(),
            "naive_eager_s": t_eager, "naive_sdpa_s": t_sdpa, "engine_s": t_fast,
            "speed-up vs eager": t_eager / t_fast, "speed-up vs sdpa": t_sdpa / t_fast,
            "naive_eager_cpu_s": c_eager, "naive_sdpa_cpu_s": c_sdpa, "engine_cpu_s": c_fast,
            "cpu speed-up vs eager": c_eager / c_fast, "cpu speed-up vs sdpa": c_sdpa / c_fast,
            "max_abs_diff engine": float((fast - eager).abs().max()),
            "max_abs_diff sdpa": float((sdpa - eager).abs().max()),
            "peak_mb naive_eager": m_eager, "peak_mb naive_sdpa": m_sdpa, "peak_mb engine": m_fast}


def _status_mb(field: str) -> float:
    """A memory field of /proc/self/status (``VmRSS``: now, ``VmHWM``: peak since reset) in MB."""
    line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:  # Linux: "5" resets VmHWM to the current RSS
        handle.write("5")


def memory_child(mode: str) -> None:
    """Run one forward in this process and print the peak RSS growth (MB) as JSON."""
    torch.set_num_threads(1)
    vlm = tiny_vlm("llava_next", text=decoder(8, hidden=512, heads=8), image_geometry="published")  # 336 px tiles
    prepared = vlm.prepare(Image.new("RGB", (672, 672), (20, 160, 90)), QUESTION)
    if mode == "output_attentions":
        vlm.text_config._attn_implementation_internal = "eager"
    install(vlm) if mode == "record" else None
    _reset_peak()
    before = _status_mb("VmRSS")
    with torch.no_grad():
        if mode == "record":
            rows = torch.cat([prepared.question_positions, torch.tensor([prepared.last_position])])
            recording = Recording(rows=rows, cols=prepared.image_positions, wanted=frozenset(range(vlm.n_layers)))
            with probing(vlm, record=recording):
                vlm.model(**prepared.inputs, logits_to_keep=1)
        else:
            vlm.model(**prepared.inputs, logits_to_keep=1, output_attentions=mode == "output_attentions")
    print(json.dumps({"mode": mode, "tokens": prepared.length, "peak_growth_mb": _status_mb("VmHWM") - before}))


def bench_memory() -> dict:
    out = {}
    for mode in ("plain", "record", "output_attentions"):
        result = subprocess.run([sys.executable, __file__, "--memory-child", mode], capture_output=True, text=True,
                                check=True)
        out[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    plain = out["plain"]["peak_growth_mb"]
    return {"tokens": out["plain"]["tokens"], "plain_mb": plain, "record_mb": out["record"]["peak_growth_mb"],
            "output_attentions_mb": out["output_attentions"]["peak_growth_mb"],
            "record/plain": out["record"]["peak_growth_mb"] / plain,
            "output_attentions/plain": out["output_attentions"]["peak_growth_mb"] / plain}


def bench_idle(layers: int, repeats: int) -> dict:
    """Median forward time with the stock attention and with the idle backend, measured in
    alternating rounds (so that machine load drifts hit both alike)."""
    vlm = tiny_vlm("llava", text=decoder(layers), image_geometry="published")  # LLaVA-1.5: 336 px, 576 tokens
    prepared = vlm.prepare(Image.new("RGB", (336, 336), (90, 30, 200)), QUESTION)
    config = vlm.text_config
    stock_impl = config._attn_implementation
    install(vlm)
    probes_impl = config._attn_implementation

    def once(impl: str) -> float:
        config._attn_implementation_internal = impl
        start = time.perf_counter()
        with torch.no_grad():
            vlm.model(**prepared.inputs)
        return time.perf_counter() - start

    once(stock_impl), once(probes_impl)  # warm-up
    times = {stock_impl: [], probes_impl: []}
    for _ in range(repeats):
        for impl in (stock_impl, probes_impl):
            times[impl].append(once(impl))
    stock, idle = statistics.median(times[stock_impl]), statistics.median(times[probes_impl])
    return {"stock_s": stock, "idle_s": idle, "idle/stock": idle / stock}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="16 layers (sweep) / 8 layers (idle) and 5 repeats "
                        "instead of 32 / 16 layers and 15 repeats")
    parser.add_argument("--only", choices=["sweep", "memory", "idle"], help="run one benchmark")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    layers = 8 if args.quick else 16
    benches = {
        "sweep": ("knockout sweep", lambda: bench_sweep(16 if args.quick else 32)),
        "memory": ("recording memory", bench_memory),
        "idle": ("idle overhead", lambda: bench_idle(layers, repeats=5 if args.quick else 15)),
    }
    for key, (name, bench) in benches.items():
        if args.only and key != args.only:
            continue
        print(f"\n{name}", flush=True)
        for key, value in bench().items():
            print(f"  {key:>24}: {value:.4g}" if isinstance(value, float) else f"  {key:>24}: {value}", flush=True)


if __name__ == "__main__":
    main()
