"""The ``alexnet`` command: each subcommand parses its flags and calls one library function."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Sequence

from .errors import AlexNetError, one_line
from .files import output_file

# -------------------------------------------------------------------------------------
# Shared by the commands' parsers.

def _add_config_flags(parser: argparse.ArgumentParser, shown: dict | None = None) -> None:
    """One flag per config field, generated from the dataclasses (see training/config.py);
    ``shown``: defaults of this command's own that --help gives instead (finetune's).

    Defaults are suppressed, so the parsed namespace holds only what the user
    typed: those values override the defaults, or a resumed run's stored config.
    """
    from .training.config import flat_fields

    groups = {}
    for section, f in flat_fields():
        title = section or "run"
        if title not in groups:
            groups[title] = parser.add_argument_group(f"{title} options")
        default = f.default if f.default is not dataclasses.MISSING else None
        default = (shown or {}).get(f.name, default)
        help_line = f"{f.metadata.get('help', '')} (default: {default})".replace("%", "%%")  # argparse formats with %
        _flag(groups[title], f, dest=f.name, default=argparse.SUPPRESS, help=help_line)


class _Switch(argparse.Action):
    """An auto/on/off setting as a boolean flag: --X is on, --no-X off, neither leaves auto (or
    a resumed run's choice). Neither takes a value, so a positional argument may follow."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, "off" if option_string.startswith("--no-") else "on")


def _flag(parser, f: dataclasses.Field, **kw) -> None:
    """One flag for a dataclass field: its help text, choices and default come from the field."""
    flag = "--" + f.name.replace("_", "-")
    default = f.default if f.default is not dataclasses.MISSING else None
    choices = f.metadata.get("choices")
    if isinstance(default, bool):
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
    elif f.metadata.get("switch"):
        parser.add_argument(flag, "--no-" + flag[2:], action=_Switch, **kw)
    else:
        kind = type(default) if default is not None else str
        parser.add_argument(flag, type=kind, choices=choices, metavar=None if choices else f.name.upper(), **kw)


def _add_dataclass_flags(parser: argparse.ArgumentParser, cls, skip: tuple[str, ...] = (),
                         only: tuple[str, ...] | None = None) -> None:
    """A flag per field of a settings dataclass (``options``, ``training.config``), its default
    the field's; ``only``: just these fields."""
    for f in dataclasses.fields(cls):
        if f.name not in skip and (only is None or f.name in only):
            _flag(parser, f, dest=f.name, default=f.default, help=f.metadata.get("help", "").replace("%", "%%"))


def _fields_of(args: argparse.Namespace, cls) -> dict:
    return {k: v for k, v in vars(args).items() if k in {f.name for f in dataclasses.fields(cls)}}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Shows '(default: X)' after every flag's help (not for flags whose default is None or off);
    for a flag whose default is the library function's own, that default, read when asked."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if getattr(action, "library", None):
            return f"{action.help} (default: {_library_default(action)})".replace("%", "%%")
        hidden = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if hidden or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if isinstance(action, _Switch):
            return ", ".join(action.option_strings)
        return super()._format_action_invocation(action)


def _lib(p: argparse.ArgumentParser, flag: str, function: str, **kw) -> None:
    """A flag whose default is the parameter of the same name of ``function`` ('module:name' in
    the package), the one copy of it: filled in when the command runs (``main``) and shown in
    --help, both importing the function only then, so that parsing stays free of torch."""
    action = p.add_argument(flag, default=argparse.SUPPRESS, **kw)
    action.library = function


def _library_default(action: argparse.Action):
    import importlib
    import inspect

    module, name = action.library.split(":")
    function = getattr(importlib.import_module(f".{module}", __package__), name)
    return inspect.signature(function).parameters[action.dest].default


def _fill_library_defaults(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for action in parser._actions:
        if getattr(action, "library", None) and not hasattr(args, action.dest):
            setattr(args, action.dest, _library_default(action))


def _weights(p: argparse.ArgumentParser) -> None:
    p.add_argument("weights", help="run directory, model.safetensors, checkpoint.pt, or published weights by name "
                   "(IMAGENET1K_V1: torchvision's, from the torch hub cache or downloaded once, hash checked)")


def _device(p: argparse.ArgumentParser) -> None:
    from .options import DEVICE_HELP

    p.add_argument("--device", default="auto", help=DEVICE_HELP)


def _workers(p: argparse.ArgumentParser) -> None:
    p.add_argument("--workers", type=int, default=-1, help="image-decoding processes; -1 = one per CPU core")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def _unreadable_status(inputs: list[str], skipped: list[str], done: int) -> int:
    """The exit status once the readable images are done (``done`` of them): 1 when a file or
    folder named on the command line gave no image, or no image at all could be read (a script
    must see that nothing came of it), else 0; unreadable files found in named folders are
    skipped, named (above) and counted."""
    from .files import printable

    given = {printable(i) for i in inputs}
    named = [p for p in skipped if p in given]
    if len(skipped) > len(named):
        print(f"alexnet: skipped {len(skipped) - len(named)} unreadable image(s) in the folders given", file=sys.stderr)
    if named:
        print(f"alexnet: error: could not read {len(named)} of the paths named: {', '.join(named)}", file=sys.stderr)
        return 1
    if not done:
        print("alexnet: error: no image could be read", file=sys.stderr)
        return 1
    return 0


# -------------------------------------------------------------------------------------
# alexnet summary

SUMMARY_FIELDS = ("variant", "norm", "activation", "overlap_pool", "towers", "pool5_grid", "ceil_pool")

def _summary(sub) -> None:
    p = sub.add_parser("summary", help="per-layer table: output shape, parameters, MACs", formatter_class=_Help)
    from .training.config import ModelConfig

    # the network's flags are train's own, from the same fields
    _add_dataclass_flags(p, ModelConfig, only=SUMMARY_FIELDS)
    p.add_argument("--num-classes", type=int, default=1000, help="classes of the last layer")
    p.add_argument("--input-size", type=int, default=0, help="input side in pixels; 0 = the variant's native")
    _json(p)
    p.set_defaults(func=cmd_summary)


def cmd_summary(args: argparse.Namespace) -> int:
    from .training.config import DataConfig, ModelConfig, TrainConfig, model_options, resolve_defaults, validate
    from .models.registry import create_model, variant_info
    from .models.summary import format_table, summarize

    info = variant_info(args.variant)
    size = args.input_size or info.input_size
    if size < info.min_input_size:
        raise AlexNetError(f"--input-size {size} is too small for {args.variant} (at least {info.min_input_size})")
    m = ModelConfig(variant=args.variant, norm=args.norm, activation=args.activation, overlap_pool=args.overlap_pool,
                    pool5_grid=args.pool5_grid, ceil_pool=args.ceil_pool, towers=args.towers)
    as_trained = TrainConfig(model=m, data=DataConfig(resize=size, crop=size))
    validate(as_trained)  # options the network does not have are an error, as in train
    m = resolve_defaults(as_trained).model  # --pool5-grid -1 or 0: as the network has it at this size
    own = resolve_defaults(TrainConfig(model=dataclasses.replace(as_trained.model, pool5_grid=-1),
                                       data=as_trained.data)).model  # the grid these options give by default
    model = create_model(args.variant, num_classes=args.num_classes, **model_options(m))
    rows = summarize(model, size)
    if args.json:
        print(json.dumps({"variant": args.variant, "options": model.options(), "input_size": size, "layers": [dataclasses.asdict(r) for r in rows],
                          "params": sum(r.params for r in rows), "macs": sum(r.macs for r in rows)}, indent=2))
    else:
        usual = {"norm": "lrn", "activation": "relu", "overlap_pool": True, "pool5_grid": own.pool5_grid,
                 "ceil_pool": False, "towers": 1}
        changed = {k: v for k, v in model.options().items() if k in usual and v != usual[k]}
        options = "".join(f", {k}={v}" for k, v in changed.items())
        print(format_table(rows, f"{args.variant}{options}: {info.description}; input 3x{size}x{size}, "
                                 f"{args.num_classes} classes"))
    return 0


# -------------------------------------------------------------------------------------
# alexnet train

def _train(sub) -> None:
    p = sub.add_parser("train", help="train with the paper's recipe (every value a flag)", formatter_class=_Help,
                       description="Train AlexNet. Defaults are the paper's recipe; every value is a flag.")
    p.add_argument("--resume", metavar="RUN", help="continue the run in this directory from its last checkpoint; "
                   "other flags given override its stored config (e.g. --epochs). 'auto': continue the run in "
                   "--out if it has a checkpoint, else start it there (for jobs that are restarted)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    _add_config_flags(p)
    p.set_defaults(func=cmd_train)


def cmd_train(args: argparse.Namespace) -> int:
    from .training.config import TrainConfig, apply_overrides
    from .training.train import fit

    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "command", "overwrite")}
    if args.resume == "auto":  # restarted workers (torchrun --max-restarts), requeued jobs: one command for both
        if "out" not in overrides:
            raise AlexNetError("--resume auto continues the run in --out, or starts it there: pass --out")
        from .training.rundir import RunDir

        args.resume = overrides["out"] if RunDir(overrides["out"]).has_checkpoint() else None
    if args.resume:
        if "out" in overrides and overrides["out"] != args.resume:
            raise AlexNetError("--resume names the run directory; do not also pass --out")
        overrides.pop("out", None)
        fit(TrainConfig(out=args.resume), resume=True, overrides=overrides, started=_entered)
    else:
        fit(apply_overrides(TrainConfig(), overrides), overwrite=args.overwrite, started=_entered)
    return 0


# -------------------------------------------------------------------------------------
# alexnet finetune

# Where fine-tuning differs from training from scratch. All layers train by default: on the
# measured transfer (docs/finetune.md) freezing the convolutions cost 26 points of accuracy.
FINETUNE_DEFAULTS = {"epochs": 10, "lr": 0.001, "head_lr_mult": 10.0, "freeze": "none", "schedule": "cosine",
                     "out": "runs/finetune"}


def _finetune(sub) -> None:
    given = " ".join(f"--{k.replace('_', '-')} {v:g}" if isinstance(v, float) else f"--{k.replace('_', '-')} {v}"
                     for k, v in FINETUNE_DEFAULTS.items())
    p = sub.add_parser("finetune", help="transfer learning: a trained network on new classes", formatter_class=_Help,
                       description="Train from WEIGHTS on --data: a new fc8 for the new class count, a higher "
                                   "learning rate on the new layer, optionally frozen layers. Its own defaults: "
                                   f"{given}; every training flag applies.")
    p.add_argument("source", metavar="WEIGHTS", help="run directory, weights file, or published weights by name "
                   "(IMAGENET1K_V1) to start from")
    p.add_argument("--overwrite", action="store_true", help="start afresh in an --out that holds a run")
    _add_config_flags(p, shown=FINETUNE_DEFAULTS)
    p.set_defaults(func=cmd_finetune)


def cmd_finetune(args: argparse.Namespace) -> int:
    from .training.config import TrainConfig, apply_overrides
    from .training.train import fit

    overrides = {k: v for k, v in vars(args).items() if k not in ("func", "command", "source", "overwrite")}
    fit(apply_overrides(TrainConfig(), {**FINETUNE_DEFAULTS, **overrides, "weights": args.source}),
        overwrite=args.overwrite, started=_entered)
    return 0


# -------------------------------------------------------------------------------------
# alexnet prepare

def _prepare(sub) -> None:
    p = sub.add_parser("prepare", help="pack a class-per-folder tree into a few large shards for fast loading",
                       formatter_class=_Help,
                       description="Decode SRC/train (and SRC/val, SRC/test where present) once, resize (shorter "
                                   "side to --size, center crop) and store them in DST as JPEG or raw uint8 shards. "
                                   "Interrupted, or a shard damaged? Run it again. `alexnet prepare --verify PACKED` "
                                   "checks every shard against its checksum.")
    p.add_argument("src", help="folder with a train/ class-per-folder tree, and optionally val/ and test/")
    p.add_argument("dst", nargs="?", help="output directory (train with --data DST)")
    p.add_argument("--verify", action="store_true",
                   help="hash every shard in full: with SRC and DST, rewrite those damaged; with one packed "
                        "dataset alone, report them (exit 1 if any)")
    _lib(p, "--size", "data.packed:prepare", type=int, help="stored side in pixels (the paper stored 256)")
    _lib(p, "--encoding", "data.packed:prepare", choices=("jpeg", "raw"), help="how images are stored")
    _lib(p, "--quality", "data.packed:prepare", type=int, help="JPEG quality")
    _workers(p)
    _lib(p, "--shard-size", "data.packed:prepare", type=int, help="images per shard file")
    _json(p)
    p.set_defaults(func=cmd_prepare)


def cmd_prepare(args: argparse.Namespace) -> int:
    from .data.packed import prepare

    if args.dst is None:
        return _verify_packed(args)
    meta = prepare(args.src, args.dst, size=args.size, encoding=args.encoding, quality=args.quality,
                   workers=args.workers, shard_size=args.shard_size, progress=not args.json, verify=args.verify)
    if args.json:
        print(json.dumps(meta, indent=2))
        return 0
    for split, info in meta["splits"].items():
        print(f"{split}: {info['count']:,} images in {len(info['shards'])} shard(s), "
              f"{info['bytes'] / 2**20:,.1f} MiB, {len(info['skipped'])} unreadable file(s) skipped")
        for path in info["skipped"][:5]:
            print(f"  skipped {path}")
    print(f"{len(meta['classes'])} classes, {meta['size']}x{meta['size']} {meta['encoding']}"
          f"{' q' + str(meta['quality']) if meta['quality'] else ''}; {args.dst} ({meta['seconds']:.1f}s)")
    return 0


def _verify_packed(args: argparse.Namespace) -> int:
    """``alexnet prepare --verify PACKED``: hash every shard; exit 1 naming each damaged one."""
    from .data.packed import verify

    if not args.verify:
        raise AlexNetError("prepare needs SRC and DST (or --verify PACKED to check a packed dataset)")
    report = verify(args.src, progress=not args.json)
    if args.json:
        print(json.dumps(report, indent=2))
    for line in report["damaged"]:
        print(f"alexnet: error: {line}", file=sys.stderr)
    if not args.json:
        ok = report["shards"] - len(report["damaged"])
        print(f"{ok} of {report['shards']} shard(s) intact ({report['bytes'] / 2**20:,.1f} MiB checked)")
    return 1 if report["damaged"] else 0


# -------------------------------------------------------------------------------------
# alexnet evaluate

def _evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="top-1/top-5 accuracy of a trained network", formatter_class=_Help)
    _weights(p)
    p.add_argument("--data", help="dataset (default: the one the network was trained on)")
    p.add_argument("--ten-crop", action="store_true", help="the paper's 10-crop protocol (default: center crop)")
    _lib(p, "--split", "infer:evaluate_weights", choices=("auto", "test", "val", "train"),
         help="test (the data's test split), val (its val split, or the images the run held out of "
              "training), train; auto: test where the data has one, else val")
    _lib(p, "--batch-size", "infer:evaluate_weights", type=int, help="images per forward pass (times 10 with --ten-crop)")
    _device(p)
    _workers(p)
    _lib(p, "--limit", "infer:evaluate_weights", type=int, help="evaluate only the first N images; 0 = all")
    _lib(p, "--precision", "infer:evaluate_weights", choices=("fp32", "bf16", "auto"),
         help="bf16: autocast + channels-last, about 2x faster on CPUs with bf16 instructions; auto: bf16 on CUDA "
              "and on such CPUs, else fp32")
    p.add_argument("--fashion-mnist-dir", default=None, help="Fashion-MNIST's directory (default: the run's)")
    _json(p)
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from .infer import evaluate_weights

    result = evaluate_weights(args.weights, data=args.data, ten_crop=args.ten_crop, split=args.split,
                              batch_size=args.batch_size, device=args.device, workers=args.workers,
                              limit=args.limit, fashion_mnist_dir=args.fashion_mnist_dir, progress=not args.json,
                              precision=args.precision)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(result.summary())
    return 0


# -------------------------------------------------------------------------------------
# alexnet predict

def _predict(sub) -> None:
    p = sub.add_parser("predict", help="top-5 classes of images or folders of images", formatter_class=_Help)
    _weights(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or folders searched recursively")
    _lib(p, "--topk", "infer:predict", type=int, help="classes to list per image")
    p.add_argument("--ten-crop", action="store_true", help="average the softmax of the paper's 10 crops")
    _lib(p, "--batch-size", "infer:predict", type=int, help="images per forward pass")
    _device(p)
    _workers(p)
    _lib(p, "--precision", "infer:predict", choices=("fp32", "bf16"),
         help="bf16: autocast + channels-last, about 2x faster on CPUs with bf16 instructions")
    _json(p)
    p.set_defaults(func=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from .infer import predict

    skipped: list[str] = []
    results = predict(args.weights, args.inputs, topk=args.topk, ten_crop=args.ten_crop, batch_size=args.batch_size,
                      device=args.device, workers=args.workers, progress=not args.json, precision=args.precision,
                      skipped=skipped)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["path"])
            for t in r["top"]:
                print(f"  {100 * t['prob']:6.2f}%  {t['class']}")
    return _unreadable_status(args.inputs, skipped, len(results))


# -------------------------------------------------------------------------------------
# alexnet features

def _features(sub) -> None:
    p = sub.add_parser("features", help="save a hidden layer's activations (default fc7) for every image",
                       formatter_class=_Help)
    _weights(p)
    p.add_argument("inputs", nargs="+", metavar="IMAGE_OR_DIR", help="image files, or folders searched recursively")
    p.add_argument("--layer", help="which activations: pool5, fc6 or fc7 (LeNet-5: s4, c5 or f6); default the last "
                                   "hidden layer, fc7 (f6)")
    p.add_argument("--out", default="features.npz", help="output .npz: features (N, D), paths (N,)")
    _lib(p, "--batch-size", "infer:extract_features", type=int, help="images per forward pass")
    _device(p)
    _workers(p)
    _lib(p, "--precision", "infer:extract_features", choices=("fp32", "bf16"), help="bf16: autocast + channels-last")
    p.set_defaults(func=cmd_features)


def cmd_features(args: argparse.Namespace) -> int:
    from .infer import extract_features, save_features

    output_file(args.out)  # before the work, not after it
    skipped: list[str] = []
    found = extract_features(args.weights, args.inputs, args.layer, batch_size=args.batch_size, device=args.device,
                             workers=args.workers, precision=args.precision, skipped=skipped)
    save_features(args.out, found, args.weights)
    print(f"{len(found.paths)} images x {found.features.shape[1]} {found.layer} activations -> {args.out}")
    return _unreadable_status(args.inputs, skipped, len(found.paths))


# -------------------------------------------------------------------------------------
# alexnet explain

def _explain(sub) -> None:
    p = sub.add_parser("explain", help="one image through the network: top-5, each stage's maps and sparsity, "
                                       "occlusion, Grad-CAM and integrated gradients (PNGs + summary.json)",
                       formatter_class=_Help)
    _weights(p)
    p.add_argument("image", nargs="?", help="an image file")
    p.add_argument("--out", required=True, help="folder for the PNGs and summary.json")
    p.add_argument("--layer", default="", help="also Grad-CAM at this map (conv1, conv2, ..., or a stage's "
                                                "normalised or pooled map: norm1, pool2, ...; the last stage is "
                                                "always shown)")
    p.add_argument("--maps", default="stages", choices=("stages", "all"),
                   help="the maps drawn: each stage's after its nonlinearity, or all: also each stage's "
                        "normalised and pooled maps (norm1, pool1, ...)")
    _lib(p, "--topk", "explain:explain", type=int, help="classes listed")
    _lib(p, "--ig-steps", "explain:explain", type=int, help="integrated gradients' steps from the mean image")
    p.add_argument("--units", default="", metavar="STAGE[:C,C,...]",
                   help="instead of one image: the patches of --data's images that excite these units most, e.g. "
                        "conv5 (its first 8 channels) or conv5:3,7,12")
    p.add_argument("--data", help="with --units: a folder of images (searched recursively)")
    _lib(p, "--k", "explain:explain_units", type=int, help="with --units: patches per unit")
    _device(p)
    _json(p)
    p.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    from .explain import explain, explain_units

    for flag, value in (("--k", args.k), ("--topk", args.topk), ("--ig-steps", args.ig_steps)):
        if value < 1:
            raise AlexNetError(f"{flag} must be at least 1, got {value}")
    if args.units:
        if not args.data:
            raise AlexNetError("--units searches the images of --data DIR for the patches that excite them")
        if args.image:
            raise AlexNetError(f"--units searches --data's images; drop the IMAGE {args.image!r}, or explain it "
                               "without --units")
        for flag, given in (("--layer", args.layer), ("--maps all", args.maps == "all")):
            if given:
                raise AlexNetError(f"{flag} is for one IMAGE's explanation, not for --units")
        found = explain_units(args.weights, args.units, args.data, args.out, k=args.k, device=args.device)
        if args.json:
            print(json.dumps(found, indent=2))
        else:
            print(f"{found['stage']}: {len(found['units'])} units, {found['images']} images, receptive field "
                  f"{found['field']['size']} px -> {Path(args.out) / found['file']}")
        return 0
    if not args.image:
        raise AlexNetError("alexnet explain needs an IMAGE (or --units STAGE --data DIR)")
    if args.data:
        raise AlexNetError("--data is the folder that --units searches; one IMAGE needs neither")
    summary = explain(args.weights, args.image, args.out, layer=args.layer, device=args.device, topk=args.topk,
                      ig_steps=args.ig_steps, all_maps=args.maps == "all")
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    for t in summary["top"]:
        print(f"{t['prob']:6.1%}  {t['class']}")
    for s in summary["stages"]:
        what = " of its ReLU outputs" if s["name"].startswith("conv") else ""  # norm and pool: of their maps
        sparsity = "" if s["sparsity"] is None else f", {s['sparsity']:.0%}{what} zero"
        print(f"{s['name']}: {'x'.join(map(str, s['shape']))}{sparsity} -> {s['file']}")
    print(f"evidence for {summary['target']['class']!r}: " + ", ".join(summary["files"].values()) + f" in {args.out}")
    return 0


# -------------------------------------------------------------------------------------
# alexnet neighbors

def _neighbors(sub) -> None:
    p = sub.add_parser("neighbors", help="nearest images in fc7 space, as a PNG grid (the paper's Fig. 4)",
                       formatter_class=_Help)
    _weights(p)
    p.add_argument("--query", nargs="+", required=True, metavar="IMAGE_OR_DIR", help="the images to look up")
    p.add_argument("--gallery", nargs="+", required=True, metavar="DIR_OR_NPZ",
                   help="images to search, or a features .npz from alexnet features")
    _lib(p, "--k", "infer:neighbors", type=int, help="neighbours per query")
    p.add_argument("--layer", help="the space distances are taken in: pool5, fc6 or fc7 (LeNet-5: s4, c5 or f6); "
                                   "default the gallery file's, else fc7 (f6)")
    _lib(p, "--out", "infer:neighbors", help="the PNG grid")
    _device(p)
    _json(p)
    p.set_defaults(func=cmd_neighbors)


def cmd_neighbors(args: argparse.Namespace) -> int:
    from .infer import neighbors

    skipped: list[str] = []
    results = neighbors(args.weights, args.query, args.gallery, k=args.k, layer=args.layer, out=args.out,
                        device=args.device, progress=not args.json, skipped=skipped)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(r["query"])
            for n in r["neighbors"]:
                print(f"  {n['distance']:10.3f}  {n['path']}")
        print(f"grid: {args.out}")
    return _unreadable_status(args.query + args.gallery, skipped, len(results))


# -------------------------------------------------------------------------------------
# alexnet export

def _export(sub) -> None:
    p = sub.add_parser("export", help="ONNX (checked with ONNX Runtime) or torch.export, dynamic batch",
                       formatter_class=_Help)
    _weights(p)
    p.add_argument("--format", default="onnx", choices=("onnx", "torch-export"), help="what to write")
    p.add_argument("--out", help="output file (default: beside the weights)")
    p.add_argument("--preprocess", action="store_true",
                   help="take uint8 images at the stored size and return probabilities (crop, normalise, softmax inside)")
    _json(p)
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    from .exporter import export

    report = export(args.weights, args.format, args.out, preprocess=args.preprocess)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        shape = "x".join(str(s) for s in report["input"])
        check = f"; max |difference| from PyTorch {report['max_abs_diff']:.2e}" if "max_abs_diff" in report else ""
        print(f"{report['format']}: {report['path']} (input B x {shape}, dynamic batch{check})")
    return 0


# -------------------------------------------------------------------------------------
# alexnet import-weights

def _import(sub) -> None:
    p = sub.add_parser("import-weights", help="convert torchvision's or Caffe's published AlexNet weights",
                       formatter_class=_Help)
    p.add_argument("source", choices=("torchvision", "caffe"), help="whose weights")
    p.add_argument("file", help="torchvision: alexnet-owt-*.pth, .safetensors, or IMAGENET1K_V1 (from the torch hub "
                   "cache, else downloaded, hash checked); caffe: bvlc_alexnet.caffemodel")
    p.add_argument("--mean", help="caffe: the mean image, imagenet_mean.binaryproto (default: Caffe's pixel mean)")
    p.add_argument("--out", required=True, help="output .safetensors")
    p.set_defaults(func=cmd_import)


def cmd_import(args: argparse.Namespace) -> int:
    if args.source == "torchvision":
        from .exporter import import_torchvision

        meta = import_torchvision(args.file, args.out)
    else:
        from .caffe import import_caffe

        meta = import_caffe(args.file, args.out, mean_path=args.mean)
    print(f"{meta['variant']} network, {meta['num_classes']} classes, input {meta['input_size']} -> {args.out}")
    return 0


# -------------------------------------------------------------------------------------
# alexnet visualize

def _visualize(sub) -> None:
    p = sub.add_parser("visualize", help="conv1 kernels (the paper's Fig. 3) and a run's training curves",
                       formatter_class=_Help)
    p.add_argument("source", help="run directory (curves, kernels) or weights file (kernels)")
    p.add_argument("--kernels", metavar="PNG", help="draw the 96 conv1 kernels")
    p.add_argument("--curves", metavar="PNG", help="draw loss, top-1, top-5 and learning rate per epoch")
    p.set_defaults(func=cmd_visualize)


def cmd_visualize(args: argparse.Namespace) -> int:
    from . import visualize

    if not (args.kernels or args.curves):
        raise AlexNetError("say what to draw: --kernels PNG (conv1 filters) and/or --curves PNG (a run's metrics)")
    if args.kernels:
        visualize.conv1_kernels(args.source, args.kernels)
        print(f"conv1 kernels -> {args.kernels}")
    if args.curves:
        visualize.curves(args.source, args.curves)
        print(f"training curves -> {args.curves}")
    return 0


# -------------------------------------------------------------------------------------
# alexnet bench

def _bench(sub) -> None:
    from .options import BenchConfig

    p = sub.add_parser("bench", help="images/s: model alone, loader alone, end to end, and the plain baseline",
                       formatter_class=_Help,
                       description="Median images/s after warm-up, device synchronised. With --images FOLDER "
                                   "(train/ class folders of JPEGs) it also packs them and compares end-to-end "
                                   "training against torchvision's alexnet fed by ImageFolder + DataLoader.")
    p.add_argument("--variant", action="append", choices=("paper", "torchvision"),
                   help="repeat for several (default: both)")
    _add_dataclass_flags(p, BenchConfig, skip=("variants",))
    p.add_argument("--inference", action="store_true",
                   help="CPU inference instead: batch 1 and 64, eager PyTorch vs ONNX Runtime vs torchvision eager")
    _json(p)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import bench_inference, run
    from .options import BenchConfig

    log = (lambda _: None) if args.json else print
    if args.inference:
        result = bench_inference(steps=args.steps, warmup=args.warmup, log=log)
    else:
        variants = args.variant or (["paper"] if args.model_parallel else ["paper", "torchvision"])
        result = run(BenchConfig(**{**_fields_of(args, BenchConfig), "variants": tuple(variants)}), log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    return 0


# -------------------------------------------------------------------------------------
# alexnet serve

def _serve(sub) -> None:
    from .options import ServeConfig

    p = sub.add_parser("serve", help="an HTTP service with a web page: top-k classes and features of uploaded images",
                       formatter_class=_Help,
                       description="Serve a trained network: POST /predict and /features (an image as multipart "
                                   "field 'file' or the raw body), GET /model, /health, /openapi.json, and a web page "
                                   "at /. Concurrent requests are batched into one forward pass. SIGTERM finishes "
                                   "the requests in flight, then exits.")
    _weights(p)
    _add_dataclass_flags(p, ServeConfig, skip=("weights",))
    p.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    from .options import ServeConfig
    from .serve import serve

    serve(ServeConfig(**_fields_of(args, ServeConfig)))
    return 0


# -------------------------------------------------------------------------------------
# alexnet reproduce

def _reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="the paper's claims as controlled experiments, with intervals",
                       formatter_class=_Help,
                       description="Each claim trains a baseline arm and an arm with one change, on the same data, "
                                   "budget and seeds, and reports the paired difference with a 95%% interval and a "
                                   "verdict. Finished runs are kept: run it again to continue.")
    p.add_argument("claims", nargs="*", metavar="CLAIM", help="claims to measure (default: all; see --list)")
    p.add_argument("--list", action="store_true", help="list the claims with the paper's numbers")
    p.add_argument("--report", metavar="DIR", help="rebuild the report of a reproduction from its finished runs")
    p.add_argument("--preset", default="auto", choices=("auto", "cpu", "gpu", "cifar"),
                   help="cpu: a small input and a few thousand images, for a 2-core CPU; gpu: the full-size "
                        "network; auto: gpu when CUDA is present; cifar: the paper's own CIFAR-10 experiments on "
                        "cuda-convnet's networks, then the regularisers in a regime that overfits, every setting "
                        "fixed in advance (run it again to continue it or to rebuild its report). --list shows "
                        "each preset's settings")
    p.add_argument("--seeds", type=int, default=0, help="seeds per arm; 0: the preset's own (the cifar preset "
                                                        "fixes its own: a power calculation on a pilot)")
    p.add_argument("--data", default="fashion-mnist",
                   help="any dataset `alexnet train` accepts: fashion-mnist, a class-per-folder tree, a packed set")
    p.add_argument("--out", help="directory of the runs and the report (default: runs/reproduce, or "
                                 "runs/reproduce-cifar)")
    p.add_argument("--epochs", type=int, help="override the preset's epochs")
    p.add_argument("--limit-train", type=int, help="override the preset's number of training images (0: all)")
    p.add_argument("--batch-size", type=int, help="override the preset's batch")
    p.add_argument("--set", action="append", default=[], metavar="FLAG=VALUE",
                   help="any other training flag for every arm, e.g. --set gpu-decode=true --set workers=16")
    _device(p)
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from .reproduce import study as rep

    if args.list:
        print(rep.list_claims())
        return 0
    if args.report:
        if args.claims:
            raise AlexNetError("--report rebuilds a finished reproduction's report; do not also name claims")
        plan = rep.load_plan(args.report)
        rep.build_report(plan, plan.command())
        print(f"report: {plan.out / 'report.md'}")
        return 0
    if args.preset == "cifar":
        return _reproduce_cifar(args)
    from .training.config import parse_setting

    overrides = {k: v for k, v in (("epochs", args.epochs), ("limit_train", args.limit_train),
                                   ("batch_size", args.batch_size)) if v is not None}
    overrides.update(parse_setting(text) for text in args.set)
    plan = rep.make_plan(args.claims, args.preset, args.seeds, args.data, args.out or "runs/reproduce", args.device,
                         overrides)
    rep.reproduce(plan)
    return 0


def _reproduce_cifar(args: argparse.Namespace) -> int:
    from .reproduce.cifar import run_study

    if args.data == "fashion-mnist":
        raise AlexNetError("--preset cifar trains on CIFAR-10: name it with --data (its binary release, or a "
                           "folder of train/ and test/ class folders)")
    changed = [f for f in ("epochs", "limit_train", "batch_size") if getattr(args, f) is not None] + \
        (["seeds"] if args.seeds else []) + (["set"] if args.set else [])
    if changed:
        flag = changed[0].replace("_", "-")
        raise AlexNetError(f"--preset cifar fixes its settings in advance; it takes no --{flag}")
    out = args.out or "runs/reproduce-cifar"
    device = "" if args.device == "auto" else f" --device {args.device}"
    command = f"alexnet reproduce {' '.join(args.claims)} --preset cifar --data {args.data} --out {out}{device}"
    run_study(args.claims, args.data, out, args.device, command.replace("  ", " "))
    return 0


# -------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="alexnet", description="AlexNet (Krizhevsky et al. 2012): "
                                     "train, evaluate and inspect the paper's network and torchvision's.")
    parser.add_argument("--version", action="version", version=f"alexnet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_summary, _train, _prepare, _predict, _features, _explain, _neighbors, _finetune, _export, _import,
                _visualize, _bench, _evaluate, _reproduce, _serve):
        add(sub)
    return parser


def _subparser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _leave_if_torchrun_worker(code: int) -> None:
    """A torchrun worker whose training has ended (its files written, its process group destroyed)
    leaves at once rather than through the interpreter's teardown. There, a restarted gloo worker
    sometimes aborted in C++ destructors after a clean finish ("terminate called without an active
    exception", SIGABRT: 3 of about 25 runs of the restart test on the 2-core CPU, torch 2.14), and
    torchrun then reported the whole job as failed."""
    if "TORCHELASTIC_RUN_ID" in os.environ:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


# When this command began (a time.perf_counter() reading): `train` and `finetune` count a
# --time-budget from it, so that torch's imports and the data's loading count too, and a command
# run in-process (a notebook, a sweep) counts from its own call, not from the process's start.
_entered: float | None = None


def main(argv: Sequence[str] | None = None) -> int:
    global _entered
    _entered = time.perf_counter()
    # Large CPU tensors (weights, gradients, autocast's bf16 copies, batches) on transparent huge
    # pages: one 2-MB page where 512 faults of 4 KB each would zero memory every time such a tensor
    # is allocated again (benchmarks/thp_cpu.py measures it). PyTorch reads the switch once, at its
    # first allocation: set here, before torch is imported; THP_MEM_ALLOC_ENABLE=0 opts out. Only
    # where the kernel has huge pages (elsewhere PyTorch would warn in every process).
    if os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"):
        os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _fill_library_defaults(_subparser(parser, args.command), args)
        code = args.func(args)
        if args.command == "train":
            _leave_if_torchrun_worker(code)
        return code
    except AlexNetError as e:
        print(f"alexnet: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alexnet: interrupted", file=sys.stderr)
        return 130
