#!/usr/bin/env bash
# Every GPU figure the open speed targets need, in ONE device call of under 10 minutes (a session is lent 15 minutes
# of device time in all, start-up included; see ../shared/device/README.md).
#
#   here, once:   . .venv/bin/activate && bash ../shared/device/prep-wheels.sh      # wheels the GPU machine lacks
#   device call:  carry [".whl"], timeout_s 600, command: bash benchmarks/gpu_session.sh
#
# Writes under $OUT: gpu.md / gpu.json (bench_gpu.py: pretraining step up to batch 256, compile, operator counts,
# encoder vs torchvision swin3d, attention kernels, profile) and predict_gpu.md (bench_predict.py --gpu: the whole
# prediction vs the bare bf16 forward, and the CLI on a 10980^2 tile), each with its log. Each part has its own
# time limit, so a slow first torch.compile cannot take the prediction figures with it.
set -u
: "${OUT:?set OUT to the folder for the results}"
python3 -m pip install -q --no-index --no-deps --target .site .whl/*.whl || echo "gpu_session: wheel install failed" >&2
export PYTHONPATH="$PWD/.site:$PWD/src" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu_machine.txt" 2>&1
timeout 330 python3 benchmarks/bench_gpu.py --budget 320 --out "$OUT" > "$OUT/bench_gpu.log" 2>&1
echo "bench_gpu exit $?" >> "$OUT/status.txt"
timeout 235 python3 benchmarks/bench_predict.py --gpu --repeats 1 --output "$OUT/predict_gpu.md" > "$OUT/bench_predict.log" 2>&1
echo "bench_predict exit $?" >> "$OUT/status.txt"
tail -n 5 "$OUT"/*.log
