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

from openmimo.config import ConfigError, UsageError, config_args, load_stage_config  # noqa: F401  (re-exported)

# stage name -> (module, one-line help).  Later stages register themselves here.
STAGES: dict[str, tuple[str, str]] = {
    "smoke": ("openmimo.smoke", "train a tokenizer and a tiny model for a few steps, save, reload and generate"),
    "pretrain": ("openmimo.train.pretrain", "pre-train with the LM + MTP objective (three-stage data schedule)"),
    "mtp-extend": ("openmimo.train.mtp_extend", "copy the trained MTP layer into K layers and fine-tune the new ones"),
    "make-world": ("openmimo.data.world", "write the embedded tiny reasoning world (text, math, code, web pages) to a folder"),
    "extract-html": ("openmimo.data.extract_html", "web pages (files, folders, JSONL dumps, WARC) -> text that keeps math as LaTeX and code verbatim"),
    "extract-pdf": ("openmimo.data.extract_pdf", "born-digital PDFs -> text in reading order with code indentation and math; unrecoverable pages flagged for OCR"),
    "data": ("openmimo.data.pipeline", "raw pages and texts -> dedup (URL, exact, MinHash), decontamination, quality tags, mixture bins -> token shards + data card"),
    "tag-train": ("openmimo.data.quality", "train the small quality/domain tagger on labelled JSONL (or the embedded world)"),
    "tag-label": ("openmimo.data.quality_label", "label documents (domain, edu, junk) with an LLM through an OpenAI-compatible endpoint"),
    "judge": ("openmimo.rewards.sandbox", "run a program against tests in the isolated code judge"),
    "calibrate-tests": ("openmimo.rewards.code", "cluster each problem's tests into difficulty levels from a pass matrix"),
    "generate": ("openmimo.infer.generate", "generate completions for JSONL prompts with the KV-cache engine"),
    "serve": ("openmimo.infer.server", "serve a checkpoint over an OpenAI-compatible HTTP API"),
    "sft": ("openmimo.train.sft", "supervised fine-tuning on chat records with reasoning traces (packed, loss on assistant tokens, MTP too)"),
    "synth": ("openmimo.data.synth", "synthetic reasoning data from any OpenAI-compatible endpoint, kept when the rewards verify it"),
    "rl": ("openmimo.rl.trainer", "RL with MiMo's modified GRPO (dynamic sampling, easy pool) on the seamless rollout engine"),
    "eval": ("openmimo.eval.run", "evaluate a checkpoint or an OpenAI-compatible server on math and code benchmarks (avg@k, pass@k)"),
    "curate": ("openmimo.eval.curate", "clean RL problems by rule and sort them by rollout pass rate (training / easy pool)"),
    "report": ("openmimo.eval.report", "one self-contained report.html with plots from run folders (metrics, eval results)"),
    "quickstart": ("openmimo.quickstart", "on CPU: pre-train the tiny model, RL on math and code, print held-out pass@1 before and after"),
}


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
    try:
        rc = module.run(args)
    except (ConfigError, UsageError) as e:
        print(f"openmimo {stage}: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
