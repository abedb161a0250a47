"""Model step only (SimpleCNN rotation head, batch 128 images): fp32 NCHW vs channels_last vs channels_last+bf16, interleaved."""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, no install
import torch.nn.functional as F
from ssl_core.models import build_model
torch.manual_seed(0)
x = torch.randn(128, 3, 32, 32); y = torch.randint(0, 4, (128,))
def make(cl, bf16):
    m = build_model('rotation'); xi = x
    if cl: m = m.to(memory_format=torch.channels_last); xi = x.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    def one():
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(m(xi), y)
        opt.zero_grad(); loss.backward(); opt.step()
    return one
fns = {'fp32 NCHW': make(False, False), 'fp32 channels_last': make(True, False), 'bf16 channels_last': make(True, True)}
for f in fns.values():
    for _ in range(3): f()
rates = {k: [] for k in fns}
for r in range(7):
    for k, f in fns.items():
        t = time.perf_counter()
        for _ in range(10): f()
        rates[k].append(1280 / (time.perf_counter() - t))
base = statistics.median(rates['fp32 NCHW'])
for k, v in rates.items(): print(f"{k}: {statistics.median(v):.0f} img/s ({statistics.median(v)/base:.2f}x)")
