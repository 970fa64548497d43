"""The ``alexnet`` command: each subcommand parses its flags and calls one library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from typing import Sequence

from .errors import AlexNetError


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config field, generated from the dataclasses (see config.py).

    Defaults are suppressed, so the parsed namespace holds only what the user
    typed: those values override the defaults, or a resumed run's stored config.
    """
    from .config import flat_fields

    groups = {}
    for section, f in flat_fields():
        title = section or "run"
        if title not in groups:
            groups[title] = parser.add_argument_group(f"{title} options")
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kw = dict(dest=f.name, default=argparse.SUPPRESS, help=f"{f.metadata.get('help', '')} (default: {default})")
        if isinstance(default, bool):
            groups[title].add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            groups[title].add_argument(flag, type=type(default), choices=f.metadata.get("choices"),
                                       metavar=None if f.metadata.get("choices") else f.name.upper(), **kw)


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import create_model, variant_info
    from .summary import format_table, summarize

    info = variant_info(args.variant)
    size = args.input_size or info.input_size
    if size < info.min_input_size:
        raise AlexNetError(f"--input-size {size} is too small for {args.variant} (at least {info.min_input_size})")
    model = create_model(args.variant, num_classes=args.num_classes)
    rows = summarize(model, size)
    if args.json:
        print(json.dumps({"variant": args.variant, "input_size": size, "layers": [dataclasses.asdict(r) for r in rows],
                          "params": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}, indent=2))
    else:
        print(format_table(rows, f"{args.variant}: {info.description}; input 3x{size}x{size}, "
                                 f"{args.num_classes} classes"))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from .config import TrainConfig, apply_overrides
    from .train import fit

    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "command")}
    if args.resume:
        if "out" in overrides and overrides["out"] != args.resume:
            raise AlexNetError("--resume names the run directory; do not also pass --out")
        overrides.pop("out", None)
        fit(TrainConfig(out=args.resume), resume=True, overrides=overrides)
    else:
        fit(apply_overrides(TrainConfig(), overrides))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .infer import evaluate_weights

    result = evaluate_weights(args.weights, data=args.data, ten_crop=args.ten_crop, split=args.split,
                              batch_size=args.batch_size, device=args.device, workers=args.workers,
                              limit=args.limit, fashion_mnist_dir=args.fashion_mnist_dir, progress=not args.json)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(result.summary())
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="alexnet", description="AlexNet (Krizhevsky et al. 2012): "
                                     "train, evaluate and inspect the paper's network and torchvision's.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("summary", help="per-layer table: output shape, parameters, MACs")
    p.add_argument("--variant", default="paper", help="paper or torchvision (default: paper)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--input-size", type=int, default=0, help="input side in pixels (default: the variant's native)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("train", help="train with the paper's recipe (every value a flag)",
                       description="Train AlexNet. Defaults are the paper's recipe; every value is a flag.")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last checkpoint; "
                   "other flags given override its stored config (e.g. --epochs)")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="top-1/top-5 accuracy of a trained network")
    p.add_argument("weights", help="run directory, model.safetensors or checkpoint.pt")
    p.add_argument("--data", help="dataset (default: the one the network was trained on)")
    p.add_argument("--ten-crop", action="store_true", help="the paper's 10-crop protocol (default: center crop)")
    p.add_argument("--split", default="val", help="val (for fashion-mnist: its test set) or train")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=-1)
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N images")
    p.add_argument("--fashion-mnist-dir", default=None)
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_evaluate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AlexNetError as e:
        print(f"alexnet: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
