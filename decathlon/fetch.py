"""Resumable, verified HTTP downloads and the manifest that records them (standard library only).

:func:`fetch` downloads one URL into a ``<name>.part`` file beside its destination and renames it into
place only once it is whole:

- an interrupted download resumes with an HTTP ``Range`` request from the bytes already in the
  ``.part`` file (a server that ignores the range sends the whole file again, which is written anew);
- every failure that may pass (connection reset or cut, timeout, HTTP 408/429/5xx) is retried with
  exponential backoff, resuming each time;
- the byte count is checked against ``Content-Length`` (or ``Content-Range``); the sha256 of the file is
  computed and, when a published one is known, compared (a mismatch deletes the download);
- a rich progress bar shows bytes, speed and time left when stderr is a terminal.

:func:`record` keeps ``download-manifest.json`` beside the data: for every file, its URL, size, sha256
and how it was verified, so that a later run (and a reader) knows what was downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from decathlon.errors import DataError, DownloadError
from decathlon.io import atomic_write_json

CHUNK = 1 << 20  # bytes per read and per hash update
MANIFEST = "download-manifest.json"  # in the download root
RETRY_STATUS = (408, 429, 500, 502, 503, 504)  # HTTP statuses worth another try


@dataclass(frozen=True)
class FetchOptions:
    """How :func:`fetch` behaves: tries, backoff (seconds, doubled after every failed try), socket
    timeout (seconds), progress bar on/off, and the sleep function (tests pass one that does not wait)."""

    retries: int = 5  # further tries after the first
    backoff_s: float = 2.0
    timeout_s: float = 60.0
    progress: bool = True
    sleep: Callable[[float], None] = time.sleep


DEFAULT_OPTIONS = FetchOptions()


@dataclass(frozen=True)
class Fetched:
    """A finished download: where it is, its size in bytes, its sha256 and how it was verified."""

    path: Path
    url: str
    size: int
    sha256: str
    verified: str  # "published sha256" or "size (Content-Length)"

    def manifest_entry(self) -> dict[str, Any]:
        return {"url": self.url, "size": self.size, "sha256": self.sha256, "verified": self.verified,
                "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


class _Retry(Exception):
    """A failure that may pass: the download is tried again (resuming from the .part file)."""


def part_path(dest: Path) -> Path:
    """The file a download of `dest` is written to until it is whole."""
    return dest.with_name(dest.name + ".part")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in :data:`CHUNK` pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a ``Content-Range: bytes a-b/N`` (or ``bytes */N``) header."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (value or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _open(url: str, part: Path, have: int, timeout_s: float) -> http.client.HTTPResponse | None:
    """Open `url`, asking for the bytes from `have` on; None when the .part file is already whole."""
    headers = {"User-Agent": "spottune-decathlon", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and have:  # nothing left after `have`: whole if the total says so
            if _content_range(exc.headers.get("Content-Range"))[1] == have:
                return None
            part.unlink()  # longer than the file now served: start over
            raise _Retry(f"the server refused to resume at byte {have}; starting over") from None
        if exc.code in RETRY_STATUS:
            raise _Retry(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; expected the file") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Retry(str(getattr(exc, "reason", exc))) from None


def _attempt(url: str, part: Path, timeout_s: float, bar: Any) -> None:
    """One try: append the missing bytes to `part`; raises _Retry when it ends short."""
    have = part.stat().st_size if part.exists() else 0
    response = _open(url, part, have, timeout_s)
    if response is None:
        return
    with response:
        if response.status == 206:
            start, total = _content_range(response.headers.get("Content-Range"))
            if start != have:
                part.unlink(missing_ok=True)
                raise _Retry(f"the server resumed at byte {start}, not {have}; starting over")
        else:  # 200: the whole file (the server ignored or was not asked for a range)
            have = 0
            length = response.headers.get("Content-Length")
            total = int(length) if length is not None else None
        content_type = response.headers.get("Content-Type", "")
        if content_type.startswith("text/html"):
            raise DownloadError(f"{url} answered with a web page ({content_type}), not the file; "
                                "open it in a browser and download the file by hand")
        task = bar.add_task(part.name[: -len(".part")], total=total, completed=have) if bar else None
        try:
            with open(part, "ab" if have else "wb") as f:
                while block := response.read(CHUNK):
                    f.write(block)
                    if bar:
                        bar.update(task, advance=len(block))
        except (http.client.HTTPException, OSError) as exc:
            got = part.stat().st_size
            raise _Retry(f"connection lost after {got} bytes ({type(exc).__name__})") from None
        finally:
            size = part.stat().st_size
            if bar and (total is None or size != total):  # a finished bar stays on screen, a broken one goes
                bar.remove_task(task)
    if total is not None and size != total:
        raise _Retry(f"connection closed after {size} of {total} bytes")


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Any]:
    """A rich progress bar (bytes, speed, time left) on stderr, or None when off or not a terminal."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        yield bar


def fetch(url: str, dest: str | os.PathLike, *, sha256: str | None = None,
          options: FetchOptions = DEFAULT_OPTIONS) -> Fetched:
    """Download `url` to `dest` (resuming a ``dest.part`` left by an earlier try) and verify it.

    The byte count must match the server's Content-Length; when `sha256` (the published hex digest) is
    given, the file's sha256 must equal it. Returns the :class:`Fetched` record (size in bytes, sha256).

    Raises DownloadError when every try failed (the ``.part`` file is kept: run again to resume) or the
    server answered with an error or a web page; DataError when the sha256 differs (the download is
    deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = part_path(dest)
    last = ""
    with progress_bar(options.progress) as bar:
        for attempt in range(options.retries + 1):
            if attempt:
                options.sleep(options.backoff_s * 2 ** (attempt - 1))
            try:
                _attempt(url, part, options.timeout_s, bar)
                break
            except _Retry as exc:
                last = str(exc)
        else:
            raise DownloadError(f"{url}: {last} (after {options.retries + 1} tries); {part} keeps what "
                                "arrived: run the same command again to resume")
    digest = sha256_file(part)
    if sha256 is not None and digest != sha256.lower():
        part.unlink()
        raise DataError(f"{url}: sha256 {digest} differs from the published {sha256}; the download was "
                        "deleted, run the command again")
    os.replace(part, dest)
    return Fetched(dest, url, dest.stat().st_size, digest,
                   "published sha256" if sha256 else "size (Content-Length)")


def read_manifest(root: Path) -> dict[str, Any]:
    """The manifest of a download root (``{file name: entry}``), empty when there is none yet."""
    import json

    path = Path(root) / MANIFEST
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read {path}: {exc}; expected the JSON written by a download "
                        "(delete it to start the bookkeeping afresh)") from None
    if not isinstance(data, dict):
        raise DataError(f"{path} holds a {type(data).__name__}; expected a JSON object")
    return data


def record(root: Path, name: str, **entry: Any) -> dict[str, Any]:
    """Merge `entry` into the manifest entry of `name` (written atomically); returns the new entry."""
    manifest = read_manifest(root)
    manifest[name] = {**manifest.get(name, {}), **entry}
    atomic_write_json(Path(root) / MANIFEST, manifest, sort_keys=True)
    return manifest[name]
