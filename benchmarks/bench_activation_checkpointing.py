"""Memory and time of the pretraining step under each activation-checkpointing mode (none, selective, full).

Each (mode, batch) runs in a fresh process: one bf16-autocast training step (forward, masked loss, backward) of
STSwinMAEForPreTraining, warm-up step first. Reported per mode:
  - activations per sample: the growth of peak memory from the smaller to the larger batch, divided by the extra
    samples (on CUDA `max_memory_allocated`; on CPU the peak resident set, `ru_maxrss`, above the level before the
    step; weights, gradients and their casts are the same at both batches and cancel out);
  - step time at the larger batch (process CPU time with one thread on CPU, wall time with synchronisation on CUDA)
    and its ratio to "none";
  - GEMMs and LayerNorms per step (counted with a dispatch mode): "selective" must run no GEMM twice.

    python benchmarks/bench_activation_checkpointing.py                      # CPU: degas-100m, batches 2 and 4
    python benchmarks/bench_activation_checkpointing.py --device cuda --batches 32 64
    python benchmarks/bench_activation_checkpointing.py --preset degas-tiny --size 64   # seconds (tests)

Writes a Markdown table to --output (default benchmarks/results/activation_checkpointing[_cuda].md).
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("none", "selective", "full")


def measure(args) -> dict:
    """One (mode, batch) in this process: peak memory above the start, step time, operator counts."""
    import resource
    import time
    from collections import Counter

    import torch
    from torch.utils._python_dispatch import TorchDispatchMode

    from degas_hf import STSwinMAEConfig, STSwinMAEForPreTraining
    from degas_hf.training.activation_checkpointing import enable_activation_checkpointing

    cuda = args.device == "cuda"
    if not cuda:
        torch.set_num_threads(1)
    torch.manual_seed(0)
    config = STSwinMAEConfig.from_preset(args.preset, check_finite_inputs=False)
    model = enable_activation_checkpointing(STSwinMAEForPreTraining(config).to(args.device).train(), args.mode)
    pixel_values = torch.randn(args.batch, config.num_channels, args.frames, args.size, args.size, device=args.device)

    def step():
        with torch.autocast(args.device, dtype=torch.bfloat16):
            loss = model(pixel_values, mask_seed=0).loss
        loss.backward()
        model.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()

    def peak() -> float:
        if cuda:
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    if cuda:
        step()  # warm-up (cuBLAS workspaces, caches), then a fresh peak
        torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated() / 2**20 if cuda else peak()
    clock = time.perf_counter if cuda else time.process_time
    start = clock()
    step()
    first = clock() - start
    memory = peak() - before
    start = clock()
    step()
    seconds = min(first, clock() - start)

    class Count(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.counts = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.counts[func.overloadpacket.__name__] += 1
            return func(*args, **(kwargs or {}))

    with Count() as counted:
        step()
    counts = counted.counts
    return dict(mode=args.mode, batch=args.batch, memory_mib=memory, seconds=seconds,
                gemms=counts["mm"] + counts["addmm"] + counts["bmm"], layer_norms=counts["native_layer_norm"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", default="degas-100m")
    parser.add_argument("--batches", type=int, nargs=2, default=None, help="two batch sizes (default: CPU 2 4)")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--output", default=None)
    parser.add_argument("--mode", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.mode is not None:  # child process
        print(json.dumps(measure(args)), flush=True)
        return 0
    batches = args.batches or ([32, 64] if args.device == "cuda" else [2, 4])
    if batches[1] <= batches[0]:
        parser.error(f"--batches: the second batch must be larger than the first, got {batches}")
    rows = {}
    for mode in MODES:
        for batch in batches:
            command = [sys.executable, __file__, "--device", args.device, "--preset", args.preset, "--frames",
                       str(args.frames), "--size", str(args.size), "--mode", mode, "--batch", str(batch)]
            result = subprocess.run(command, capture_output=True, text=True)
            lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
            if result.returncode or not lines:
                raise SystemExit(f"{mode} at batch {batch} failed:\n{result.stderr[-2000:]}")
            rows[mode, batch] = json.loads(lines[-1])
            print(rows[mode, batch], flush=True)
    small, large = batches
    per_sample = {m: (rows[m, large]["memory_mib"] - rows[m, small]["memory_mib"]) / (large - small) for m in MODES}
    base_seconds = rows["none", large]["seconds"]
    clock = "wall time" if args.device == "cuda" else "process CPU time, 1 thread"
    lines = [
        "# Activation checkpointing: memory and time of the pretraining step",
        "",
        f"{datetime.date.today()}; {platform.machine()}, device {args.device}; {args.preset}, {args.frames} dates x "
        f"{args.size}^2, bf16 autocast, batches {small} and {large}; one process per (mode, batch). Command: "
        f"`{' '.join(['python benchmarks/bench_activation_checkpointing.py', *(argv if argv is not None else sys.argv[1:])])}`",
        "",
        f"| mode | activations per sample (MiB) | vs none | step at batch {large} (s, {clock}) | vs none | "
        "GEMMs per step | LayerNorms per step |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        row = rows[mode, large]
        # (tiny models: the peak may not move between the batches, so there is no ratio to give)
        ratio = f"{per_sample[mode] / per_sample['none']:.2f}x" if per_sample["none"] > 0 else "-"
        lines.append(f"| {mode} | {per_sample[mode]:.0f} | {ratio} | "
                     f"{row['seconds']:.2f} | {row['seconds'] / base_seconds:.2f}x | {row['gemms']} | "
                     f"{row['layer_norms']} |")
    suffix = "_cuda" if args.device == "cuda" else ""
    output = Path(args.output) if args.output else ROOT / "benchmarks" / "results" / f"activation_checkpointing{suffix}.md"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
