"""GPU benchmark at full width: LLaVA-1.5-7B's architecture with random bf16 weights on CUDA (no download).

    python benchmarks/bench_gpu.py                 # all three on cuda:0, prints a table (+ --json FILE)
    python benchmarks/bench_gpu.py --layers 8      # fewer decoder layers (same width), e.g. on a small GPU

At 32 layers it needs about 35 GB of GPU memory: the model (14 GB in bf16) and an eager copy for
the naive reference and the ``output_attentions`` measurement.

The model is ``LlavaForConditionalGeneration`` with the shapes of ``llava-hf/llava-1.5-7b-hf``: a CLIP
ViT-L/14 tower at 336 px (24 layers, width 1024; 576 image tokens), the two-layer MLP projector and a
Llama-2-7B decoder (32 layers, width 4096, 32 heads, MLP 11008, vocabulary 32064): 7.06 B parameters.
It is built directly on the GPU in bf16 and filled with small random numbers (no initialisers run on
the CPU). The processor is the test suite's offline LLaVA processor (real image geometry, toy
vocabulary), so the prompt has LLaVA-1.5's layout: 576 image tokens and a few dozen text tokens.

1. Attention recording memory: peak CUDA memory above the weights for one forward that records
   question+last -> every key attention in every layer (``attention_maps``), against a plain
   forward and an eager forward with ``output_attentions=True``.
2. Knockout sweep: 3 edge sets x every layer window (window 9, as in the paper) through the
   attention backend (batched over configurations, prefix key/value cache reused) against the
   naive reference (eager, one full forward per configuration) on a subset of the configurations;
   the probabilities are compared on that subset.
3. Capture throughput: mean-pooled ``resid_post`` of every layer for image / question / last
   tokens over shapes-world questions (samples per second), batch 16.

Without CUDA it exits with status 2 and says so. ``--cpu-smoke`` runs the same code on the CPU at
tiny width (a check of the script, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

FULL_TEXT = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                 num_key_value_heads=32, head_dim=128, vocab_size=32064, max_position_embeddings=4096,
                 rms_norm_eps=1e-5)
FULL_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   projection_dim=768)
SMOKE_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                  num_key_value_heads=4, head_dim=16, vocab_size=32064, max_position_embeddings=4096)
SMOKE_VISION = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
QUESTION = "what color is the large circle that is left of the small red square ?"


def build(device: torch.device, dtype: torch.dtype, text: dict, vision: dict):
    """Return a ``VLM`` of LLaVA-1.5's architecture with the given widths, random weights, built on ``device``."""
    from transformers import AutoModelForImageTextToText

    from analysis.models import VLM
    from analysis.testing import tiny_parts

    _, processor = tiny_parts("llava", image_geometry="published")  # tiny model (discarded) + the offline processor at 336 px
    from transformers import CLIPVisionConfig, LlavaConfig, LlamaConfig

    tok = processor.tokenizer
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**vision, image_size=336, patch_size=14),
        text_config=LlamaConfig(**text, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                pad_token_id=tok.pad_token_id),
        image_token_index=tok.convert_tokens_to_ids("<image>"),
        image_seq_length=576, vision_feature_select_strategy="default", vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForImageTextToText.from_config(config, dtype=dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0) if "norm" in name or "layrnorm" in name or "layer_norm" in name else p.zero_()
            else:
                p.normal_(0.0, 0.02)
    return VLM.from_parts(model.eval(), processor, name="llava-1.5-7b-architecture (random)")


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak_above(device, fn) -> float | None:
    """Peak CUDA memory (GiB) above what was allocated before ``fn`` ran; None on the CPU."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    fn()
    torch.cuda.synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**30


def bench_memory(vlm, prepared, eager) -> dict:
    from analysis.probes import attention_maps

    device = vlm.device

    def plain():
        with torch.no_grad():
            vlm.model(**prepared.inputs, logits_to_keep=1)

    def record():
        attention_maps(vlm, prepared, query="question")  # question tokens (+ last) x every key, every layer

    def output_attentions():
        with torch.no_grad():
            eager(**prepared.inputs, logits_to_keep=1, output_attentions=True)

    out = {"tokens": prepared.length}
    for name, fn in (("plain", plain), ("record", record), ("output_attentions", output_attentions)):
        try:
            out[f"{name}_gib"] = _peak_above(device, fn)
        except torch.OutOfMemoryError:
            out[f"{name}_gib"] = "out of memory"
            torch.cuda.empty_cache()
    return out


def bench_knockout(vlm, prepared, eager, window: int, reference_configs: int) -> dict:
    from analysis.models.answers import next_token_logits
    from analysis.probes.backend import Edges
    from analysis.probes.flow import block_positions, knockout_probs, layer_windows
    from analysis.probes.reference import reference_knockout

    device = vlm.device
    token = int(next_token_logits(vlm, prepared).argmax())
    configs = []
    for block in ("question->last", "image->last", "image->question"):
        sources, targets = block_positions(prepared, block)
        configs += [[Edges.make(sources, targets, r)] for _, r in layer_windows(vlm.n_layers, window)]
    knockout_probs(vlm, prepared, configs[:2], token, batch_size=16)  # warm-up
    _sync(device)
    start = time.perf_counter()
    fast = knockout_probs(vlm, prepared, configs, token, batch_size=16, reuse_prefix=True)
    _sync(device)
    t_fast = time.perf_counter() - start
    index = list(range(0, len(configs), max(1, len(configs) // reference_configs)))[:reference_configs]
    subset = [configs[i] for i in index]
    reference_knockout(vlm, prepared, subset[:1], token, model=eager)  # warm-up
    _sync(device)
    start = time.perf_counter()
    reference = reference_knockout(vlm, prepared, subset, token, model=eager)
    _sync(device)
    t_reference = time.perf_counter() - start
    per_config = t_reference / len(subset)
    return {"configs": len(configs), "window": window, "backend_s": t_fast,
            "reference_s_per_config": per_config, "reference_s_all (extrapolated)": per_config * len(configs),
            "speed-up": per_config * len(configs) / t_fast, "reference_configs_run": len(subset),
            "max_abs_diff_prob": float((fast[index] - reference.to(fast.device)).abs().max())}


def bench_capture(vlm, n: int, batch_size: int) -> dict:
    from analysis.capture import capture
    from analysis.data.shapes import make_samples

    device = vlm.device
    samples = make_samples(n, seed=0, image_size=336)
    capture(vlm, samples[:batch_size], roles=("image", "question", "last"), pool="mean", batch_size=batch_size,
            progress=False)  # warm-up
    _sync(device)
    start = time.perf_counter()
    acts = capture(vlm, samples, roles=("image", "question", "last"), pool="mean", batch_size=batch_size,
                   progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"samples": len(acts), "batch_size": batch_size, "sites": len(acts.sites), "seconds": seconds,
            "samples_per_s": len(acts) / seconds}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="a CUDA device (default cuda)")
    parser.add_argument("--layers", type=int, help="decoder layers (default 32, as LLaVA-1.5-7B)")
    parser.add_argument("--window", type=int, default=9, help="knockout window (default 9, the paper's)")
    parser.add_argument("--reference-configs", type=int, default=12, help="naive-reference configurations run")
    parser.add_argument("--capture-samples", type=int, default=128)
    parser.add_argument("--only", choices=["memory", "knockout", "capture"], help="run one benchmark")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--cpu-smoke", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cpu_smoke:
        device, dtype, text, vision = torch.device("cpu"), torch.float32, dict(SMOKE_TEXT), SMOKE_VISION
    else:
        if not torch.cuda.is_available():
            print("bench_gpu.py measures on a CUDA GPU, and torch.cuda.is_available() is False here (torch "
                  f"{torch.__version__}). Run it on a machine with an NVIDIA GPU and a CUDA build of torch; "
                  "benchmarks/bench_attention.py and bench_capture.py measure on the CPU.", file=sys.stderr)
            return 2
        device, dtype, text, vision = torch.device(args.device), torch.bfloat16, dict(FULL_TEXT), FULL_VISION
    if args.layers:
        text["num_hidden_layers"] = args.layers
    window = min(args.window, text["num_hidden_layers"])
    start = time.perf_counter()
    vlm = build(device, dtype, text, vision)
    _sync(device)
    from PIL import Image

    prepared = vlm.prepare(Image.new("RGB", (336, 336), (90, 30, 200)), QUESTION)
    info = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (smoke test)",
            "torch": torch.__version__, "dtype": str(dtype).removeprefix("torch."),
            "parameters_b": sum(p.numel() for p in vlm.model.parameters()) / 1e9, "layers": vlm.n_layers,
            "prompt_tokens": prepared.length, "build_s": time.perf_counter() - start}
    if device.type == "cuda":
        info["weights_gib"] = torch.cuda.memory_allocated(device) / 2**30
    results = {"model": info}
    from analysis.probes.reference import eager_copy

    eager = eager_copy(vlm) if args.only in (None, "memory", "knockout") else None  # a second copy, eager attention
    benches = {"memory": lambda: bench_memory(vlm, prepared, eager),
               "knockout": lambda: bench_knockout(vlm, prepared, eager, window, args.reference_configs),
               "capture": lambda: bench_capture(vlm, 8 if args.cpu_smoke else args.capture_samples,
                                                4 if args.cpu_smoke else 16)}
    for name, run in benches.items():
        if args.only in (None, name):
            results[name] = run()
    for section, values in results.items():
        print(f"\n{section}")
        for key, value in values.items():
            print(f"  {key:32s} {value:.4g}" if isinstance(value, float) else f"  {key:32s} {value}")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
