"""Command line of the benchmark: ``python -m decathlon {generate,score,download,verify} ...``.

- ``generate --out DIR [--seed N] [--image-size PX]``: write the generated suite (see decathlon.generate).
- ``score --submission results.json --annotations DIR [--baseline FILE] [--json]``: score a submission
  against the labelled ``<domain>_test.json`` files (per-domain accuracy, points and S). The S baseline
  is the published Fine-tuning model on the real Decathlon; anywhere else (the generated suite) pass
  ``--baseline``, the ``baseline.json`` the reports write beside each submission. The output names the
  baseline it used and every domain with test images that have no prediction.
- ``download {decathlon,extra,weights} --root DIR ...``: fetch and unpack the real data or the
  ResNet-26 weights, resumable and verified (see decathlon.download).
- ``verify --data-root DIR/decathlon-1.0 [--extra-root DIR]``: check the data against the known class
  counts and split sizes; exits 1 on a mismatch (see decathlon.verify).

Bad input prints one line on stderr and exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from decathlon import download, verify
from decathlon.errors import DataError, HarnessError

EXIT_BAD_INPUT = 2


def get_args_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m decathlon``."""
    # --debug is accepted before or after the subcommand; SUPPRESS keeps the subparser from resetting it
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show tracebacks instead of one-line errors")
    parser = argparse.ArgumentParser(prog="python -m decathlon", description=__doc__.splitlines()[0],
                                     parents=[debug])
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", parents=[debug], help="write the generated suite")
    gen.add_argument("--out", required=True, type=Path, help="output folder (gets decathlon-1.0/ and extra/)")
    gen.add_argument("--seed", type=int, default=0, help="generator seed (same seed, same bytes)")
    gen.add_argument("--image-size", type=int, default=None, help="shorter image side in pixels (default 36)")

    score = sub.add_parser("score", parents=[debug], help="score a results.json against labelled test files")
    score.add_argument("--submission", required=True, type=Path, help="results.json (or the zip holding it)")
    score.add_argument("--annotations", required=True, type=Path,
                       help="folder holding <domain>_test.json (e.g. decathlon-1.0/annotations)")
    score.add_argument("--baseline", type=Path, default=None,
                       help="JSON object {domain: accuracy %%}, e.g. the baseline.json beside a report's "
                            "submission (default: the published Fine-tuning; required for generated data)")
    score.add_argument("--json", action="store_true", help="print the result as JSON")
    download.add_parser(sub, [debug])
    verify.add_parser(sub, [debug])
    return parser


def _read_baseline(path: Path | None) -> Mapping[str, float] | None:
    if path is None:
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read baseline {path}: {exc}; "
                        "expected a JSON object {domain: accuracy %}") from None
    if not isinstance(data, dict) or not data:
        raise DataError(f"baseline {path} holds {type(data).__name__}; expected a non-empty JSON object "
                        "{domain: accuracy %}")
    return data


def _print_score(result: Mapping[str, Any], stream, baseline: str) -> None:
    from decathlon.score import score_notes

    rows = [(name, "–" if d["accuracy"] is None else f"{d['accuracy']:.2f}", f"{d['points']:.1f}")
            for name, d in result["domains"].items()]
    missing = ", ".join(result["missing"])
    footer = [f"S baseline: {baseline}", *score_notes(result)]
    if stream.isatty():
        from rich.console import Console
        from rich.table import Table

        table = Table(title="Decathlon score")
        for column, justify in (("domain", "left"), ("accuracy (%)", "right"), ("points", "right")):
            table.add_column(column, justify=justify)
        for row in rows:
            table.add_row(*row)
        table.add_row("S", "", f"{result['score']:.1f}", style="bold")
        console = Console(file=stream)
        console.print(table)
        if missing:
            console.print(f"missing (0 points): {missing}")
        for line in footer:
            console.print(line, markup=False)
        return
    width = max([len(r[0]) for r in rows] + [6])
    print(f"{'domain':<{width}}  {'accuracy':>8}  {'points':>7}", file=stream)
    for name, acc, pts in rows:
        print(f"{name:<{width}}  {acc:>8}  {pts:>7}", file=stream)
    print(f"{'S':<{width}}  {'':>8}  {result['score']:>7.1f}", file=stream)
    if missing:
        print(f"missing (0 points): {missing}", file=stream)
    for line in footer:
        print(line, file=stream)


def _generate(args: argparse.Namespace) -> int:
    from decathlon.generate import DEFAULT_IMAGE_SIZE, generate_suite

    start = time.perf_counter()
    paths = generate_suite(args.out, seed=args.seed, image_size=args.image_size or DEFAULT_IMAGE_SIZE)
    print(f"generated {paths.decathlon_root} and {paths.extra_root} in {time.perf_counter() - start:.1f} s")
    return 0


def _score(args: argparse.Namespace) -> int:
    from decathlon.score import score_submission

    name = None if args.baseline is None else f"the accuracies in {args.baseline}"
    result = score_submission(args.submission, args.annotations, baseline=_read_baseline(args.baseline),
                              baseline_name=name)
    if args.json:
        print(json.dumps(result))
    else:
        _print_score(result, sys.stdout, result["baseline"])
    return 0


COMMANDS = {"generate": _generate, "score": _score, "download": download.run, "verify": verify.run}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 bad input)."""
    args = get_args_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except HarnessError as exc:
        if getattr(args, "debug", False):
            raise
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
