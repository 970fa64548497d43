"""The paper's claims, run and judged: the ImageNet/Fashion-MNIST study (``study``), the paper's
own CIFAR-10 experiments (``cifar``, ``cifar_overfit``), their statistics and figures."""
