"""Benchmark: a notebook kernel forked from the kernel server against one started from scratch.

    python benchmarks/bench_kernels.py            # 3 alternating rounds
    python benchmarks/bench_kernels.py --rounds 1

Each kernel (the registered ``vlm-probes`` kernel, one at a time, OMP_NUM_THREADS=1 as a kernel of
``./run_all.sh`` on the 2-core machine) is started, runs what every notebook's first cells run
(``import torch``, ``from analysis import load_vlm``, the plots and probes, ``load_vlm`` of the
embedded default) and is shut down; the time is from the start request to the end of the shutdown.
The kernel server's own start (its imports, paid once per ``./run_all.sh``) is timed apart. Both
kernels must report the same model. Needs the kernel registered (``./run_all.sh --setup``).
"""

from __future__ import annotations

import argparse
import os
import time

from jupyter_client import AsyncKernelManager
from jupyter_client.utils import run_sync

FIRST_CELLS = ("import torch\n"
               "from analysis import load_vlm\n"
               "from analysis.plots import save_figure, use_style\n"
               "from analysis.probes import information_flow\n"
               "vlm = load_vlm('zoo:shapes-llava', device='cpu')\n"
               "print(vlm.name, vlm.n_layers)")


def _kernel_seconds(manager_class) -> tuple[float, str]:
    """Start a kernel, run FIRST_CELLS, shut it down; return the seconds and what it printed."""
    from analysis.runner import KERNEL

    start = time.perf_counter()
    km = manager_class(kernel_name=KERNEL)
    run_sync(km.start_kernel)()
    client = km.blocking_client()
    client.start_channels()
    client.wait_for_ready(timeout=120)
    printed = []
    reply = client.execute_interactive(FIRST_CELLS, timeout=120, output_hook=lambda msg: printed.append(
        msg["content"].get("text", "")) if msg["msg_type"] == "stream" and msg["content"]["name"] == "stdout" else None)
    client.stop_channels()
    run_sync(km.shutdown_kernel)()
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"the kernel failed: {reply['content']}")
    return time.perf_counter() - start, "".join(printed).strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = "1"

    from analysis.kernel_fork import forked_kernels
    from analysis.runner import KERNEL, check_kernel

    check_kernel()
    started = time.perf_counter()
    with forked_kernels(KERNEL) as forked:
        server = time.perf_counter() - started
        if forked is None:
            raise SystemExit("this kernel cannot be forked here (see analysis.kernel_fork.forkable)")
        times = {"fresh": [], "forked": []}
        seen = set()
        for _ in range(args.rounds):
            for side, manager in (("fresh", AsyncKernelManager), ("forked", forked)):
                seconds, printed = _kernel_seconds(manager)
                times[side].append(seconds)
                seen.add(printed)
    fresh, fork = min(times["fresh"]), min(times["forked"])
    print(f"vlm-probes kernel, OMP_NUM_THREADS=1, best of {args.rounds} alternating round(s); "
          f"both printed {' / '.join(sorted(seen))!r}\n")
    print(f"{'start, first cells, shut down':<40} {'fresh':>8} {'forked':>8} {'ratio':>6}")
    print(f"{'one kernel':<40} {fresh:>7.1f}s {fork:>7.1f}s {fresh / fork:>5.1f}x")
    print(f"{'8 kernels (./run_all.sh), with the server':<40} {8 * fresh:>7.1f}s {server + 8 * fork:>7.1f}s "
          f"{8 * fresh / (server + 8 * fork):>5.1f}x")
    print(f"\nthe kernel server's start (its imports, once per run): {server:.1f} s")
    if len(seen) != 1:
        raise SystemExit(f"the kernels disagree: {seen}")


if __name__ == "__main__":
    main()
