"""``python -m decathlon verify``: check data roots against the known class counts and split sizes.

For every Decathlon-layout domain (sizes from :mod:`decathlon.domains`, i.e. the challenge definition in
``shared/reference/decathlon.md``): the annotation files are read with the harness's own reader
(:class:`decathlon.data.DecathlonDataset`), the class count and the images per split must equal the
spec, the image files under ``data/<domain>/<split>/`` must be exactly those the annotation files list,
the statistics pickle must hold the domain's mean/std, and whether the labelled ``<domain>_test.json``
is present is reported. For the extra datasets the class count and the train/test image counts are
checked. A domain whose images are absent is reported as absent: an error only when it was asked for
by name (``--domains``) or when no domain is present at all.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from decathlon.data import (
    DECATHLON_FOLDER,
    IMAGE_EXTENSIONS,
    MEAN_STD_FILE,
    DecathlonDataset,
    build_dataset,
    decathlon_root,
    read_stats_pickle,
)
from decathlon.domains import DomainSpec, suite_domains
from decathlon.errors import DataError

OK, MISMATCH, ABSENT = "ok", "MISMATCH", "absent"
COLUMNS = ("domain", "classes", "train", "val", "test", "files", "mean/std", "test labels", "status")


@dataclass
class DomainCheck:
    """The checks of one domain: one table row (``cells`` by column) and the problems found."""

    domain: str
    cells: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    absent: bool = False

    @property
    def status(self) -> str:
        return ABSENT if self.absent else (MISMATCH if self.problems else OK)

    def count(self, column: str, found: int, expected: int) -> None:
        self.cells[column] = str(found) if found == expected else f"{found} (expected {expected})"
        if found != expected:
            self.problems.append(f"{column}: {found}, expected {expected}")


def _files_on_disk(folder: Path) -> set[Path]:
    if not folder.is_dir():
        return set()
    return {p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS}


def _check_decathlon_domain(root: Path, spec: DomainSpec, stats: Path) -> DomainCheck:
    check = DomainCheck(spec.name)
    if not (root / "data" / spec.directory).is_dir():
        check.absent = True
        check.problems.append(f"no folder {root / 'data' / spec.directory}")
        return check
    listed: set[Path] = set()
    try:
        for split in ("train", "val", "test"):
            ds = DecathlonDataset(root, spec, split)
            check.count(split, len(ds), spec.split_sizes[split])
            listed.update(ds.file_paths)
            if split == "train":
                check.count("classes", ds.num_classes, spec.num_classes)
            if split == "test":
                check.cells["test labels"] = "present" if ds.labelled else "absent (stripped only)"
    except DataError as exc:
        check.problems.append(str(exc))
        check.cells["files"] = "unreadable"
        return check
    on_disk = _files_on_disk(root / "data" / spec.directory)
    missing, unlisted = len(listed - on_disk), len(on_disk - listed)
    agree = not missing and not unlisted
    check.cells["files"] = "agree" if agree else f"{missing} missing, {unlisted} unlisted"
    if missing or unlisted:
        check.problems.append(f"image files: {missing} listed but missing, {unlisted} on disk but not listed")
    if not stats.is_file():
        check.cells["mean/std"] = "no pickle"
        check.problems.append(f"no {stats}")
    else:
        try:
            keys = [f"{spec.name}{k}" for k in ("mean", "std")]
            present = all(k in read_stats_pickle(stats) for k in keys)
            check.cells["mean/std"] = "present" if present else "no keys"
            if not present:
                check.problems.append(f"{stats} has no {' / '.join(keys)}")
        except DataError as exc:
            check.cells["mean/std"] = "unreadable"
            check.problems.append(str(exc))
    return check


def verify_decathlon(root: str | os.PathLike, specs: Sequence[DomainSpec]) -> list[DomainCheck]:
    """Check every Decathlon-layout spec of `specs` under `root` (the ``decathlon-1.0`` folder or its
    parent); one :class:`DomainCheck` per spec. Raises DataError when `root` is not a directory."""
    dec = decathlon_root(root)
    stats = dec / MEAN_STD_FILE
    return [_check_decathlon_domain(dec, s, stats) for s in specs if s.layout == "decathlon"]


def _check_extra_domain(root: Path, spec: DomainSpec) -> DomainCheck:
    check = DomainCheck(spec.name, cells={"val": "-", "mean/std": "-", "test labels": "-"})
    if not (root / spec.directory).is_dir():
        check.absent = True
        check.problems.append(f"no folder {root / spec.directory}")
        return check
    try:
        train, test = build_dataset(spec, root, "trainval"), build_dataset(spec, root, "test")
    except DataError as exc:
        check.problems.append(str(exc))
        check.cells["files"] = "unreadable"
        return check
    check.count("classes", train.num_classes, spec.num_classes)
    check.count("train", len(train), spec.split_sizes["train"])
    check.count("test", len(test), spec.split_sizes["test"])
    check.cells["files"] = "agree"
    return check


def verify_extra(root: str | os.PathLike, specs: Sequence[DomainSpec]) -> list[DomainCheck]:
    """Check every extra-dataset spec of `specs` (layouts ``folder``/``cub``) under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"extra root {root} is not a directory; expected the folder holding cubs/, "
                        "stanford-cars/, ...")
    return [_check_extra_domain(root, s) for s in specs if s.layout != "decathlon"]


def failures(checks: Sequence[DomainCheck], required: Sequence[str] = ()) -> list[str]:
    """One line per problem that makes the data unusable: mismatches, absent `required` domains, or no
    domain present at all."""
    lines = [f"{c.domain}: {'; '.join(c.problems)}" for c in checks if c.status == MISMATCH]
    lines += [f"{c.domain}: absent ({c.problems[0]})" for c in checks if c.absent and c.domain in required]
    if checks and all(c.absent for c in checks):
        lines.append("no domain is present")
    return lines


def print_table(checks: Sequence[DomainCheck], title: str, stream=None) -> None:
    """Print the checks as one rich table (plain text when `stream` is not a terminal)."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in COLUMNS:
        table.add_column(column)
    style = {OK: "green", MISMATCH: "bold red", ABSENT: "yellow"}
    for c in checks:
        cells = [c.cells.get(col, "") for col in COLUMNS[1:-1]]
        table.add_row(c.domain, *cells, f"[{style[c.status]}]{c.status}[/]")
    Console(file=stream or sys.stdout, width=160).print(table)


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``verify`` to the subcommands of ``python -m decathlon``."""
    parser = sub.add_parser("verify", parents=parents, help="check data roots against the known sizes")
    parser.add_argument("--data-root", type=Path, default=None, help=f"the {DECATHLON_FOLDER} folder")
    parser.add_argument("--extra-root", type=Path, default=None,
                        help="the folder holding cubs/, flowers/, ...")
    parser.add_argument("--sizes", default="real", choices=("real", "mini"),
                        help="class counts and split sizes to expect: the real datasets (default) or the "
                             "generated suite")
    parser.add_argument("--domains", default=None, type=lambda v: [d for d in v.split(",") if d],
                        help="comma-separated domains to check (each must be present)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m decathlon verify``; 0 when everything checked agrees, 1 otherwise."""
    if args.data_root is None and args.extra_root is None:
        raise DataError("verify needs --data-root (the decathlon-1.0 folder) and/or --extra-root")
    specs = suite_domains("mini" if args.sizes == "mini" else "all")
    if args.domains:
        known = {s.name for s in specs}
        unknown = sorted(set(args.domains) - known)
        if unknown:
            raise DataError(f"--domains {','.join(unknown)}: unknown; known: {', '.join(sorted(known))}")
        specs = tuple(s for s in specs if s.name in args.domains)
    checks: list[DomainCheck] = []
    if args.data_root is not None:
        checks += verify_decathlon(args.data_root, specs)
    if args.extra_root is not None:
        checks += verify_extra(args.extra_root, specs)
    roots = [str(r) for r in (args.data_root, args.extra_root) if r is not None]
    print_table(checks, f"verify ({args.sizes} sizes): {' and '.join(roots)}")
    bad = failures(checks, args.domains or ())
    for line in bad:
        print(f"error: {line}", file=sys.stderr)
    print("verify: " + ("all checks passed" if not bad else f"{len(bad)} problem(s)"))
    return 1 if bad else 0
