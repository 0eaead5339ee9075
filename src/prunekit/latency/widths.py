"""Channel widths the hardware likes: the multiple a pruned layer's width should round to.

Odd widths miss the fast kernels — oneDNN on x86 CPUs blocks channels by the vector width
(8 fp32 lanes with AVX2, 16 with AVX-512: the ``nChw8c``/``nChw16c`` layouts), and NVIDIA
tensor cores take fp16/bf16 GEMMs in tiles of 8. A width that is not a multiple pays for the
padding anyway and often takes a slower reference path: measured here, mobilenet_v2 pruned at
ratio 0.3 ran at batch 16 in onnxruntime in 54.6 ms with exact widths and 35.7 ms rounded to 8
(dense 55.9 ms; issue 14). Layers narrower than a few vectors are launch- and memory-bound, so
rounding them would only give back channels for nothing.
"""

from __future__ import annotations

import torch

#: groups narrower than this many multiples keep exact counts
NARROW = 4


def hardware_multiple(device: torch.device | str | None = None) -> int:
    """The channel multiple that keeps ``device``'s fast kernels: 8 on CUDA (tensor-core tiles),
    16 on AVX-512 CPUs, 8 on other x86 CPUs (fp32 lanes per vector), 1 elsewhere.

    Example:
        >>> hardware_multiple("cpu") in (1, 8, 16)
        True
    """
    dev = torch.device(device if device is not None else "cpu")
    if dev.type == "cuda":
        return 8
    if dev.type != "cpu":
        return 1
    capability = str(torch.backends.cpu.get_cpu_capability())
    if "AVX512" in capability:
        return 16
    return 8 if "AVX2" in capability else 1
