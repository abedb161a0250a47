"""torch.compile vs eager for the project's rotation step (`TrainStep`) on CPU: interleaved rounds, medians."""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, no install
from ssl_core.models import build_model  # noqa: E402
from ssl_core.train import TrainConfig, TrainStep  # noqa: E402

N = 5000
images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)


def make(compiled: bool):
    cfg = TrainConfig(task="rotation", dataset="cifar10")
    torch.manual_seed(0)
    model = build_model("rotation", arch=cfg.arch).to(memory_format=torch.channels_last)
    step = TrainStep(cfg, torch.compile(model) if compiled else model, images, None, total_steps=10**9)
    gen = torch.Generator().manual_seed(0)

    def one() -> int:
        step(torch.randint(0, N, (cfg.batch_size,), generator=gen))
        return 4 * cfg.batch_size
    return one


fns = {"eager": make(False), "compiled": make(True)}
t = time.perf_counter()
for _ in range(3):
    fns["compiled"]()
print("compile warm-up", round(time.perf_counter() - t, 1), "s", flush=True)
for _ in range(3):
    fns["eager"]()
rates = {k: [] for k in fns}
for _ in range(7):
    for k, f in fns.items():
        t = time.perf_counter()
        u = sum(f() for _ in range(10))
        rates[k].append(u / (time.perf_counter() - t))
for k, v in rates.items():
    print(k, round(statistics.median(v)), [round(x) for x in v])
print("ratio compiled/eager", round(statistics.median(rates["compiled"]) / statistics.median(rates["eager"]), 2))
