"""What the CPU can do fast, and keeping the training step's memory out of the kernel.

Separate from the engine because the benchmarks and the quality checks ask the same questions.
"""

from __future__ import annotations

import torch


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 in hardware: AMX tiles (Intel Sapphire Rapids and later) or
    AVX512-BF16 (AMD Zen 4, Intel Cooper Lake). Without them oneDNN emulates bf16, several times
    slower than fp32."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in checks)


def machine(device: torch.device, precision: str) -> dict:
    """What a run ran on, for its card: a time or a speed means little without the hardware."""
    out = {"device": device.type, "precision": precision, "threads": torch.get_num_threads(), "cpu": cpu_model()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def cpu_model() -> str:
    """The CPU's model name as lscpu shows it ("Intel(R) Xeon(R) Processor", "AMD EPYC 9B14"), or ''."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor()


_ALLOCATOR_TUNED = False
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters
KEEP_FREED_BYTES = 512 << 20  # freed heap kept for reuse by the next step, at most


def reuse_freed_memory() -> bool:
    """Let glibc serve the training step's large CPU tensors from the heap and keep them after free.

    By default glibc maps every allocation over 32 MB freshly from the kernel and unmaps it on
    free, so each step faults in its activations page by page again: tens of thousands of page
    faults per step, a sixth of the CPU time of a CIFAR-10 run spent in the kernel. Process-wide
    and idempotent; a no-op (False) off glibc.
    """
    global _ALLOCATOR_TUNED
    if _ALLOCATOR_TUNED:
        return True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        _ALLOCATOR_TUNED = bool(libc.mallopt(M_MMAP_THRESHOLD, 1 << 30) and libc.mallopt(M_TRIM_THRESHOLD, KEEP_FREED_BYTES))
    except (OSError, AttributeError):
        return False
    return _ALLOCATOR_TUNED
