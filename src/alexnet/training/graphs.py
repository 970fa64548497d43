"""The training step as a CUDA graph (``--cuda-graphs``): captured once, then replayed, so that
a step's some 200 kernel launches cost one.

A graph replays fixed work on fixed memory, so: the batch is copied into static buffers; the
learning rate lives in the optimizer as device tensors that ``set_lr`` fills in place (the
fused SGD kernel reads them there: the foreach one would read them back to the host); the
first ``WARMUP`` steps run eagerly (cuDNN's algorithm search, lazy initialisation, the
momentum buffers), the next is captured and replayed, and a batch of another shape (none in
training, which drops the last short batch) runs eagerly. Dropout draws from the graph-safe
CUDA generator. One process, bf16 or fp32 (fp16's loss scaler checks the gradients on the
host), no ``--skip-nonfinite`` (also a host check); ``config.validate`` says so.

``--cuda-graphs``'s default, auto, replays the step where that was measured faster
(``MEASURED_FASTER``, ``wanted``); on (``--cuda-graphs``) wherever a step can be captured.
"""

from __future__ import annotations

import torch

from ..errors import AlexNetError

WARMUP = 3

# The networks whose step --cuda-graphs's auto replays on one CUDA device, eagerly (not compiled),
# as measured on an H200 (docs/benchmarks.md, fifth and sixth sessions), batch 256: the paper
# network's graphed step 8.1 ms against 9.7-10.5 eager and 8.0-9.8 compiled, and its main job
# trained in 72 s graphed against 154 compiled (92.50% against 92.56% test top-1, one seed
# each); torchvision's step 4.7 ms against 6.1-7.3 eager and 5.3-6.4 compiled (its whole run
# not measured). Other networks: not measured, so eager.
MEASURED_FASTER = ("paper", "torchvision")


def capturable(cfg) -> bool:
    """Whether the step can be one graph: nothing in it checks on the host (fp16's loss scaler,
    --skip-nonfinite, the loop of the unfused SGD reading the rate) or splits it across devices."""
    o = cfg.optim
    return cfg.precision != "fp16" and o.fused and not o.skip_nonfinite and not cfg.model_parallel


def wanted(cfg, device: torch.device, world: int) -> bool:
    """Whether the run replays its step from a CUDA graph: ``--cuda-graphs`` (on), or ``auto``
    (the default) where measured faster (``MEASURED_FASTER``: one CUDA process, no --compile, a
    step that can be captured); an error where on cannot be honoured (``config.validate`` has
    refused the rest)."""
    if cfg.cuda_graphs == "on":
        if device.type != "cuda" or world > 1:
            raise AlexNetError("--cuda-graphs needs a CUDA device and one process")
        return True
    return (cfg.cuda_graphs == "auto" and device.type == "cuda" and world == 1 and not cfg.compile
            and cfg.model.variant in MEASURED_FASTER and capturable(cfg))


class GraphedStep:
    """``train.train_step``'s signature and effect, replayed from a CUDA graph after warm-up."""

    def __init__(self, step) -> None:
        self.step = step  # the eager step: train.train_step
        self.eager_steps, self.graph, self.failed = 0, None, False
        self.x = self.labels = self.loss = self.logits = None

    def __call__(self, model, optimizer, scaler, rt, x: torch.Tensor, labels: torch.Tensor):
        if self.failed or (self.graph is None and self.eager_steps < WARMUP):
            self.eager_steps += 1
            return self.step(model, optimizer, scaler, rt, x, labels)
        if self.graph is None:
            try:
                self._capture(model, optimizer, scaler, rt, x, labels)
            except RuntimeError as e:  # a step that cannot be captured trains eagerly, said once
                self.failed = True
                print(f"alexnet: warning: --cuda-graphs could not capture the step ({str(e)[:200]}); "
                      "training continues without graphs", flush=True)
                optimizer.zero_grad(set_to_none=True)
                return self.step(model, optimizer, scaler, rt, x, labels)
        elif x.shape != self.x.shape or labels.shape != self.labels.shape:
            return self.step(model, optimizer, scaler, rt, x, labels)
        else:
            self.x.copy_(x)
            self.labels.copy_(labels)
        self.graph.replay()
        return self.loss.clone(), self.logits.clone()  # the next replay overwrites the static outputs

    def _capture(self, model, optimizer, scaler, rt, x, labels) -> None:
        tensor_lr(optimizer)
        self.x, self.labels = x.clone(), labels.clone()
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        # thread_local: the loader's pinning thread may call CUDA while this thread captures
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            self.loss, self.logits = self.step(model, optimizer, scaler, rt, self.x, self.labels)
        self.graph = graph  # capturing ran nothing: the caller's replay takes this batch's step


def tensor_lr(optimizer: torch.optim.Optimizer) -> None:
    """Each group's rate as a tensor on its parameters' device (``set_lr`` then fills it in
    place); a float, or a tensor elsewhere (a checkpoint's, loaded to the CPU: the fused kernel
    would read it once, at capture), becomes one."""
    for group in optimizer.param_groups:
        device = group["params"][0].device
        if not isinstance(group["lr"], torch.Tensor) or group["lr"].device != device:
            group["lr"] = torch.tensor(float(group["lr"]), device=device)
