"""The `genlab` command line: thin argparse subcommands over the Python API.

Errors are one line on stderr and exit code 2 (GenlabError, bad arguments, unreadable paths).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genlab import config as config_mod
from genlab.atomic import atomic_write
from genlab.config import DEVICE
from genlab.errors import GenlabError, first_line
from genlab.registry import DATASETS, METRICS, MODELS, SAMPLERS


class Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        # "genlab: error: sample: argument -n: ..." (the prefix already says genlab)
        command = self.prog.partition(" ")[2]
        where = f"{command}: " if command else ""
        raise GenlabError(f"{where}{message} (see --help)")


MAX_COUNT = 2**31 - 1  # sample sizes, pairs, steps: beyond this torch cannot even index them
SEED_RANGE = (-(2**63), 2**64)  # what torch.Generator.manual_seed accepts


def parsed(text: str, convert: Callable[[str], Any], what: str) -> Any:
    """`convert(text)`, or argparse's one-line refusal naming what was expected."""
    try:
        return convert(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None


def count(text: str) -> int:
    """argparse type: an integer in 1..MAX_COUNT (sizes that torch must allocate or loop over)."""
    value = parsed(text, int, "an integer")
    if not 1 <= value <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"must be a positive integer <= {MAX_COUNT}; got {value}")
    return value


def seed(text: str) -> int:
    """argparse type: a random seed that torch accepts."""
    value = parsed(text, int, "an integer")
    if not SEED_RANGE[0] <= value < SEED_RANGE[1]:
        raise argparse.ArgumentTypeError(f"must be in [-2**63, 2**64); got {value}")
    return value


def finite(text: str) -> float:
    """argparse type: a finite float (nan or inf would silently give NaN samples)."""
    value = parsed(text, float, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite; got {text}")
    return value


def port(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    value = parsed(text, int, "an integer")
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be in 0..65535; got {value}")
    return value


def device(text: str) -> str:
    """argparse type: auto, cpu, cuda or cuda:N (torch.device would raise on anything else)."""
    if not DEVICE.match(text):
        raise argparse.ArgumentTypeError(f"must be auto, cpu, cuda or cuda:N; got {text!r}")
    return text


def add_device(p: argparse.ArgumentParser, default: str = "cpu") -> None:
    p.add_argument(
        "--device",
        type=device,
        default=default,
        help=f"cpu, cuda, cuda:N or auto (default {default})",
    )


def add_eval_options(p: argparse.ArgumentParser, metrics_help: str = "") -> None:
    p.add_argument(
        "--metrics",
        help=f"comma-separated, from: {', '.join(METRICS.names())}"
        + (f"; {metrics_help}" if metrics_help else " (default: all that apply)"),
    )
    p.add_argument(
        "--n",
        type=count,
        help="sample size: generated samples and test examples (default: each metric's protocol)",
    )
    p.add_argument(
        "--k", type=count, default=100, help="importance samples for IWAE bounds (default 100)"
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--inception-weights",
        metavar="PATH",
        help="InceptionV3 FID weights (pt_inception-2015-12-05-6726825d.pth) for fid/kid/is/pr "
        "features instead of genlab's classifier; never downloaded",
    )


def metric_names(text: str | None) -> list[str] | None:
    """--metrics a,b -> ["a", "b"], each checked against the registry (None when not given)."""
    if not text:
        return None
    names = [m.strip() for m in text.split(",") if m.strip()]
    for name in names:
        METRICS.entry(name)
    return names


def build_parser() -> Parser:
    from genlab import __version__

    parser = Parser(prog="genlab", description="Deep generative models: train, sample, evaluate.")
    parser.add_argument("--version", action="version", version=f"genlab {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    sub.add_parser("list", help="models, datasets, samplers and metrics with one-line descriptions")

    p = sub.add_parser(
        "train",
        help="train a model on a dataset into a run directory",
        description="genlab train [MODEL] [--data DATASET] [--config FILE] --out RUN "
        "[--resume] [key=value ...]; keys: model.<field>, data.<field>, train.<field>",
    )
    p.add_argument("model", nargs="?", help="model name (see genlab list); may come from --config")
    p.add_argument(
        "overrides", nargs="*", metavar="key=value", help="e.g. train.steps=3000 model.beta=4"
    )
    p.add_argument("--data", help="dataset name, folder:PATH or npz:PATH")
    p.add_argument("--data-root", help="directory holding the dataset's files (= data.root)")
    p.add_argument("--config", help="YAML file with model/data/train sections")
    p.add_argument("--out", help="run directory (default runs/MODEL-DATASET)")
    p.add_argument("--resume", action="store_true", help="continue from the run's last checkpoint")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("sample", help="draw samples: a PNG grid (.png) or an array file (.npz)")
    p.add_argument("run", help="run directory")
    p.add_argument("-n", type=count, default=64, help="number of samples (default 64)")
    p.add_argument(
        "--seed", type=seed, default=0, help="random seed (same run, n, seed -> same samples)"
    )
    p.add_argument("--out", required=True, help="output file: .png or .npz")
    p.add_argument("--sampler", help="sampler name, for models that have several")
    p.add_argument("--steps", type=count, help="sampler steps")
    p.add_argument("--class", dest="label", type=int, help="class to sample (conditional models)")
    p.add_argument("--guidance", type=finite, help="guidance weight (guided models)")
    add_device(p)

    p = sub.add_parser("evaluate", help="held-out metrics: prints a table and writes RUN/eval.json")
    p.add_argument("run", help="run directory")
    add_eval_options(p)
    add_device(p)

    p = sub.add_parser(
        "compare",
        help="runs side by side: sample grids, loss curves, metrics, in one HTML page",
        description="genlab compare RUN... --report report.html [--metrics m1,m2]: metrics come "
        "from each RUN/eval.json, or are computed (and saved) when --metrics is given",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--report", required=True, help="output HTML file")
    p.add_argument("--title", default="genlab comparison")
    add_eval_options(p, metrics_help="evaluate these first (default: use eval.json)")
    add_device(p)

    p = sub.add_parser(
        "reconstruct",
        help="test examples and their reconstructions (encoder models) or translations "
        "(image-to-image models)",
    )
    p.add_argument("run")
    p.add_argument("-n", type=count, default=32)
    p.add_argument("--out", required=True, help="output PNG")
    add_device(p)

    p = sub.add_parser("interpolate", help="decoded latent interpolations between test examples")
    p.add_argument("run")
    p.add_argument("--pairs", type=count, default=8)
    p.add_argument("--steps", type=count, default=10)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", required=True, help="output PNG")
    add_device(p)

    p = sub.add_parser("manifold", help="the 2-D latent manifold plot (models with latent_dim=2)")
    p.add_argument("run")
    p.add_argument("--side", type=count, default=15)
    p.add_argument("--out", required=True, help="output PNG")
    add_device(p)

    p = sub.add_parser(
        "demo", help="train one model of each family on embedded data, write figures"
    )
    p.add_argument("--out", default="runs/demo", help="output directory (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="far fewer steps (a smoke test)")

    p = sub.add_parser(
        "playground", help="train models on the 2-D toys live in the browser (a local web app)"
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine)"
    )
    p.add_argument("--port", type=port, default=8765, help="port (default 8765; 0: a free one)")
    return parser


def cmd_list(args: argparse.Namespace) -> None:
    for title, registry in (
        ("models", MODELS),
        ("datasets", DATASETS),
        ("samplers", SAMPLERS),
        ("metrics", METRICS),
    ):
        print(f"{title}:")
        entries = [(e.name, e.description) for e in registry]
        if registry is DATASETS:
            entries += [
                ("folder:PATH", "PNG/JPEG images, optional class sub-folders"),
                ("npz:PATH", "arrays x (and optional labels y) in an .npz file"),
            ]
        if not entries:
            print("  (none yet)")
        for name, text in entries:
            print(f"  {name:<16} {text}")


def cmd_train(args: argparse.Namespace) -> None:
    from genlab.train import train

    overrides = list(args.overrides)
    model = args.model
    if model and "=" in model:  # `genlab train --config f.yaml key=value`: no MODEL given
        overrides.insert(0, model)
        model = None
    if args.data_root:
        overrides.append(f"data.root={args.data_root}")
    cfg = config_mod.resolve(model, args.data, args.config, overrides)
    out = Path(args.out or f"runs/{cfg.model}-{cfg.data.name.replace(':', '_').replace('/', '_')}")
    run = train(cfg, out, resume=args.resume, progress=not args.no_progress)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {cfg.model} on {cfg.data.name} to step {run.step}: {run.dir}")


def load(args: argparse.Namespace):  # -> Run
    from genlab.train import load_run

    return load_run(args.run, device=args.device)


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)


def cmd_sample(args: argparse.Namespace) -> None:
    from genlab.viz.figures import class_labels
    from genlab.viz.grids import save_samples

    out = Path(args.out)
    if out.suffix not in (".png", ".npz"):
        raise GenlabError(f"--out must end in .png or .npz; got {out.name}")
    run = load(args)
    model = run.model
    kw = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance)) if v is not None}
    if (args.sampler or kw) and not getattr(model, "samplers", ()):
        raise GenlabError(
            f"model {run.config.model} has one sampler; --sampler/--steps/--guidance do not apply"
        )
    if args.label is not None:
        if not getattr(model.cfg, "conditional", False):
            raise GenlabError(f"model {run.config.model} is not class-conditional; drop --class")
        if not 0 <= args.label < run.spec.num_classes:
            raise GenlabError(f"--class must be in 0..{run.spec.num_classes - 1}; got {args.label}")
    labels = class_labels(model, args.n, args.label)
    g = torch.Generator(model.device).manual_seed(args.seed)
    x = model.sample(args.n, generator=g, labels=labels, sampler=args.sampler, **kw).cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npz":
        arrays = {"x": x.numpy()}
        if labels is not None:
            arrays["y"] = labels.cpu().numpy()
        write_npz(out, arrays)
    else:
        save_samples(x, run.spec, out, title=f"{run.config.model} step {run.step}")
    print(f"wrote {args.n} samples to {out}")


def check_inception_weights(path: str | None) -> None:
    if path and not Path(path).is_file():
        raise GenlabError(f"--inception-weights: no such file: {path}")


def cmd_evaluate(args: argparse.Namespace) -> None:
    from genlab.compare import EVAL_JSON, save_report
    from genlab.metrics import evaluate

    names = metric_names(args.metrics)
    check_inception_weights(args.inception_weights)
    run = load(args)
    report = evaluate(
        run.model,
        run.data(),
        names,
        n=args.n,
        k=args.k,
        seed=args.seed,
        inception_weights=args.inception_weights,
    )
    width = max([len(k) for k in report.values] + [6])
    print(f"{'metric':<{width}}  value")
    for key, value in report.values.items():
        print(f"{key:<{width}}  {value:.6g}")
    for name, note in report.notes.items():
        print(f"  {name}: {note}")
    for name, why in report.skipped.items():
        print(f"  skipped {name}: {why}")
    save_report(run.dir, report)
    print(f"wrote {run.dir / EVAL_JSON}")


def cmd_compare(args: argparse.Namespace) -> None:
    from genlab.compare import compare

    names = metric_names(args.metrics)
    check_inception_weights(args.inception_weights)
    out = compare(
        args.runs,
        args.report,
        metrics=names,
        n=args.n,
        k=args.k,
        seed=args.seed,
        device=args.device,
        inception_weights=args.inception_weights,
        title=args.title,
    )
    print(f"wrote {out}")


def test_examples(run, n: int, seed: int = 0):  # -> (x, y)
    split = run.data().split("test")
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(split["x"]), generator=g)[:n]
    return split["x"][idx], (split["y"][idx] if "y" in split else None)


def png_out(path: str) -> None:
    """Figures are PNG files: refuse another name before any work (or a name-less path)."""
    if Path(path).suffix.lower() != ".png":
        raise GenlabError(f"--out must end in .png; got {path!r}")


def cmd_reconstruct(args: argparse.Namespace) -> None:
    from genlab.viz.figures import reconstructions

    png_out(args.out)
    run = load(args)
    x, y = test_examples(run, args.n)
    print(f"wrote {reconstructions(run.model, x, y, args.out)}")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from genlab.viz.figures import interpolations, require_encoder

    png_out(args.out)
    run = load(args)
    require_encoder(run.model, "interpolate")
    x, y = test_examples(run, 2 * args.pairs, args.seed)
    ya = None if y is None else y[: args.pairs]
    out = interpolations(run.model, x[: args.pairs], x[args.pairs :], args.out, args.steps, ya)
    print(f"wrote {out}")


def cmd_manifold(args: argparse.Namespace) -> None:
    from genlab.viz.figures import latent_manifold

    png_out(args.out)
    print(f"wrote {latent_manifold(load(args).model, args.out, args.side)}")


def cmd_demo(args: argparse.Namespace) -> None:
    from genlab.demo import run_demo

    run_demo(Path(args.out), quick=args.quick)


def cmd_playground(args: argparse.Namespace) -> None:
    from genlab.playground import serve  # Flask is imported only by this command

    def ready(url: str) -> None:
        print(f"genlab playground at {url} (Ctrl-C stops it)", file=sys.stderr, flush=True)

    serve(args.host, args.port, on_ready=ready)


COMMANDS = {
    "list": cmd_list,
    "train": cmd_train,
    "sample": cmd_sample,
    "evaluate": cmd_evaluate,
    "compare": cmd_compare,
    "reconstruct": cmd_reconstruct,
    "interpolate": cmd_interpolate,
    "manifold": cmd_manifold,
    "demo": cmd_demo,
    "playground": cmd_playground,
}


def out_of_memory(e: BaseException) -> bool:
    """A failed allocation: MemoryError, torch's OutOfMemoryError, or its CPU allocator's error."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError":
        return True
    return "can't allocate memory" in str(e) or "out of memory" in str(e).lower()


def main(argv: Sequence[str] | None = None) -> int:
    try:
        parser = build_parser()
        # key=value overrides may stand anywhere after `train`; argparse leaves them over.
        args, extra = parser.parse_known_args(argv)
        stray = [a for a in extra if args.command != "train" or "=" not in a or a.startswith("-")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        if args.command == "train":
            args.overrides = list(args.overrides) + extra
        logging.basicConfig(
            level=logging.INFO if args.verbose else logging.WARNING,
            format="%(message)s",
            stream=sys.stderr,
            force=True,  # main() may run more than once in a process (tests, notebooks)
        )
        if not args.command:
            parser.print_help()
            raise GenlabError("no command given; choose one of the commands above")
        COMMANDS[args.command](args)
        return 0
    except GenlabError as e:
        print(f"genlab: {e.label}: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:  # `genlab list | head`: the reader left; not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # unreadable/unwritable paths are bad input, not bugs
        print(f"genlab: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:
        # A request too large for this machine (-n, batch or model size) is bad input; any
        # other RuntimeError is a bug and keeps its traceback.
        if not out_of_memory(e):
            raise
        first = first_line(e)
        print(
            f"genlab: error: out of memory ({first}); ask for fewer samples or a smaller model",
            file=sys.stderr,
        )
        return 2
    except KeyboardInterrupt:
        print("genlab: interrupted", file=sys.stderr)
        return 130
