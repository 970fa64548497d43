"""Dropout (paper, section 4.2) whose mask is cheap to draw on a CPU.

``nn.Dropout`` in training fills a tensor of the input's shape with ``bernoulli_``, which ATen's
CPU generator draws one element at a time. Here the CPU path draws uniform floats (a vectorised
kernel) and keeps an element where its draw is at least ``p``, which made the main job's
training step 1.03-1.04 times faster on the 2-core development CPU (``python
benchmarks/main_job_speed.py``, its "ATen dropout" form): the same distribution, each unit
kept with probability 1 - p and scaled by 1 / (1 - p) so that the expected output is the input,
as ``nn.Dropout``'s. Elsewhere (CUDA's fused kernel, which a CUDA graph also captures) and in
evaluation, it is ``nn.Dropout`` itself; the module's name, state and repr are ``nn.Dropout``'s,
so weights and imports do not see the difference. (In training the device test is Python
control flow on the input: ``torch.fx`` traces the module in evaluation mode only.)
"""

from __future__ import annotations

import torch
from torch import nn


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or x.device.type != "cpu" or self.p in (0.0, 1.0) or self.inplace:
            return super().forward(x)
        keep = torch.rand(x.shape, device=x.device) >= self.p  # each unit kept with probability 1 - p
        return x * (keep.to(x.dtype) * (1.0 / (1.0 - self.p)))  # one multiply: the backward reuses the scaled mask
