"""``python -m spottune convert IN OUT``: convert an official checkpoint into the harness format.

IN is a residual-adapters file (``resnet26_pretrained.t7``, a pickled ``models.ResNet``, or a checkpoint of
its training scripts, with series or parallel adapters; ``--task K`` picks the task of a network trained on
several) or an official SpotTune checkpoint (``{'net', 'agent'}``); the kind is detected from the file.
Nothing in IN is executed (see :mod:`spottune.official`). OUT is a harness checkpoint readable with
``torch.load(weights_only=True)`` (:func:`decathlon.networks.checkpoint.load_checkpoint`). Errors print
one line on stderr and exit with status 2 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from decathlon.errors import HarnessError

EXIT_ERROR = 2


def get_args_parser() -> argparse.ArgumentParser:
    """The command-line parser (sub-command ``convert``)."""
    parser = argparse.ArgumentParser(prog="python -m spottune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help="official checkpoint -> harness checkpoint")
    convert.add_argument("source", help="official file: resnet26_pretrained.t7 or a SpotTune <dataset>.t7")
    convert.add_argument("target", help="harness checkpoint to write")
    convert.add_argument("--task", type=int, default=0,
                         help="residual-adapters networks of several tasks: the task to convert (default 0)")
    return parser


def convert(source: str, target: str, task: int = 0) -> int:
    """Convert `source` (task `task` of a multi-task residual-adapters network) into `target` and print
    what was loaded."""
    from spottune.official import convert_official

    official, report = convert_official(source, target, task)
    print(f"{source}: official {official.kind} file ({', '.join(official.classes)})")
    print(report.summary())
    print(f"wrote {target}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    args = get_args_parser().parse_args(argv)
    try:
        return convert(args.source, args.target, args.task)
    except HarnessError as e:
        if args.debug:
            raise
        print("error: " + " ".join(str(e).split()), file=sys.stderr)  # one line, whatever the message
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
