"""torch.compile vs eager for the project's rotation step on CPU: interleaved rounds, medians."""
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from anywhere, no install
from ssl_core.train import TrainConfig, _Step, autocast_dtype
from ssl_core.models import build_model
torch.manual_seed(0)
N = 5000
images = torch.randint(0, 256, (N, 3, 32, 32), dtype=torch.uint8)
labels = torch.randint(0, 10, (N,))
def make(compiled):
    cfg = TrainConfig(task='rotation')
    model = build_model('rotation').to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    step = _Step(cfg, torch.compile(model) if compiled else model, images, labels, gen)
    amp = autocast_dtype(cfg, torch.device('cpu'))
    def one():
        idx = torch.randint(0, N, (cfg.batch_size,), generator=gen)
        with torch.autocast('cpu', dtype=amp, enabled=amp is not None):
            loss = step(idx)
        opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        return 4 * cfg.batch_size
    return one
fns = {'eager': make(False), 'compiled': make(True)}
t = time.perf_counter()
for _ in range(3): fns['compiled']()
print('compile warm-up', round(time.perf_counter() - t, 1), 's', flush=True)
for _ in range(3): fns['eager']()
rates = {k: [] for k in fns}
for r in range(7):
    for k, f in fns.items():
        t = time.perf_counter(); u = sum(f() for _ in range(20)); rates[k].append(u / (time.perf_counter() - t))
for k, v in rates.items(): print(k, round(statistics.median(v)), [round(x) for x in v])
print('ratio compiled/eager', round(statistics.median(rates['compiled']) / statistics.median(rates['eager']), 2))
