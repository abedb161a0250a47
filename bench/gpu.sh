#!/usr/bin/env bash
# Every GPU measurement for docs/benchmarks.md, in one call, on a machine with one CUDA GPU (an H200).
#
#   bash bench/gpu.sh                 # outputs to $OUT if set, else bench/out/
#   DEVICE=cpu SMALL=1 bash bench/gpu.sh   # smoke test of this script without a GPU (tiny sizes)
#
# 1. seed vs project on CUDA, both tasks (python -m ssl_core bench --device cuda)
# 2. one full CIFAR-10-sized rotation epoch: 50,000 synthetic images x 4 rotations, uint8 data
#    resident on the GPU, bf16 autocast, big batches; seconds per epoch (target <= 1.0 s)
# 3. digits training of all three tasks with bf16 mixed precision on CUDA, checking the quality floors
# 4. one CIFAR-10 SimCLR epoch of ResNet-18 (--arch resnet18) on the shared JPEG copy: copy
#    ../shared/data/cifar10-jpeg.tar.gz to data/ (git-ignored) and carry it to the GPU machine
# 5. the same through torchrun and DDP (NCCL), one process per GPU present
# 6. time to accuracy on CIFAR-10 with the current recipes (rotation: SGD + label smoothing; Siamese:
#    SupCon + MLP projector; SimCLR: temperature 0.1 + MLP projector) beside the seed's, 2-minute budgets
# Each step's output goes to its own file under $OUT; a failing step does not stop the others,
# and the script exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-bench/out}"
DEVICE="${DEVICE:-cuda}"
mkdir -p "$OUT"
if [[ -n "${SMALL:-}" ]]; then
  BENCH_ARGS=(--steps 2 --repeats 1 --images 200)
  EPOCH_IMAGES=256; EPOCH_BATCHES=(64)
  QUALITY_ARGS=(--epochs 1 --no-gate)
  R18_ARGS=(--batch-size 256)
else
  BENCH_ARGS=(--steps 30 --repeats 7 --images 10000)
  EPOCH_IMAGES=50000; EPOCH_BATCHES=(1024 4096)
  QUALITY_ARGS=()
  R18_ARGS=(--batch-size 512)
fi

failed=0
step() {  # step NAME COMMAND...: run, tee to $OUT/NAME.txt, remember a failure
  local name=$1; shift
  echo "== $name: $*" | tee "$OUT/$name.txt"
  local start=$SECONDS
  "$@" 2>&1 | tee -a "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/$name.txt"
  [[ $rc -eq 0 ]] || failed=1
}

{
  date -u +%Y-%m-%dT%H:%M:%SZ
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "nvidia-smi: not available"
  lscpu | grep -E "Model name|^CPU\(s\)" || true
  python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'available', torch.cuda.is_available())"
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

step bench python -m ssl_core bench --device "$DEVICE" "${BENCH_ARGS[@]}"
for b in "${EPOCH_BATCHES[@]}"; do
  step "epoch-batch$b" python -m ssl_core bench --epoch --device "$DEVICE" --epoch-images "$EPOCH_IMAGES" --batch-size "$b"
done
step quality python bench/check_quality.py --device "$DEVICE" --out "$OUT/checkpoints" "${QUALITY_ARGS[@]}"

# The ResNet-18 epoch runs on the real CIFAR-10 JPEG copy, carried into the tree (git-ignored);
# the smoke test uses the bundled digits instead.
DATA=$(mktemp -d)
export SSL_DATA_DIR="$DATA/cache"
if [[ -n "${SMALL:-}" ]]; then
  R18=(-m ssl_core train --task simclr --dataset digits --arch resnet18 --epochs 1 --device "$DEVICE" "${R18_ARGS[@]}")
elif [[ -f data/cifar10-jpeg.tar.gz ]]; then
  tar -xzf data/cifar10-jpeg.tar.gz -C "$DATA"
  R18=(-m ssl_core train --task simclr --dataset cifar10 --data-dir "$DATA/cifar10-jpeg" --arch resnet18 --epochs 1
       --device "$DEVICE" "${R18_ARGS[@]}")
else
  echo "data/cifar10-jpeg.tar.gz is not in the tree: copy ../shared/data/cifar10-jpeg.tar.gz there and carry it" >&2
  R18=(-c "raise SystemExit('no CIFAR-10 copy carried')")
fi
step resnet18-simclr-epoch python "${R18[@]}" --out "$OUT/checkpoints/resnet18-simclr"
NGPU=$(nvidia-smi -L 2>/dev/null | grep -c "^GPU" || true)
(( NGPU >= 1 )) || NGPU=1
step resnet18-simclr-ddp python -m torch.distributed.run --standalone --nproc_per_node="$NGPU" \
  "${R18[@]}" --out "$OUT/checkpoints/resnet18-simclr-ddp"
if [[ -z "${SMALL:-}" && -d "$DATA/cifar10-jpeg" ]]; then
  step to-accuracy python -m ssl_core bench --to-accuracy --data-dir "$DATA/cifar10-jpeg" --minutes 2
fi
rm -rf "$DATA"
rm -f "$OUT"/checkpoints/*/model.safetensors  # the cards keep the metrics; the weights are not needed

echo "== summary"
grep -hE "^(rotation|siamese) (cpu|cuda):|^rotation epoch|PASS|FAIL|^simclr on .*-> |^(rotation|siamese|simclr) (project|seed): " "$OUT"/*.txt | tee "$OUT/summary.txt"
exit $failed
