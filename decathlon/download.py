"""``python -m decathlon download {decathlon,extra,weights}``: the real data and weights, in place.

Sources (the only URLs and digests in this file, each with where it comes from):

- The Decathlon devkit and data archives: ``download_data.sh`` of the residual-adapters project
  (github.com/srebuffi/residual_adapters) fetches ``decathlon-1.0-devkit.tar.gz`` and
  ``decathlon-1.0-data.tar.gz`` from http://www.robots.ox.ac.uk/~vgg/share/, unpacks the devkit (giving
  ``decathlon-1.0/``), unpacks the data archive in ``decathlon-1.0/data/`` and then every ``<domain>.tar``
  in it there. No sha256 is published for them: they are verified by their Content-Length and by
  reading every archive through while unpacking.
- ``labels_test.zip`` (the labelled ``<domain>_test.json`` files) and ``decathlon_mean_std.pickle``: files
  of that repository, side by side at its root; the sha256 below are those of the files at commit
  5c51aa3 (2020-12-19, the commit that added ``labels_test.zip``; the pickle is unchanged since 2018).
- ``resnet26_pretrained.t7``: the Google Drive file the same README links as "a ResNet 26" (since its
  2018-10-10 revision); Drive answers large files with a confirmation page, which is reported as such.
- The extra datasets: the Piggyback project (github.com/arunmallya/piggyback) distributes them in
  PyTorch ``ImageFolder`` form from one Box folder, which has no direct links; ``download extra`` prints
  that page and the layout, or fetches ``<piggyback folder>.tar.gz`` files from a mirror (``--base-url``).
- ImageNet (``imagenet12``) is not in the public data archive (ImageNet's terms need an account at
  image-net.org); :data:`IMAGENET_HINT` says what to do.

Every step is idempotent and resumable: downloads resume from their ``.part`` file, every archive is
unpacked into a ``.unpack-*`` folder beside its destination and moved into place only when complete (so
an interrupted unpack never leaves a domain folder that looks complete; leftover ``.unpack-*`` folders
are removed by the next run), and ``download-manifest.json`` in the root records the URL, size and
sha256 of every file downloaded and what has been unpacked. Folders already in place are never replaced.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import MappingProxyType

from decathlon.domains import DECATHLON_COLUMNS, EXTRA_COLUMNS, IMAGENET_HINT
from decathlon.errors import ConfigError, DataError, DownloadError
from decathlon.fetch import DEFAULT_OPTIONS, Fetched, FetchOptions, fetch, read_manifest, record, sha256_file

DECATHLON_FOLDER = "decathlon-1.0"
OFFICIAL_DATA_URL = "http://www.robots.ox.ac.uk/~vgg/share"  # download_data.sh (residual_adapters)
DEVKIT_ARCHIVE = "decathlon-1.0-devkit.tar.gz"
DATA_ARCHIVE = "decathlon-1.0-data.tar.gz"
RESIDUAL_ADAPTERS = ("https://raw.githubusercontent.com/srebuffi/residual_adapters/"
                     "5c51aa3ff842e8d77f12dc7215750fe6adc0d0f7")
LABELS_ARCHIVE = "labels_test.zip"
MEAN_STD_FILE = "decathlon_mean_std.pickle"
OFFICIAL_LABELS_URL = f"{RESIDUAL_ADAPTERS}/{LABELS_ARCHIVE}"
OFFICIAL_MEAN_STD_URL = f"{RESIDUAL_ADAPTERS}/{MEAN_STD_FILE}"  # beside labels_test.zip
# sha256 of the files at the official locations (computed from the repository's blobs at that commit)
PUBLISHED_SHA256 = MappingProxyType({
    OFFICIAL_LABELS_URL: "505e4bb6053195233772662da1712184d381de8ac3677b6c4c582ad55c23b2da",
    OFFICIAL_MEAN_STD_URL: "b3a17ce025251638525fef26871470241846f4fa40b3bf7c9d4157fd98fc771e",
})

WEIGHTS_FILE = "resnet26_pretrained.t7"
RESNET26_DRIVE_ID = "1y7gz_9KfjY8O4Ue3yHE7SpwA90Ua1mbR"  # residual_adapters README, 2018-10-10 onwards
OFFICIAL_WEIGHTS_PAGE = f"https://drive.google.com/open?id={RESNET26_DRIVE_ID}"
OFFICIAL_WEIGHTS_URL = f"https://drive.google.com/uc?export=download&id={RESNET26_DRIVE_ID}"
CONVERTED_WEIGHTS = "resnet26.pt"

PIGGYBACK_DATA_PAGE = "https://uofi.box.com/s/ixncr3d85guosajywhf7yridszzg5zsq"  # piggyback README
# harness name -> folder name in the Piggyback distribution (its scripts/run_piggyback_training.sh)
PIGGYBACK_FOLDERS = MappingProxyType({
    "cubs": "cubs_cropped", "stanford-cars": "stanford_cars_cropped", "flowers": "flowers",
    "wikiart": "wikiart", "sketches": "sketches",
})

SOURCE_DOMAIN = "imagenet12"
UNPACK_PREFIX = ".unpack-"


# --------------------------------------------------------------------------------------------------
# unpacking: into a temporary folder, moved into place when complete


def _remove_leftovers(folder: Path) -> None:
    """Remove the ``.unpack-*`` folders an interrupted run left in `folder`."""
    if folder.is_dir():
        for path in folder.glob(UNPACK_PREFIX + "*"):
            shutil.rmtree(path, ignore_errors=True)


def _corrupt(archive: Path, exc: BaseException) -> DataError:
    reason = " ".join(str(exc).split())  # tarfile's "method gz/bz2/...": one line
    return DataError(f"{archive} is corrupt or truncated ({type(exc).__name__}: {reason}); delete it and run "
                     "the command again to download it anew")


def _extract_tar(archive: Path, into: Path) -> None:
    """Extract every member of `archive` into `into`, reading it through (unsafe paths are refused)."""
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _corrupt(archive, exc) from None


def _merge(src: Path, dst: Path) -> None:
    """Move the tree `src` into `dst`: entries `dst` lacks are renamed in, folders present are merged,
    files present are kept."""
    if not dst.exists():
        os.replace(src, dst)
        return
    if src.is_dir() and dst.is_dir():
        for child in src.iterdir():
            _merge(child, dst / child.name)


def _unpack_folder(archive: Path, parent: Path, names: Sequence[str], target: str) -> Path:
    """Unpack `archive` into a temporary folder in `parent` and move the first top-level folder of
    `names` found in it to ``parent/target``; returns that path. DataError when none is there."""
    with tempfile.TemporaryDirectory(prefix=UNPACK_PREFIX, dir=parent) as tmp:
        _extract_tar(archive, Path(tmp))
        found = next((Path(tmp) / n for n in names if (Path(tmp) / n).is_dir()), None)
        if found is None:
            top = sorted(p.name for p in Path(tmp).iterdir())
            raise DataError(f"{archive} holds {top}; expected a folder {' or '.join(names)}/")
        _merge(found, parent / target)
    return parent / target


# --------------------------------------------------------------------------------------------------
# the Decathlon


def _select(given: Sequence[str] | None, known: Sequence[str], flag: str) -> list[str]:
    """`given` names (all of `known` when None); ConfigError naming `flag` for an unknown one."""
    names = list(known if given is None else given)
    unknown = sorted(set(names) - set(known))
    if unknown:
        raise ConfigError(f"{flag} {','.join(unknown)}: unknown; known: {', '.join(known)}")
    return names


def _fetch_once(root: Path, url: str, dest: Path, options: FetchOptions) -> Fetched | None:
    """Fetch `url` to `dest` unless it is there already; record it in the manifest.

    A file already at `dest` that the manifest does not know (e.g. fetched by hand) is adopted: its
    sha256 is recorded (and compared with the published one, if any); archives are read through when
    unpacked. Returns None when nothing was fetched.
    """
    entry = read_manifest(root).get(dest.name, {})
    published = PUBLISHED_SHA256.get(url)
    if dest.is_file() and entry.get("url") == url and entry.get("size") == dest.stat().st_size:
        return None
    if dest.is_file() and not entry:
        digest = sha256_file(dest)
        if published and digest != published:
            raise DataError(f"{dest} (found in place) has sha256 {digest}, not the published {published}; "
                            "delete it and run the command again")
        record(root, dest.name, url=url, size=dest.stat().st_size, sha256=digest,
               verified="published sha256" if published else "found in place")
        return None
    fetched = fetch(url, dest, sha256=published, options=options)
    record(root, dest.name, **fetched.manifest_entry())
    return fetched


def _done(root: Path, name: str) -> bool:
    return bool(read_manifest(root).get(name, {}).get("unpacked"))


def _finish_archive(root: Path, archive: Path, keep: bool, say: Callable[[str], None]) -> None:
    record(root, archive.name, unpacked=True)
    if not keep:
        archive.unlink(missing_ok=True)
        say(f"unpacked and removed {archive.name} (its sha256 is in {root / 'download-manifest.json'})")


def _unpack_domains(archive: Path, data: Path, domains: Sequence[str]) -> list[str]:
    """Unpack the ``<domain>.tar`` members of the data archive for `domains` (those not in `data` yet)
    into ``data/<domain>/``, reading the whole archive through; returns the domains the archive holds."""
    held = []
    try:
        with tarfile.open(archive, "r|*") as outer:  # one pass over the stream, no seeking
            for member in outer:
                match = re.fullmatch(r"(?:.*/)?([^/]+)\.tar", member.name)
                if not (member.isfile() and match):
                    continue
                domain = match.group(1)
                held.append(domain)
                if domain not in domains or (data / domain).exists():
                    continue
                with tempfile.TemporaryDirectory(prefix=UNPACK_PREFIX + domain + "-", dir=data) as tmp:
                    inner = Path(tmp) / f"{domain}.tar"
                    with open(inner, "wb") as f:
                        shutil.copyfileobj(outer.extractfile(member), f)
                    _unpack_folder(inner, Path(tmp), [domain], "unpacked")
                    os.replace(Path(tmp) / "unpacked", data / domain)
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _corrupt(archive, exc) from None
    return held


def _unpack_labels(archive: Path, annotations: Path) -> list[str]:
    """Put the ``<domain>_test.json`` files of `archive` (a zip, CRC-checked) into `annotations`."""
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise DataError(f"{archive}: member {bad} fails its CRC check; delete the file and run again")
            names = [n for n in z.namelist() if re.fullmatch(r"[a-z0-9-]+_test\.json", Path(n).name)]
            if not names:
                raise DataError(f"{archive} holds no <domain>_test.json file; expected the labelled test "
                                "annotations of residual_adapters' labels_test.zip")
            with tempfile.TemporaryDirectory(prefix=UNPACK_PREFIX, dir=annotations) as tmp:
                for name in names:
                    target = Path(tmp) / Path(name).name
                    target.write_bytes(z.read(name))
                for name in names:
                    os.replace(Path(tmp) / Path(name).name, annotations / Path(name).name)
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as exc:
        raise _corrupt(archive, exc) from None
    return sorted(Path(n).name for n in names)


def _check_mean_std(path: Path, domain: str) -> None:
    from decathlon.data import load_mean_std
    from decathlon.domains import get_domain

    load_mean_std(path.parent, get_domain(domain))  # DataError names the file when it is not readable


def _data_step(root: Path, data: Path, url: str, wanted: Sequence[str], explicit: bool, keep: bool,
               options: FetchOptions, say: Callable[[str], None]) -> None:
    """Fetch the data archive when a wanted domain it may hold is not in `data` yet, and unpack those.

    The manifest remembers which domains the archive holds (``holds``), so later runs fetch it only
    for those. `explicit`: the domains were named (``--domains``), and one the archive lacks is an error.
    """
    archive = root / DATA_ARCHIVE
    holds = read_manifest(root).get(DATA_ARCHIVE, {}).get("holds")
    missing = [d for d in wanted if not (data / d).is_dir()]
    todo = [d for d in missing if d != SOURCE_DOMAIN and (holds is None or d in holds)]
    if todo:
        _fetch_once(root, url, archive, options)
        holds = _unpack_domains(archive, data, missing)
        record(root, DATA_ARCHIVE, holds=holds)
    absent = sorted(set(missing) - set(holds or ()) - {SOURCE_DOMAIN})  # imagenet12: never in the archive
    if explicit and absent and holds is not None:
        raise DataError(f"{archive.name} holds no {', '.join(d + '.tar' for d in absent)}; it holds "
                        f"{', '.join(holds) or 'no domain archive'}")
    if not todo:
        return
    if all((data / d).is_dir() for d in holds):
        _finish_archive(root, archive, keep, say)
    else:
        say(f"kept {archive} for the domains not unpacked yet (--domains)")


def download_decathlon(root: str | os.PathLike, *, base_url: str = OFFICIAL_DATA_URL,
                       labels_url: str = OFFICIAL_LABELS_URL, domains: Sequence[str] | None = None,
                       keep_archives: bool = False, options: FetchOptions = DEFAULT_OPTIONS,
                       say: Callable[[str], None] = print) -> Path:
    """Download and unpack the Decathlon into ``root/decathlon-1.0`` and return that path.

    `base_url` is the folder of the devkit and data archives, `labels_url` the URL of
    ``labels_test.zip`` (the statistics pickle is fetched from the same folder). `domains` limits the
    domains unpacked from the data archive (default: all it holds). Archives are removed once unpacked
    unless `keep_archives`. Re-running skips what is done. Raises DownloadError (network) or DataError
    (corrupt archive, wrong content), each naming the file.
    """
    wanted = _select(domains, DECATHLON_COLUMNS, "--domains")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dec = root / DECATHLON_FOLDER
    base_url = base_url.rstrip("/")
    _remove_leftovers(root)

    devkit = root / DEVKIT_ARCHIVE
    if not (_done(root, DEVKIT_ARCHIVE) and (dec / "annotations").is_dir()):
        _fetch_once(root, f"{base_url}/{DEVKIT_ARCHIVE}", devkit, options)
        _unpack_folder(devkit, root, [DECATHLON_FOLDER], DECATHLON_FOLDER)
        _finish_archive(root, devkit, keep_archives, say)

    data = dec / "data"
    data.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(data)
    _data_step(root, data, f"{base_url}/{DATA_ARCHIVE}", wanted, domains is not None, keep_archives,
               options, say)

    annotations = dec / "annotations"
    annotations.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(annotations)
    labels = root / LABELS_ARCHIVE
    if not _done(root, LABELS_ARCHIVE):
        _fetch_once(root, labels_url, labels, options)
        say(f"labelled test annotations: {', '.join(_unpack_labels(labels, annotations))}")
        _finish_archive(root, labels, keep_archives, say)

    stats = dec / MEAN_STD_FILE
    if not stats.is_file():
        _fetch_once(root, f"{labels_url.rsplit('/', 1)[0]}/{MEAN_STD_FILE}", stats, options)
        _check_mean_std(stats, wanted[0])

    present = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
    say(f"{dec}: {len(present)} domains ({', '.join(present)})")
    if SOURCE_DOMAIN in wanted and not (data / SOURCE_DOMAIN).is_dir():
        say(IMAGENET_HINT)
    return dec


# --------------------------------------------------------------------------------------------------
# the extra datasets


def extra_instructions(root: Path, names: Iterable[str]) -> list[str]:
    """What to do for datasets without a public direct link: the page and the layout to unpack into."""
    lines = [f"The extra datasets have no public direct link: download them from the Piggyback project's "
             f"page {PIGGYBACK_DATA_PAGE} and unpack each as a class-per-folder tree:"]
    for name in names:
        lines.append(f"  {PIGGYBACK_FOLDERS[name]}  ->  {root / name}/{{train,test}}/<class>/<image>")
    lines.append("or pass --base-url of a mirror holding <piggyback folder>.tar.gz files "
                 f"(e.g. {PIGGYBACK_FOLDERS['cubs']}.tar.gz)")
    return lines


def download_extra(root: str | os.PathLike, *, base_url: str | None = None,
                   datasets: Sequence[str] | None = None, keep_archives: bool = False,
                   options: FetchOptions = DEFAULT_OPTIONS, say: Callable[[str], None] = print) -> Path:
    """Put the extra datasets under ``root/<name>/{train,test}/<class>/`` and return `root`.

    Without `base_url` nothing can be downloaded (the Piggyback distribution has no direct links): the
    page and the layout are printed. With it, ``<base_url>/<piggyback folder>.tar.gz`` is fetched for
    every dataset not yet in place, holding ``<piggyback folder>/`` (or ``<name>/``) with ``train/`` and
    ``test/``. Raises DownloadError or DataError naming the file.
    """
    names = _select(datasets, EXTRA_COLUMNS, "--datasets")
    root = Path(root)
    missing = [n for n in names if not (root / n).is_dir()]
    if not missing:
        say(f"{root}: {', '.join(names)} already in place")
        return root
    if base_url is None:
        for line in extra_instructions(root, missing):
            say(line)
        return root
    root.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(root)
    for name in missing:
        folder = PIGGYBACK_FOLDERS[name]
        archive = root / f"{folder}.tar.gz"
        _fetch_once(root, f"{base_url.rstrip('/')}/{archive.name}", archive, options)
        path = _unpack_folder(archive, root, [folder, name], name)
        lacking = [s for s in ("train", "test") if not (path / s).is_dir()]
        if lacking:
            raise DataError(f"{archive} unpacked into {path} without {', '.join(lacking)}/; expected "
                            "<name>/{train,test}/<class>/<image>")
        _finish_archive(root, archive, keep_archives, say)
    say(f"{root}: {', '.join(n for n in names if (root / n).is_dir())}")
    return root


# --------------------------------------------------------------------------------------------------
# weights


def download_weights(root: str | os.PathLike, *, url: str = OFFICIAL_WEIGHTS_URL, convert: bool = False,
                     options: FetchOptions = DEFAULT_OPTIONS, say: Callable[[str], None] = print) -> Path:
    """Download ``resnet26_pretrained.t7`` into `root` (and with `convert`, write ``resnet26.pt`` in the
    harness format through :func:`decathlon.networks.official.convert_official`); returns the file to pass to
    ``--pretrained``. Raises DownloadError (a web page instead of the file names the page to use)."""
    root = Path(root)
    target = root / WEIGHTS_FILE
    try:
        if not target.is_file():
            fetched = _fetch_once(root, url, target, options)
            if fetched is not None:
                say(f"{target}: {fetched.size} bytes, sha256 {fetched.sha256}")
    except DownloadError as exc:
        if url != OFFICIAL_WEIGHTS_URL:
            raise
        raise DownloadError(f"{exc} (the file's page: {OFFICIAL_WEIGHTS_PAGE}; save it as {target})") \
            from None
    if not convert:
        return target
    from decathlon.networks.official import convert_official  # torch: imported only when converting

    converted = root / CONVERTED_WEIGHTS
    _, report = convert_official(str(target), str(converted))
    say(report.summary())
    say(f"wrote {converted}")
    return converted


# --------------------------------------------------------------------------------------------------
# command line


def _csv(value: str) -> list[str]:
    return [v for v in value.split(",") if v]


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """Add ``download {decathlon,extra,weights}`` to the subcommands of ``python -m decathlon``."""
    parser = sub.add_parser("download", parents=parents, help="download and unpack the real data or weights")
    what = parser.add_subparsers(dest="what", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", required=True, type=Path, help="folder to download and unpack into")
    common.add_argument("--keep-archives", action="store_true", help="keep the archives once unpacked")
    common.add_argument("--retries", type=int, default=5, help="further tries per file (default 5)")
    common.add_argument("--no-progress", action="store_true", help="no progress bar")
    dec = what.add_parser("decathlon", parents=parents + [common],
                          help="the Decathlon (devkit, data, labels)")
    dec.add_argument("--base-url", default=OFFICIAL_DATA_URL,
                     help=f"folder of {DEVKIT_ARCHIVE} and {DATA_ARCHIVE} (default {OFFICIAL_DATA_URL})")
    dec.add_argument("--labels-url", default=OFFICIAL_LABELS_URL,
                     help=f"URL of {LABELS_ARCHIVE}; {MEAN_STD_FILE} is fetched from the same folder")
    dec.add_argument("--domains", type=_csv, default=None, help="comma-separated domains (default: all)")
    extra = what.add_parser("extra", parents=parents + [common], help="the five extra datasets")
    extra.add_argument("--base-url", default=None, help="a mirror holding <piggyback folder>.tar.gz files")
    extra.add_argument("--datasets", type=_csv, default=None,
                       help=f"comma-separated, of {','.join(EXTRA_COLUMNS)}")
    weights = what.add_parser("weights", parents=parents + [common], help="the residual-adapters ResNet-26")
    weights.add_argument("--url", default=OFFICIAL_WEIGHTS_URL, help=f"URL of {WEIGHTS_FILE}")
    weights.add_argument("--convert", action="store_true",
                         help=f"also write {CONVERTED_WEIGHTS} (harness format)")


def run(args: argparse.Namespace) -> int:
    """Run ``python -m decathlon download ...``; returns the exit status."""
    options = FetchOptions(retries=args.retries, progress=not args.no_progress)
    if args.what == "decathlon":
        dec = download_decathlon(args.root, base_url=args.base_url, labels_url=args.labels_url,
                                 domains=args.domains, keep_archives=args.keep_archives, options=options)
        print(f"next: python -m decathlon verify --data-root {dec}")
    elif args.what == "extra":
        download_extra(args.root, base_url=args.base_url, datasets=args.datasets,
                       keep_archives=args.keep_archives, options=options)
    else:
        path = download_weights(args.root, url=args.url, convert=args.convert, options=options)
        print(f"pass --pretrained {path}")
    return 0
