"""``python -m alexnet`` (and so ``torchrun -m alexnet``)."""

from .cli import main

raise SystemExit(main())
