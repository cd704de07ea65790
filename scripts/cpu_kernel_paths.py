"""Print the ATen CPU kernel paths (values of ATEN_CPU_CAPABILITY) this CPU offers, best last.

``--others`` leaves out the one torch picks by itself (the best), which the plain test run already covers.
"""

import platform
import sys

import torch

ORDER = {"x86_64": ["default", "avx2", "avx512"], "AMD64": ["default", "avx2", "avx512"]}


def kernel_paths() -> list[str]:
    best = torch.backends.cpu.get_cpu_capability().lower()
    order = ORDER.get(platform.machine(), ["default", best])
    return order[: order.index(best) + 1] if best in order else ["default", best]


if __name__ == "__main__":
    paths = kernel_paths()
    print(" ".join(paths[:-1] if "--others" in sys.argv else paths))
