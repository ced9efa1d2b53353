"""GPU benchmark of degas-100m in one command (also runs on CPU, smaller): where the pretraining step's time goes.

Parts, in this order, each in its own subprocess under its own time limit (a slow part, e.g. a first torch.compile,
cannot eat the others; what a killed part printed before its limit is kept; a part the budget no longer fits is
skipped, so the ones the GPU targets need come first):
  matmul     the machine's ceiling: bf16 / tf32 / fp32 matmul TFLOP/s, device copy GB/s
  pretrain   the STSwinMAEForPreTraining step (bf16 autocast forward, backward, clip_grad_norm_, fused AdamW) at
             growing batch sizes (CUDA: 32, 64, 128, 256, up to the first out-of-memory): samples/s, achieved
             TFLOP/s, % of the measured bf16 matmul rate, peak memory; plus eager attention, and selective / full
             activation checkpointing at 1.5x / 3x the largest batch that fitted (CUDA)
  compile    eager vs regional torch.compile (degas_hf.training.compile.compile_model): first-step (compile) time
             and steady samples/s
  overhead   operators per encoder fwd+bwd (all dispatched, and those launching a kernel), ours vs torchvision
             swin3d, and fwd+bwd time at a tiny width (embed 16) where, on a GPU, the time is per-operator host
             overhead
  encoder    encoder forward (no_grad) and forward+backward, ours (SDPA, eager) vs torchvision's swin3d built with
             the same shape, bf16 autocast and fp32
  attention  every attention call of one forward: q/mask shapes, strides, dtype, and the SDPA backend PyTorch picks
             for it (torch._fused_sdp_choice); on CUDA also each backend's fwd+bwd time, forced
  profile    torch.profiler of one bf16 pretraining step: top kernels, attention kernel families (a `softmax` kernel
             in attention means the math fallback), GPU busy time vs step wall time (overhead-bound or not)

    # on the GPU machine (see BENCHMARKS.md for the wheel-carrying steps)
    PYTHONUNBUFFERED=1 python benchmarks/bench_gpu.py --out $OUT
    # on CPU: degas-100m at batch 1 (slow), or tiny sizes in seconds
    python benchmarks/bench_gpu.py --device cpu --torchvision-path /tmp/tv --parts encoder
    python benchmarks/bench_gpu.py --device cpu --small --out /tmp/bench

Writes `gpu.md` (CUDA) or `gpu_bench_cpu.md` / `gpu_bench_cpu_small.md` to --out (default: $OUT, else
benchmarks/results/) and the raw rows as JSON next to it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# In order of what the GPU targets need most (a part that no longer fits the budget is skipped): the step at
# growing batches, then the compiled step, then the comparisons and diagnostics.
PARTS = ("matmul", "pretrain", "compile", "overhead", "encoder", "attention", "profile")
# Seconds per part; their sum stays under the default --budget (6 minutes on one GPU with the start-up).
PART_LIMITS = {"matmul": 20, "pretrain": 100, "compile": 140, "overhead": 20, "encoder": 50, "attention": 15, "profile": 15}


# ------------------------------------------------------------------------------------------------------------
# Helpers shared by the parts (run inside the part's subprocess)
# ------------------------------------------------------------------------------------------------------------


def emit(row: dict) -> None:
    """One result row, as a JSON line the parent collects (flushed at once: a killed part keeps what it said)."""
    print("ROW " + json.dumps(row), flush=True)


def sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def timed(fn, device: str, warmup: int, repeats: int, clock=time.perf_counter) -> float:
    """Mean seconds per call over `repeats` calls after `warmup` calls (wall time unless `clock` says otherwise)."""
    for _ in range(warmup):
        fn()
    sync(device)
    start = clock()
    for _ in range(repeats):
        fn()
    sync(device)
    return (clock() - start) / repeats


def reset_peak(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def sizes(args) -> dict:
    """Model preset and input sizes for the device: degas-100m at 224^2 x 4 dates, or tiny ones with --small."""
    if args.small:
        return dict(preset="degas-tiny", frames=4, size=64, batches=[2], encoder_batch=1, warmup=1, repeats=1)
    if args.device == "cuda":
        return dict(preset="degas-100m", frames=4, size=224, batches=args.batches or [32, 64, 128, 256],
                    encoder_batch=16, warmup=3, repeats=8)
    return dict(preset="degas-100m", frames=4, size=224, batches=args.batches or [1], encoder_batch=1, warmup=1,
                repeats=2)


def build_config(preset: str, **overrides):
    from degas_hf import STSwinMAEConfig

    # The finiteness check reads the data (a host sync per forward); a benchmark feeds random normals.
    return STSwinMAEConfig.from_preset(preset, check_finite_inputs=False, **overrides)


def autocast(device: str, enabled: bool):
    import torch

    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


@contextlib.contextmanager
def _register_fake_disabled():
    # The CPU machine's side-folder torchvision wheel has a compiled extension built for another torch; its
    # import-time `register_fake` calls fail against this torch. Only the pure-Python Video Swin is used.
    import torch

    original = torch.library.register_fake

    def no_op(*args, **kwargs):
        return None if len(args) >= 2 or "func" in kwargs else (lambda function: function)

    torch.library.register_fake = no_op
    try:
        yield
    finally:
        torch.library.register_fake = original


def torchvision_encoder(config, torchvision_path: str | None):
    """torchvision's SwinTransformer3d with our encoder's shape and a num_channels patch embedding, as a module
    timed `patch_embed -> pos_drop -> features -> norm`; None when torchvision cannot be imported."""
    from torch import nn

    try:
        if torchvision_path:
            sys.path.insert(0, torchvision_path)
            with _register_fake_disabled():
                from torchvision.models.video.swin_transformer import SwinTransformer3d
        else:
            from torchvision.models.video.swin_transformer import SwinTransformer3d
    except Exception as error:  # noqa: BLE001 - any import failure means: no peer in this run
        print(f"torchvision swin3d not importable ({type(error).__name__}: {error}); peer rows skipped", flush=True)
        return None
    model = SwinTransformer3d(
        patch_size=list(config.patch_size), embed_dim=config.embed_dim, depths=list(config.depths),
        num_heads=list(config.num_heads), window_size=list(config.window_size), mlp_ratio=config.mlp_ratio,
        stochastic_depth_prob=0.0,
    )
    model.patch_embed.proj = nn.Conv3d(config.num_channels, config.embed_dim, kernel_size=tuple(config.patch_size),
                                       stride=tuple(config.patch_size))

    class Encoder(nn.Module):
        def __init__(self, swin):
            super().__init__()
            self.swin = swin

        def forward(self, pixel_values):
            swin = self.swin
            return swin.norm(swin.features(swin.pos_drop(swin.patch_embed(pixel_values))))

    return Encoder(model)


def step_flops(model, pixel_values, device: str) -> float:
    """FLOPs of one forward+backward (torch.utils.flop_counter), bf16 autocast."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        with autocast(device, True):
            loss = model(pixel_values).loss
        loss.backward()
    model.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


def make_optimizer(model, device: str):
    import torch

    try:
        return torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True), "fused"
    except (RuntimeError, TypeError):
        return torch.optim.AdamW(model.parameters(), lr=1e-4, foreach=True), "foreach"


def pretrain_step(model, optimizer, pixel_values, device: str):
    """The step `degas-hf pretrain` runs: bf16 autocast forward, backward, clipping, AdamW, zero_grad."""
    import torch

    def step():
        with autocast(device, True):
            loss = model(pixel_values).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


# ------------------------------------------------------------------------------------------------------------
# Parts
# ------------------------------------------------------------------------------------------------------------


def part_matmul(args, s):
    import torch

    n = 8192 if args.device == "cuda" else (512 if args.small else 2048)
    repeats = 10 if args.device == "cuda" else 2
    for label, dtype, tf32 in (("bf16", torch.bfloat16, False), ("tf32", torch.float32, True), ("fp32", torch.float32, False)):
        if label == "tf32" and args.device != "cuda":
            continue
        torch.backends.cuda.matmul.allow_tf32 = tf32
        a = torch.randn(n, n, device=args.device, dtype=dtype)
        b = torch.randn(n, n, device=args.device, dtype=dtype)
        seconds = timed(lambda: a @ b, args.device, 2, repeats)
        emit(dict(part="matmul", what=f"{label} matmul {n}^3", tflops=2 * n**3 / seconds / 1e12))
    torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.empty(2**28 if args.device == "cuda" else 2**24, dtype=torch.uint8, device=args.device)
    y = torch.empty_like(x)
    seconds = timed(lambda: y.copy_(x), args.device, 2, repeats)
    emit(dict(part="matmul", what="device copy", gbps=2 * x.numel() / seconds / 1e9))


def part_pretrain(args, s):
    import torch

    from degas_hf import STSwinMAEForPreTraining

    torch.manual_seed(0)
    config = build_config(s["preset"])
    model = STSwinMAEForPreTraining(config).to(args.device).train()
    optimizer, kind = make_optimizer(model, args.device)
    shape = (config.num_channels, s["frames"], s["size"], s["size"])
    flops_per_sample = step_flops(model, torch.randn(2, *shape, device=args.device), args.device) / 2
    params = sum(p.numel() for p in model.parameters())
    emit(dict(part="pretrain", what="model", params_m=params / 1e6, gflop_per_sample=flops_per_sample / 1e9,
              optimizer=kind))

    def run(batch, label, attention="sdpa", checkpointing="none", warmup=None, repeats=None):
        from degas_hf.training.activation_checkpointing import enable_activation_checkpointing

        model.set_attn_implementation(attention)
        enable_activation_checkpointing(model, checkpointing)
        reset_peak(args.device)
        try:
            pixel_values = torch.randn(batch, *shape, device=args.device)
            seconds = timed(pretrain_step(model, optimizer, pixel_values, args.device), args.device,
                            warmup or s["warmup"], repeats or s["repeats"])
        except torch.OutOfMemoryError:
            emit(dict(part="pretrain", what=label, batch=batch, error="out of memory"))
            return False
        finally:
            enable_activation_checkpointing(model, "none")
            model.set_attn_implementation("sdpa")
            optimizer.zero_grad(set_to_none=True)
        emit(dict(part="pretrain", what=label, batch=batch, seconds=seconds, samples_per_s=batch / seconds,
                  tflops=flops_per_sample * batch / seconds / 1e12, peak_gib=peak_gib(args.device)))
        return True

    largest = None
    for batch in s["batches"]:
        if not run(batch, "step, SDPA"):
            break
        largest = batch
    if largest is not None and not args.small:
        cuda = args.device == "cuda"
        run(min(64, largest) if cuda else largest, "step, eager attention", attention="eager")
        # Larger batches than fit without checkpointing (degas-100m keeps ~530 MiB of activations per sample, ~345
        # with selective checkpointing, ~160 with full: see BENCHMARKS.md); fewer repeats, the steps are long.
        run(largest * 3 // 2 if cuda else largest, "step, SDPA, selective activation checkpointing",
            checkpointing="selective", warmup=2, repeats=4)
        run(largest * 3 if cuda else largest, "step, SDPA, full activation checkpointing", checkpointing="full",
            warmup=2, repeats=4)


def part_encoder(args, s):
    import torch

    from degas_hf import STSwinMAEModel

    torch.manual_seed(0)
    config = build_config(s["preset"], drop_path_rate=0.0)  # as the peer (stochastic_depth_prob=0.0)
    ours = STSwinMAEModel(config).to(args.device)
    peer = torchvision_encoder(config, args.torchvision_path)
    if peer is not None:
        peer = peer.to(args.device)
    batch = s["encoder_batch"]
    pixel_values = torch.randn(batch, config.num_channels, s["frames"], s["size"], s["size"], device=args.device)

    def ours_forward():
        return ours(pixel_values).last_hidden_state

    models = [("ours (SDPA)", ours, ours_forward, "sdpa"), ("ours (eager)", ours, ours_forward, "eager")]
    if peer is not None:
        models.append(("torchvision swin3d", peer, lambda: peer(pixel_values), None))
    emit(dict(part="encoder", what="params", ours_m=sum(p.numel() for p in ours.parameters()) / 1e6,
              peer_m=None if peer is None else sum(p.numel() for p in peer.parameters()) / 1e6))
    # Interleaved rounds, best round kept: on a shared machine the models see the same load. With one CPU thread
    # the clock is the process's CPU time, which other processes' load barely moves (with more threads, OpenMP
    # threads spinning while they wait for each other inflate it, so wall time is used).
    rounds = args.rounds or (1 if args.device == "cuda" else 2)
    clock = time.process_time if args.device == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    for precision in ("bf16", "fp32"):
        for mode in ("fwd", "fwd+bwd"):
            best = {}
            for _ in range(rounds):
                for label, module, forward, attention in models:
                    module.train(mode == "fwd+bwd")
                    if attention is not None:  # set outside the timed calls
                        ours.set_attn_implementation(attention)

                    def call(forward=forward, module=module):
                        if mode == "fwd":
                            with torch.no_grad(), autocast(args.device, precision == "bf16"):
                                forward()
                        else:
                            with autocast(args.device, precision == "bf16"):
                                output = forward()
                            output.float().square().mean().backward()
                            module.zero_grad(set_to_none=True)

                    reset_peak(args.device)
                    seconds = timed(call, args.device, s["warmup"], s["repeats"], clock)
                    best[label] = min(seconds, best.get(label, math.inf))
            for label in best:
                peer_seconds = best.get("torchvision swin3d")
                emit(dict(part="encoder", what=label, precision=precision, mode=mode, batch=batch, ms=best[label] * 1e3,
                          speed_vs_peer=None if peer_seconds is None else peer_seconds / best[label]))


def count_operators(step) -> tuple[int, int]:
    """(every aten operator dispatched, those that launch a kernel) during `step()`, backward included. On a GPU
    whose step is bound by host overhead, time grows with these counts (each costs Python, dispatch and a launch)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    metadata_only = {"detach", "lift_fresh", "alias", "_unsafe_view", "_reshape_alias"}

    class Counter(TorchDispatchMode):
        dispatched = kernels = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            self.dispatched += 1
            if not func.is_view and func.overloadpacket.__name__ not in metadata_only:
                self.kernels += 1
            return func(*args, **(kwargs or {}))

    with Counter() as counter:
        step()
    return counter.dispatched, counter.kernels


def part_overhead(args, s):
    """Host overhead of the encoder, ours vs torchvision swin3d: operators per fwd+bwd (bf16 autocast, the real
    shape), and the fwd+bwd time at a tiny width (embed 16, one head per stage, same depths, windows and input), where
    the kernels cost next to nothing and the time is the framework's per-operator cost."""
    import torch

    from degas_hf import STSwinMAEModel

    def encoder_step(module, forward):
        def step():
            with autocast(args.device, True):
                output = forward()
            output.float().square().mean().backward()
            module.zero_grad(set_to_none=True)
        return step

    def pair(config, batch):
        torch.manual_seed(0)
        ours = STSwinMAEModel(config).to(args.device).train()
        peer = torchvision_encoder(config, args.torchvision_path)
        pixel_values = torch.randn(batch, config.num_channels, s["frames"], s["size"], s["size"], device=args.device)
        steps = {"ours": encoder_step(ours, lambda: ours(pixel_values).last_hidden_state)}
        if peer is not None:
            peer = peer.to(args.device).train()
            steps["torchvision swin3d"] = encoder_step(peer, lambda: peer(pixel_values))
        return steps

    for label, step in pair(build_config(s["preset"], drop_path_rate=0.0), 1).items():
        step()
        dispatched, kernels = count_operators(step)
        emit(dict(part="overhead", what=label, measure="operators per fwd+bwd (batch 1, bf16)", dispatched=dispatched,
                  kernels=kernels))
    stages = len(build_config(s["preset"]).depths)
    tiny = build_config(s["preset"], drop_path_rate=0.0, embed_dim=16, num_heads=[1] * stages)
    steps = pair(tiny, s["encoder_batch"])
    clock = time.process_time if args.device == "cpu" and torch.get_num_threads() == 1 else time.perf_counter
    best = {}
    for _ in range(3):  # interleaved rounds, best kept
        for label, step in steps.items():
            best[label] = min(best.get(label, math.inf), timed(step, args.device, s["warmup"], s["repeats"], clock))
    for label, seconds in best.items():
        peer_seconds = best.get("torchvision swin3d")
        emit(dict(part="overhead", what=label, measure=f"fwd+bwd ms at tiny width (batch {s['encoder_batch']}, bf16)",
                  ms=seconds * 1e3, speed_vs_peer=None if peer_seconds is None else peer_seconds / seconds))


def part_attention(args, s):
    import torch
    import torch.nn.functional as F

    from degas_hf import STSwinMAEForPreTraining

    torch.manual_seed(0)
    config = build_config(s["preset"])
    model = STSwinMAEForPreTraining(config).to(args.device).train()
    batch = s["encoder_batch"]
    pixel_values = torch.randn(batch, config.num_channels, s["frames"], s["size"], s["size"], device=args.device)
    backend_names = {int(value): name for name, value in torch.nn.attention.SDPBackend.__members__.items()}
    calls = {}
    original = F.scaled_dot_product_attention

    def recording(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **kwargs):
        mask = attn_mask
        signature = (tuple(query.shape), tuple(query.stride()), str(query.dtype),
                     None if mask is None else (tuple(mask.shape), tuple(mask.stride()), str(mask.dtype), mask.requires_grad))
        if signature not in calls:
            choice = torch._fused_sdp_choice(query, key, value, attn_mask, dropout_p, is_causal, scale=scale)
            calls[signature] = dict(count=0, backend=backend_names.get(int(choice), str(choice)),
                                    tensors=(query.detach(), key.detach(), value.detach(),
                                             None if mask is None else mask.detach().requires_grad_(mask.requires_grad)))
        calls[signature]["count"] += 1
        return original(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **kwargs)

    F.scaled_dot_product_attention = recording
    # On CPU a training forward runs eager attention (SDPA has no fused CPU kernel for a mask that needs a
    # gradient), so the SDPA calls are recorded in a no-grad forward there.
    training = args.device != "cpu"
    try:
        with torch.set_grad_enabled(training), autocast(args.device, True):
            loss = model(pixel_values).loss
        if training:
            loss.backward()
    finally:
        F.scaled_dot_product_attention = original
    from torch.nn.attention import SDPBackend, sdpa_kernel

    forced = [SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH] if args.device == "cuda" else []
    for (q_shape, q_stride, dtype, mask_info), info in calls.items():
        row = dict(part="attention", calls=info["count"], q_shape=q_shape, q_stride=q_stride, dtype=dtype,
                   mask_shape=None if mask_info is None else mask_info[0],
                   mask_stride=None if mask_info is None else mask_info[1],
                   mask_requires_grad=None if mask_info is None else mask_info[3], chosen=info["backend"])
        query, key, value, mask = info["tensors"]
        for backend in forced:
            q, k, v = (t.clone().requires_grad_(True) for t in (query, key, value))
            try:
                with sdpa_kernel([backend]):
                    def call(q=q, k=k, v=v):
                        F.scaled_dot_product_attention(q, k, v, attn_mask=mask).float().sum().backward()
                    row[f"{backend.name} fwd+bwd ms"] = timed(call, args.device, 2, 5) * 1e3
            except RuntimeError:
                row[f"{backend.name} fwd+bwd ms"] = "not eligible"
        emit(row)


def part_profile(args, s):
    import torch
    from torch.profiler import ProfilerActivity, profile

    from degas_hf import STSwinMAEForPreTraining

    torch.manual_seed(0)
    config = build_config(s["preset"])
    model = STSwinMAEForPreTraining(config).to(args.device).train()
    optimizer, _ = make_optimizer(model, args.device)
    batch = s["batches"][0]
    pixel_values = torch.randn(batch, config.num_channels, s["frames"], s["size"], s["size"], device=args.device)
    step = pretrain_step(model, optimizer, pixel_values, args.device)
    for _ in range(2):
        step()
    sync(args.device)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device == "cuda" else [])
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        step()
        sync(args.device)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    device_attr = "self_device_time_total" if args.device == "cuda" else "self_cpu_time_total"
    kernels = [e for e in events if getattr(e, device_attr, 0) > 0
               and (args.device != "cuda" or str(getattr(e, "device_type", "")).endswith("CUDA"))]
    kernels.sort(key=lambda e: -getattr(e, device_attr))
    busy = sum(getattr(e, device_attr) for e in kernels) / 1e6
    emit(dict(part="profile", what="step", batch=batch, wall_ms=wall * 1e3, busy_ms=busy * 1e3,
              busy_percent=100 * busy / wall, launches=sum(e.count for e in kernels)))
    families = {"math-path softmax (fallback)": ("softmax_warp", "softmax_kernel", "cunn_SoftMax"),
                "mem-efficient (cutlass fmha)": ("fmha", "efficient_attention", "cutlassF", "cutlassB"),
                "cuDNN attention": ("cudnn", "sdpa_"), "flash": ("flash",)}
    for family, needles in families.items():
        matched = [e for e in kernels if any(n in e.key for n in needles)]
        emit(dict(part="profile", what=f"kernels: {family}", count=sum(e.count for e in matched),
                  ms=sum(getattr(e, device_attr) for e in matched) / 1e3))
    for e in kernels[:20]:
        emit(dict(part="profile", what=f"top: {e.key[:90]}", count=e.count, ms=getattr(e, device_attr) / 1e3))


def part_compile(args, s):
    import torch

    from degas_hf import STSwinMAEForPreTraining
    from degas_hf.training.compile import compile_model

    torch.manual_seed(0)
    config = build_config(s["preset"])
    model = STSwinMAEForPreTraining(config).to(args.device).train()
    optimizer, _ = make_optimizer(model, args.device)
    batch = 64 if args.device == "cuda" else s["batches"][0]
    pixel_values = torch.randn(batch, config.num_channels, s["frames"], s["size"], s["size"], device=args.device)
    step = pretrain_step(model, optimizer, pixel_values, args.device)
    seconds = timed(step, args.device, s["warmup"], s["repeats"])
    emit(dict(part="compile", what="eager", batch=batch, samples_per_s=batch / seconds, seconds=seconds))
    start = time.perf_counter()
    compile_model(model, mode=args.compile_mode, backend=args.compile_backend)
    step()
    sync(args.device)
    emit(dict(part="compile", what=f"first compiled step ({args.compile_backend}, mode={args.compile_mode})",
              batch=batch, seconds=time.perf_counter() - start))
    step()  # the backward graphs of a second grad mode / shape, if any, compile here
    seconds = timed(step, args.device, 1, s["repeats"])
    emit(dict(part="compile", what=f"compiled ({args.compile_backend}, mode={args.compile_mode})", batch=batch,
              samples_per_s=batch / seconds, seconds=seconds))


PART_FUNCTIONS = {"matmul": part_matmul, "overhead": part_overhead, "pretrain": part_pretrain, "encoder": part_encoder,
                  "attention": part_attention, "profile": part_profile, "compile": part_compile}


# ------------------------------------------------------------------------------------------------------------
# Parent: runs each part in a subprocess under a time limit, collects rows, writes the table
# ------------------------------------------------------------------------------------------------------------


def run_part(name: str, argv: list[str], limit: float) -> tuple[list[dict], str]:
    command = [sys.executable, str(Path(__file__).resolve()), "--run-part", name, *argv]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "src"), env.get("PYTHONPATH")]))
    start = time.perf_counter()
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=limit, env=env)
        output, status = completed.stdout + completed.stderr, f"exit {completed.returncode}"
    except subprocess.TimeoutExpired as expired:
        output = (expired.stdout or b"").decode() if isinstance(expired.stdout, bytes) else (expired.stdout or "")
        status = f"stopped at its {limit:.0f} s limit"
    rows = [json.loads(line[4:]) for line in output.splitlines() if line.startswith("ROW ")]
    status += f" after {time.perf_counter() - start:.0f} s"
    if "exit 0" not in status:
        tail = [line for line in output.splitlines() if not line.startswith("ROW ")][-8:]
        status += ("; last output: " + " | ".join(tail)) if tail else ""
    return rows, status


def run_in_process(name: str, args) -> list[dict]:
    rows = []
    global emit
    original = emit
    emit = rows.append
    try:
        PART_FUNCTIONS[name](args, sizes(args))
    finally:
        emit = original
    return rows


def fmt(value, digits=1):
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(rows: list[dict], statuses: dict, args, header: str) -> str:
    bf16_rate = next((r["tflops"] for r in rows if r.get("part") == "matmul" and r["what"].startswith("bf16")), None)
    unit = "TFLOP/s"
    out = [header, ""]
    out.append("| part | status |\n|---|---|")
    out += [f"| {name} | {status} |" for name, status in statuses.items()]
    by_part = {}
    for row in rows:
        by_part.setdefault(row["part"], []).append(row)
    if "matmul" in by_part:
        out += ["", "### Ceiling", "", "| what | rate |", "|---|---|"]
        for r in by_part["matmul"]:
            out.append(f"| {r['what']} | " + (f"{r['tflops']:.3g} {unit} |" if "tflops" in r else f"{r['gbps']:.3g} GB/s |"))
    if "overhead" in by_part:
        out += ["", "### Host overhead: operators per encoder fwd+bwd, and time at a tiny width", "",
                "| model | measure | dispatched | launch a kernel | ms | speed vs peer |", "|---|---|---|---|---|---|"]
        for r in by_part["overhead"]:
            out.append(f"| {r['what']} | {r['measure']} | {r.get('dispatched', '')} | {r.get('kernels', '')} | "
                       f"{fmt(r.get('ms'))} | " + (f"{fmt(r.get('speed_vs_peer'), 2)}x |" if 'ms' in r else " |"))
    if "pretrain" in by_part:
        out += ["", "### STSwinMAEForPreTraining step (bf16 autocast fwd, bwd, clip, AdamW)", ""]
        model_row = next((r for r in by_part["pretrain"] if r["what"] == "model"), None)
        if model_row:
            out.append(f"{model_row['params_m']:.1f}M parameters, {model_row['gflop_per_sample']:.1f} GFLOP per sample "
                       f"(fwd+bwd, torch.utils.flop_counter), AdamW {model_row['optimizer']}.")
            out.append("")
        out += ["| what | batch | s / step | samples / s | achieved TFLOP/s | % of bf16 matmul | peak GiB |",
                "|---|---|---|---|---|---|---|"]
        for r in by_part["pretrain"]:
            if r["what"] == "model":
                continue
            if "error" in r:
                out.append(f"| {r['what']} | {r['batch']} | {r['error']} | | | | |")
                continue
            share = f"{100 * r['tflops'] / bf16_rate:.1f}%" if bf16_rate else "-"
            out.append(f"| {r['what']} | {r['batch']} | {r['seconds']:.3f} | {r['samples_per_s']:.3g} | "
                       f"{r['tflops']:.3g} | {share} | {fmt(r['peak_gib'])} |")
    if "encoder" in by_part:
        out += ["", "### Encoder vs torchvision swin3d of the same shape", ""]
        params = next((r for r in by_part["encoder"] if r["what"] == "params"), None)
        if params:
            out.append(f"Parameters: ours {params['ours_m']:.1f}M, torchvision {fmt(params['peer_m'])}M. "
                       "`fwd` runs under no_grad; `speed vs peer` = peer time / our time (> 1: ours faster)."
                       + ("" if args.device == "cuda" else " CPU: interleaved rounds, best kept; "
                          + ("ms of process CPU time (1 thread)." if args.threads == 1 else "wall ms.")))
            out.append("")
        out += ["| model | precision | mode | batch | ms | speed vs peer |", "|---|---|---|---|---|---|"]
        for r in by_part["encoder"]:
            if r["what"] != "params":
                out.append(f"| {r['what']} | {r['precision']} | {r['mode']} | {r['batch']} | {r['ms']:.1f} | "
                           f"{fmt(r['speed_vs_peer'], 2)}x |")
    if "attention" in by_part:
        out += ["", "### Attention calls of one forward (+ backward on CUDA), bf16 autocast, and the SDPA backend chosen", ""]
        forced = sorted({k for r in by_part["attention"] for k in r if k.endswith("fwd+bwd ms")})
        out.append("| calls | q shape | q stride | dtype | mask shape | mask stride | mask grad | chosen | "
                   + " | ".join(forced) + (" |" if forced else ""))
        out.append("|" + "---|" * (8 + len(forced)))
        for r in by_part["attention"]:
            cells = [r["calls"], r["q_shape"], r["q_stride"], r["dtype"], r["mask_shape"], r["mask_stride"],
                     r["mask_requires_grad"], r["chosen"]] + [fmt(r.get(k), 2) for k in forced]
            out.append("| " + " | ".join(str(c) for c in cells) + " |")
    if "profile" in by_part:
        out += ["", "### Profile of one pretraining step", "", "| what | count | ms |", "|---|---|---|"]
        for r in by_part["profile"]:
            if r["what"] == "step":
                busy = (f"kernels busy {r['busy_ms']:.1f} ms ({r['busy_percent']:.0f}% of the wall time; well below "
                        "100%: the step is bound by launch/host overhead), " if args.device == "cuda" else "")
                out.insert(len(out) - 2, f"Batch {r['batch']}: step wall {r['wall_ms']:.1f} ms, {busy}{r['launches']} "
                           f"{'kernel launches' if args.device == 'cuda' else 'operator calls'}.\n")
            else:
                out.append(f"| {r['what'].replace('|', '/')} | {r['count']} | {r['ms']:.2f} |")
    if "compile" in by_part:
        out += ["", "### Eager vs regional torch.compile", "", "| what | batch | s | samples / s |", "|---|---|---|---|"]
        for r in by_part["compile"]:
            out.append(f"| {r['what']} | {r['batch']} | {r['seconds']:.2f} | {fmt(r.get('samples_per_s'))} |")
    return "\n".join(out) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default=None, help="cuda or cpu (default: cuda when available)")
    parser.add_argument("--small", action="store_true", help="degas-tiny at 64^2: seconds on a CPU (tests)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--batches", default=None, help="pretraining batch sizes, e.g. 32,64,128")
    parser.add_argument("--budget", type=float, default=355.0, help="seconds for all parts together")
    parser.add_argument("--part-limit", type=float, default=None, help="seconds per part (default: per-part table)")
    parser.add_argument("--torchvision-path", default=None, help="side folder holding torchvision (CPU machine)")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--compile-mode", default=None)
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds of the encoder comparison, best kept (default: 1 on CUDA, 2 on CPU)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads on CPU (1: time by process CPU time)")
    parser.add_argument("--out", default=None, help="folder for the table (default: $OUT, else benchmarks/results)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the parts in this process, without time limits (quick CPU checks, tests)")
    parser.add_argument("--run-part", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.batches = [int(b) for b in args.batches.split(",")] if isinstance(args.batches, str) else args.batches
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.run_part:
        PART_FUNCTIONS[args.run_part](args, sizes(args))
        return

    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; expected a subset of {list(PARTS)}")
    child_argv = ["--device", args.device, "--compile-backend", args.compile_backend]
    for flag, value in (("--batches", args.batches and ",".join(map(str, args.batches))),
                        ("--torchvision-path", args.torchvision_path), ("--compile-mode", args.compile_mode),
                        ("--threads", args.threads and str(args.threads)),
                        ("--rounds", args.rounds and str(args.rounds))):
        if value:
            child_argv += [flag, value]
    if args.small:
        child_argv.append("--small")
    deadline = time.perf_counter() + args.budget
    rows, statuses = [], {}
    for name in parts:
        left = deadline - time.perf_counter()
        limit = min(args.part_limit or PART_LIMITS[name], left)
        if limit < 5:
            statuses[name] = "skipped: the budget is spent"
            continue
        print(f"[bench_gpu] {name} (limit {limit:.0f} s)", flush=True)
        if args.in_process:
            part_rows, statuses[name] = run_in_process(name, args), "ran in process"
        else:
            part_rows, statuses[name] = run_part(name, child_argv, limit)
        for row in part_rows:
            print("   ", {k: v for k, v in row.items() if k != "part"}, flush=True)
        print(f"    {statuses[name]}", flush=True)
        rows += part_rows

    if args.device == "cuda":
        device = f"{torch.cuda.get_device_name()} (cuDNN {torch.backends.cudnn.version()})"
    else:
        device = f"CPU ({platform.machine()}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"
    s = sizes(args)
    header = (f"# bench_gpu: {s['preset']}, {s['frames']} dates x {s['size']}^2 x 6 bands\n\n"
              f"Device: {device}; torch {torch.__version__}; Python {platform.python_version()}; "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. Command: "
              f"`python benchmarks/bench_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`")
    table = markdown(rows, statuses, args, header)
    out_dir = Path(args.out or os.environ.get("OUT") or ROOT / "benchmarks" / "results")
    out_dir.mkdir(parents=True, exist_ok=True)
    name = "gpu" if args.device == "cuda" else ("gpu_bench_cpu_small" if args.small else "gpu_bench_cpu")
    (out_dir / f"{name}.md").write_text(table)
    (out_dir / f"{name}.json").write_text(json.dumps(dict(statuses=statuses, rows=rows), indent=1))
    print(table)
    print(f"[bench_gpu] wrote {out_dir / (name + '.md')}")


if __name__ == "__main__":
    main()
