"""`openmimo <stage> [CONFIG.yaml] [key=value ...]` -> the stage's entry point.  Nothing else lives here.

Each stage module exposes ``add_arguments(parser)`` and ``run(args) -> int | None``.  Stages that
are configured by a dataclass use :func:`config_args` / :func:`load_stage_config`, which give them
the common ``CONFIG key=value ... [--resume]`` interface.  Modules are imported only when their
stage runs, so ``openmimo --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# stage name -> (module, one-line help).  Later stages register themselves here.
STAGES: dict[str, tuple[str, str]] = {
    "smoke": ("openmimo.smoke", "train a tokenizer and a tiny model for a few steps, save, reload and generate"),
    "pretrain": ("openmimo.train.pretrain", "pre-train with the LM + MTP objective (three-stage data schedule)"),
    "mtp-extend": ("openmimo.train.mtp_extend", "copy the trained MTP layer into K layers and fine-tune the new ones"),
    "make-world": ("openmimo.data.world", "write the embedded tiny reasoning world (text, math, code, web pages) to a folder"),
    "judge": ("openmimo.rewards.sandbox", "run a program against tests in the isolated code judge"),
    "calibrate-tests": ("openmimo.rewards.code", "cluster each problem's tests into difficulty levels from a pass matrix"),
    "generate": ("openmimo.infer.generate", "generate completions for JSONL prompts with the KV-cache engine"),
    "serve": ("openmimo.infer.server", "serve a checkpoint over an OpenAI-compatible HTTP API"),
    "rl": ("openmimo.rl.trainer", "RL with MiMo's modified GRPO (dynamic sampling, easy pool) on the seamless rollout engine"),
    "quickstart": ("openmimo.quickstart", "on CPU: pre-train the tiny model, RL on math and code, print held-out pass@1 before and after"),
}


class UsageError(Exception):
    """A bad command line; reported on stderr with exit code 2."""


def config_args(parser: argparse.ArgumentParser, resume: bool = True, example: str = "") -> None:
    """Add the common ``CONFIG [key=value ...] [--resume]`` arguments.  ``example``: overrides that this stage's
    config accepts, shown in ``--help`` (and loaded by a test, so the help never shows a refused key)."""
    parser.add_argument("config", nargs="?", help="YAML preset (e.g. configs/tiny.yaml); omit for the built-in defaults")
    parser.add_argument("overrides", nargs="*", help=f"dotted overrides, e.g. {example}" if example else "dotted overrides")
    parser.set_defaults(config_example=example)
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue from the last complete checkpoint in the run folder")
        parser.add_argument("--overwrite", action="store_true",
                            help="start fresh in a run folder that holds another run's checkpoints (they are removed)")


def load_stage_config(cls, args):
    """Resolve a stage config from ``args.config`` + ``args.overrides`` (a YAML path may be omitted)."""
    from openmimo.config import load

    path, overrides = args.config, list(args.overrides)
    if path is not None and "=" in path and not path.endswith((".yaml", ".yml")):
        overrides.insert(0, path)
        path = None
    return load(cls, path, overrides)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="openmimo",
        description="openmimo: the MiMo-7B recipe for small reasoning models. Run `openmimo <stage> --help` for a stage's options.",
    )
    sub = parser.add_subparsers(dest="stage", metavar="<stage>")
    for name, (_, help_text) in STAGES.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    stage = argv[0]
    if stage not in STAGES:
        print(f"openmimo: error: unknown stage '{stage}' (choose from {', '.join(STAGES)})", file=sys.stderr)
        return 2
    module_name, help_text = STAGES[stage]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and e.name.startswith("openmimo"):
            print(f"openmimo: error: stage '{stage}' is not available in this build ({e.name} missing)", file=sys.stderr)
            return 2
        raise
    parser = argparse.ArgumentParser(prog=f"openmimo {stage}", description=help_text)
    module.add_arguments(parser)
    # intermixed: `pretrain CONFIG --resume key=value` (options between positionals) parses as expected
    args = parser.parse_intermixed_args(argv[1:])  # exits 2 with a message naming the bad argument
    from openmimo.config import ConfigError

    try:
        rc = module.run(args)
    except (ConfigError, UsageError) as e:
        print(f"openmimo {stage}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    # Run through the package module so that `python -m openmimo.cli` and stages share one
    # UsageError class (this file's own copy, as __main__, would be a different class).
    from openmimo.cli import main as _main

    sys.exit(_main())
