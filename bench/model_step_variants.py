"""The project's training step (`TrainStep`, rotation, CIFAR-10 recipe) in fp32 and bf16 autocast,
for each encoder, in interleaved rounds: medians in rotated images per second. This is the
measurement behind `precision="auto"` (bf16 only where the CPU has bf16 units)."""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, no install
from ssl_core.models import build_model  # noqa: E402
from ssl_core.speed import cpu_has_bf16  # noqa: E402
from ssl_core.train import TrainConfig, TrainStep  # noqa: E402

N, ROUNDS, STEPS = 2048, 5, 5
images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)


def make(arch: str, precision: str):
    cfg = TrainConfig(task="rotation", dataset="cifar10", arch=arch, precision=precision)
    torch.manual_seed(0)
    model = build_model("rotation", arch=arch).to(memory_format=torch.channels_last)
    step = TrainStep(cfg, model, images, None, total_steps=10**9)
    gen = torch.Generator().manual_seed(0)

    def one() -> int:
        step(torch.randint(0, N, (cfg.batch_size,), generator=gen))
        return 4 * cfg.batch_size
    return one


fns = {f"{arch} {p}": make(arch, p) for arch in ("simple", "convnet") for p in ("fp32", "bf16")}
for f in fns.values():
    f()
rates = {k: [] for k in fns}
for _ in range(ROUNDS):
    for k, f in fns.items():
        t = time.perf_counter()
        units = sum(f() for _ in range(STEPS))
        rates[k].append(units / (time.perf_counter() - t))
print(f"CPU bf16 units (AMX or AVX512-BF16): {cpu_has_bf16()}; torch {torch.__version__}, "
      f"{torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}")
for k, v in rates.items():
    arch = k.split()[0]
    base = statistics.median(rates[f"{arch} fp32"])
    print(f"{k}: {statistics.median(v):.0f} img/s ({statistics.median(v) / base:.2f}x fp32)")
