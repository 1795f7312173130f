"""``python -m decathlon download`` / ``verify`` against a local HTTP server (127.0.0.1 only).

The served archives are built from the generated suite in exactly the real layout: the devkit
``decathlon-1.0-devkit.tar.gz`` gives ``decathlon-1.0/annotations/`` (train, val, test_stripped), the
data ``decathlon-1.0-data.tar.gz`` holds one ``<domain>.tar`` per domain (``<domain>/{train,val,test}/``,
no imagenet12, like the public archive), ``labels_test.zip`` holds ``<domain>_test.json`` and
``decathlon_mean_std.pickle`` sits beside it. The server honours Range requests (or ignores them on
demand) and can cut a connection after a given number of bytes.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import socket
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from decathlon import download, verify
from decathlon.__main__ import main
from decathlon.config import RunConfig
from decathlon.data import DecathlonDataset
from decathlon.domains import suite_domains
from decathlon.errors import DataError, DownloadError
from decathlon.fetch import FetchOptions, fetch, part_path, read_manifest

DOMAINS = ("aircraft", "dtd", "vgg-flowers")  # the served data archive (a few domains keep it small)
LABELLED = DOMAINS + ("imagenet12",)  # devkit annotations and labelled test files (imagenet12 too)
NO_WAIT = FetchOptions(retries=3, backoff_s=0.5, progress=False, sleep=lambda s: None)


# --------------------------------------------------------------------------------------------------
# the server


@dataclass
class Served:
    """What the server serves and how it misbehaves; `log` records (path, Range header) per request."""

    files: dict[str, bytes] = field(default_factory=dict)
    cuts: dict[str, list[int]] = field(default_factory=dict)  # path -> bytes sent before each cut
    honour_range: bool = True
    content_type: str = "application/octet-stream"
    log: list[tuple[str, str | None]] = field(default_factory=list)

    def requests(self, name: str) -> list[str | None]:
        return [r for p, r in self.log if p.endswith("/" + name)]


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 - the http.server interface
        served: Served = self.server.served
        served.log.append((self.path, self.headers.get("Range")))
        body = served.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and served.honour_range:
            start = int(match.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", served.content_type)
        self.end_headers()
        cuts = served.cuts.get(self.path)
        if cuts:  # send part of the body, then drop the connection
            self.wfile.write(payload[: cuts.pop(0)])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    """(base URL, Served) of a threaded HTTP server on 127.0.0.1."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.served = Served()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd.served
    httpd.shutdown()
    httpd.server_close()


# --------------------------------------------------------------------------------------------------
# fixture archives in the real layout


def _tar(entries: list[tuple[str, Path | bytes]], gz: bool) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as tar:
        for name, source in entries:
            if isinstance(source, Path):
                tar.add(source, arcname=name)
            else:
                info = tarfile.TarInfo(name)
                info.size = len(source)
                tar.addfile(info, io.BytesIO(source))
    return buffer.getvalue()


@pytest.fixture(scope="module")
def archives(mini_suite) -> dict[str, bytes]:
    """File name -> bytes of the four files the real download fetches, built from the generated suite."""
    dec = mini_suite.decathlon_root
    notes = [(f"decathlon-1.0/annotations/{d}_{s}.json", dec / "annotations" / f"{d}_{s}.json")
             for d in LABELLED for s in ("train", "val", "test_stripped")]
    data = [(f"{d}.tar", _tar([(d, dec / "data" / d)], gz=False)) for d in DOMAINS]
    labels = io.BytesIO()
    with zipfile.ZipFile(labels, "w", zipfile.ZIP_DEFLATED) as z:
        for d in LABELLED:
            z.write(dec / "annotations" / f"{d}_test.json", f"{d}_test.json")
    return {
        download.DEVKIT_ARCHIVE: _tar(notes, gz=True),
        download.DATA_ARCHIVE: _tar(data, gz=True),
        download.LABELS_ARCHIVE: labels.getvalue(),
        download.MEAN_STD_FILE: (dec / download.MEAN_STD_FILE).read_bytes(),
    }


def _serve(served: Served, archives: dict[str, bytes], **replace: bytes) -> None:
    for name, body in {**archives, **replace}.items():
        folder = "/labels" if name in (download.LABELS_ARCHIVE, download.MEAN_STD_FILE) else "/share"
        served.files[f"{folder}/{name}"] = body


def _args(base: str, root: Path) -> list[str]:
    return ["download", "decathlon", "--root", str(root), "--base-url", f"{base}/share",
            "--labels-url", f"{base}/labels/{download.LABELS_ARCHIVE}", "--no-progress", "--retries", "0"]


def _tree(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------------------------------
# the Decathlon


def test_full_download_gives_the_real_layout_verifies_and_runs(server, archives, mini_suite, tmp_path,
                                                               capsys):
    base, served = server
    _serve(served, archives)
    root = tmp_path / "data"
    assert main(_args(base, root)) == 0
    dec = root / "decathlon-1.0"
    gen = mini_suite.decathlon_root
    for d in DOMAINS:
        assert _tree(dec / "data" / d) == _tree(gen / "data" / d)
    for d in LABELLED:
        for s in ("train", "val", "test_stripped", "test"):
            name = f"{d}_{s}.json"
            assert (dec / "annotations" / name).read_bytes() == (gen / "annotations" / name).read_bytes()
    assert (dec / download.MEAN_STD_FILE).read_bytes() == archives[download.MEAN_STD_FILE]
    assert not (dec / "data" / "imagenet12").exists()
    out = capsys.readouterr().out
    assert "imagenet12 is not in the public Decathlon archive" in out and "--domains" in out
    # archives unpacked and removed; the manifest keeps size and sha256 of each
    assert sorted(p.name for p in root.iterdir()) == ["decathlon-1.0", "download-manifest.json"]
    manifest = read_manifest(root)
    for name, body in archives.items():
        assert manifest[name]["size"] == len(body)
        assert manifest[name]["sha256"] == hashlib.sha256(body).hexdigest()
        assert manifest[name]["verified"] == "size (Content-Length)"  # not the official location
    # a second run downloads nothing
    count = len(served.log)
    assert main(_args(base, root)) == 0 and len(served.log) == count

    assert main(["verify", "--data-root", str(dec), "--sizes", "mini", "--domains", ",".join(DOMAINS)]) == 0
    assert "all checks passed" in capsys.readouterr().out

    from decathlon.engine import run

    config = RunConfig.from_dict({
        "suite": "mini", "method": "finetune", "domain": "dtd", "data_root": str(dec), "width": 0.25,
        "epochs": 1, "batch_size": 8, "eval_batch_size": 80, "num_workers": 0, "limit_train_images": 16,
        "device": "cpu", "protocol": "trainval->test"})
    result = run(config, tmp_path / "run")
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    test = DecathlonDataset(dec, "dtd", "test", suite="mini")
    assert result["eval_split"] == "test" and test.labelled
    assert predictions["labels"] == test.labels and len(predictions["predicted"]) == len(test)


def test_interrupted_download_resumes_with_a_range_request(server, archives, tmp_path):
    base, served = server
    body = archives[download.DATA_ARCHIVE]
    _serve(served, archives)
    served.cuts["/share/" + download.DATA_ARCHIVE] = [len(body) // 3]
    dest = tmp_path / download.DATA_ARCHIVE
    url = f"{base}/share/{download.DATA_ARCHIVE}"
    with pytest.raises(DownloadError, match="run the same command again to resume"):
        fetch(url, dest, options=FetchOptions(retries=0, progress=False))
    assert part_path(dest).stat().st_size == len(body) // 3 and not dest.exists()
    fetched = fetch(url, dest, options=NO_WAIT)  # the next run
    assert served.requests(download.DATA_ARCHIVE) == [None, f"bytes={len(body) // 3}-"]
    assert dest.read_bytes() == body and not part_path(dest).exists()
    assert fetched.sha256 == hashlib.sha256(body).hexdigest() and fetched.size == len(body)


def test_cut_connections_are_retried_with_backoff_and_resumed(server, archives, tmp_path):
    base, served = server
    body = archives[download.DATA_ARCHIVE]
    _serve(served, archives)
    served.cuts["/share/" + download.DATA_ARCHIVE] = [1000, 5000]
    waits = []
    options = FetchOptions(retries=3, backoff_s=0.5, progress=False, sleep=waits.append)
    fetch(f"{base}/share/{download.DATA_ARCHIVE}", tmp_path / "a.tar.gz", options=options)
    assert served.requests(download.DATA_ARCHIVE) == [None, "bytes=1000-", "bytes=6000-"]
    assert waits == [0.5, 1.0] and (tmp_path / "a.tar.gz").read_bytes() == body


def test_a_server_ignoring_range_gets_the_whole_file_again(server, archives, tmp_path):
    base, served = server
    body = archives[download.DATA_ARCHIVE]
    _serve(served, archives)
    served.honour_range = False
    served.cuts["/share/" + download.DATA_ARCHIVE] = [len(body) // 2]
    fetch(f"{base}/share/{download.DATA_ARCHIVE}", tmp_path / "a.tar.gz", options=NO_WAIT)
    assert (tmp_path / "a.tar.gz").read_bytes() == body


def test_a_published_sha256_is_checked_and_a_mismatch_deletes_the_download(server, archives, tmp_path,
                                                                           monkeypatch):
    base, served = server
    _serve(served, archives)
    url = f"{base}/labels/{download.LABELS_ARCHIVE}"
    body = archives[download.LABELS_ARCHIVE]
    good = fetch(url, tmp_path / "ok.zip", sha256=hashlib.sha256(body).hexdigest(), options=NO_WAIT)
    assert good.verified == "published sha256"
    monkeypatch.setattr(download, "PUBLISHED_SHA256", {url: "0" * 64})
    with pytest.raises(DataError, match="differs from the published"):
        download.download_decathlon(tmp_path / "root", base_url=f"{base}/share", labels_url=url,
                                    options=NO_WAIT, say=lambda s: None)
    assert not (tmp_path / "root" / download.LABELS_ARCHIVE).exists()
    assert not part_path(tmp_path / "root" / download.LABELS_ARCHIVE).exists()


def test_a_truncated_archive_is_refused_in_one_line(server, archives, mini_suite, tmp_path, capsys):
    base, served = server
    body = archives[download.DATA_ARCHIVE]
    _serve(served, archives, **{download.DATA_ARCHIVE: body[: len(body) // 2]})  # whole Content-Length
    root = tmp_path / "data"
    assert main(_args(base, root)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert f"{root / download.DATA_ARCHIVE} is corrupt or truncated" in err
    data = root / "decathlon-1.0" / "data"
    for d in DOMAINS:  # a domain is either whole (its .tar was read through) or not there at all
        assert not (data / d).exists() or _tree(data / d) == _tree(mini_suite.decathlon_root / "data" / d)
    assert not list(data.glob(".unpack-*"))


def test_an_interrupted_unpack_leaves_no_complete_looking_domain(server, archives, mini_suite, tmp_path,
                                                                  monkeypatch):
    base, served = server
    _serve(served, archives)
    root = tmp_path / "data"
    real_extractall = tarfile.TarFile.extractall

    def interrupted(self, path, members=None, **kw):
        names = self.getnames()
        if not any(n.startswith("dtd/") for n in names):
            return real_extractall(self, path, members, **kw)
        half = self.getmembers()[: len(names) // 2]
        real_extractall(self, path, half, **kw)
        raise KeyboardInterrupt  # the user presses Ctrl-C halfway through dtd.tar

    monkeypatch.setattr(tarfile.TarFile, "extractall", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download.download_decathlon(root, base_url=f"{base}/share",
                                    labels_url=f"{base}/labels/{download.LABELS_ARCHIVE}", options=NO_WAIT,
                                    say=lambda s: None)
    data = root / "decathlon-1.0" / "data"
    assert (data / "aircraft").is_dir()  # finished before the interruption: kept
    assert not (data / "dtd").exists() and not (data / "vgg-flowers").exists()
    assert not list(data.glob(".unpack-*"))
    # a hard kill would leave the temporary folder behind: the next run removes it and finishes
    (data / ".unpack-dtd-killed" / "dtd" / "train").mkdir(parents=True)
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    download.download_decathlon(root, base_url=f"{base}/share",
                                labels_url=f"{base}/labels/{download.LABELS_ARCHIVE}", options=NO_WAIT,
                                say=lambda s: None)
    assert len(served.requests(download.DATA_ARCHIVE)) == 1  # the archive was kept, not fetched again
    assert not list(data.glob(".unpack-*"))
    for d in DOMAINS:
        assert _tree(data / d) == _tree(mini_suite.decathlon_root / "data" / d)


def test_domains_limits_what_is_unpacked_and_keeps_the_archive(server, archives, tmp_path):
    base, served = server
    _serve(served, archives)
    root = tmp_path / "data"
    args = dict(base_url=f"{base}/share", labels_url=f"{base}/labels/{download.LABELS_ARCHIVE}",
                options=NO_WAIT, say=lambda s: None)
    dec = download.download_decathlon(root, domains=["dtd"], **args)
    assert sorted(p.name for p in (dec / "data").iterdir()) == ["dtd"]
    assert (root / download.DATA_ARCHIVE).is_file()  # still needed by the other domains
    download.download_decathlon(root, **args)
    assert sorted(p.name for p in (dec / "data").iterdir()) == sorted(DOMAINS)
    assert not (root / download.DATA_ARCHIVE).exists()
    assert len(served.requests(download.DATA_ARCHIVE)) == 1
    with pytest.raises(DataError, match="decathlon-1.0-data.tar.gz holds no svhn.tar"):
        download.download_decathlon(root, domains=["svhn"], **args)


def test_a_missing_source_domain_points_at_the_download_help(mini_suite, tmp_path):
    dec = tmp_path / "decathlon-1.0"
    shutil.copytree(mini_suite.decathlon_root / "annotations", dec / "annotations")
    with pytest.raises(DataError) as err:
        DecathlonDataset(dec, "imagenet12", "test", suite="mini")
    assert "\n" not in str(err.value)
    message = str(err.value)
    assert "imagenet12 is not in the public Decathlon archive" in message and "--domains" in message
    with pytest.raises(DataError, match="python -m decathlon download decathlon --root DIR"):
        DecathlonDataset(dec, "dtd", "train", suite="mini")


# --------------------------------------------------------------------------------------------------
# verify


def test_verify_reports_mismatches_and_exits_non_zero(mini_suite, tmp_path, capsys):
    dec = tmp_path / "decathlon-1.0"
    shutil.copytree(mini_suite.decathlon_root, dec)
    specs = suite_domains("mini")
    checks = {c.domain: c for c in verify.verify_decathlon(dec, specs)}
    assert all(c.status == verify.OK for c in checks.values())
    assert checks["dtd"].cells["test labels"] == "present" and checks["dtd"].cells["mean/std"] == "present"
    next((dec / "data" / "dtd" / "val").iterdir()).unlink()
    (dec / "annotations" / "aircraft_test.json").unlink()
    svhn = dec / "data" / "svhn" / "test"
    shutil.copy(next(svhn.iterdir()), svhn / "extra.jpg")
    checks = {c.domain: c for c in verify.verify_decathlon(dec, specs)}
    assert checks["dtd"].status == verify.MISMATCH and "missing" in checks["dtd"].problems[0]
    assert checks["svhn"].cells["files"] == "0 missing, 1 unlisted"
    assert checks["aircraft"].status == verify.OK
    assert checks["aircraft"].cells["test labels"] == "absent (stripped only)"
    assert main(["verify", "--data-root", str(dec), "--sizes", "mini"]) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out and "dtd" in captured.err and "svhn" in captured.err
    # against the real sizes, the generated suite is a mismatch everywhere
    real = verify.verify_decathlon(mini_suite.decathlon_root, suite_domains("decathlon"))
    assert all("expected 3334" in c.cells["train"] for c in real if c.domain == "aircraft")
    assert all(c.status == verify.MISMATCH for c in real)


def test_verify_absent_domains_fail_only_when_asked_for(mini_suite, tmp_path, capsys):
    dec = tmp_path / "decathlon-1.0"
    shutil.copytree(mini_suite.decathlon_root, dec)
    shutil.rmtree(dec / "data" / "imagenet12")
    assert main(["verify", "--data-root", str(dec), "--sizes", "mini"]) == 0
    assert "absent" in capsys.readouterr().out
    assert main(["verify", "--data-root", str(dec), "--sizes", "mini", "--domains", "imagenet12,dtd"]) == 1
    assert "imagenet12: absent" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------------
# extra datasets and weights


def test_extra_without_a_mirror_prints_the_page_and_layout(tmp_path, capsys):
    assert main(["download", "extra", "--root", str(tmp_path), "--datasets", "cubs,sketches"]) == 0
    out = capsys.readouterr().out
    assert download.PIGGYBACK_DATA_PAGE in out
    assert f"cubs_cropped  ->  {tmp_path / 'cubs'}/{{train,test}}/<class>/<image>" in out
    assert "sketches" in out and "wikiart" not in out


def test_extra_from_a_mirror_unpacks_class_folders(server, mini_suite, tmp_path, capsys):
    base, served = server
    for name in ("cubs", "flowers"):
        folder = download.PIGGYBACK_FOLDERS[name]
        served.files[f"/pb/{folder}.tar.gz"] = _tar([(folder, mini_suite.extra_root / name)], gz=True)
    root = tmp_path / "extra"
    assert main(["download", "extra", "--root", str(root), "--base-url", f"{base}/pb",
                 "--datasets", "cubs,flowers", "--no-progress"]) == 0
    for name in ("cubs", "flowers"):
        assert _tree(root / name) == _tree(mini_suite.extra_root / name)
    specs = [s for s in suite_domains("mini") if s.name in ("cubs", "flowers")]
    assert [c.status for c in verify.verify_extra(root, specs)] == [verify.OK, verify.OK]
    assert sorted(read_manifest(root)) == ["cubs_cropped.tar.gz", "flowers.tar.gz"]


def test_weights_are_downloaded_and_a_web_page_is_refused(server, tmp_path, capsys):
    base, served = server
    served.files["/w/resnet26_pretrained.t7"] = b"\x80\x02weights" * 1000
    assert main(["download", "weights", "--root", str(tmp_path), "--url", f"{base}/w/resnet26_pretrained.t7",
                 "--no-progress"]) == 0
    assert (tmp_path / download.WEIGHTS_FILE).read_bytes() == served.files["/w/resnet26_pretrained.t7"]
    assert f"--pretrained {tmp_path / download.WEIGHTS_FILE}" in capsys.readouterr().out
    served.content_type = "text/html; charset=utf-8"  # what Google Drive sends instead of a large file
    with pytest.raises(DownloadError, match="answered with a web page"):
        download.download_weights(tmp_path / "other", url=f"{base}/w/resnet26_pretrained.t7", options=NO_WAIT)
    assert not (tmp_path / "other" / download.WEIGHTS_FILE).exists()


def test_weights_convert_to_the_harness_format(server, tmp_path, capsys):
    import torch

    from decathlon.networks.checkpoint import load_checkpoint
    from tests.test_official import save, standins_importable

    with standins_importable() as m, torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = m["models"].resnet26([1000]).eval()
        official = save({"net": net}, tmp_path / "served.t7", "legacy")
    base, served = server
    served.files["/w/resnet26_pretrained.t7"] = official.read_bytes()
    assert main(["download", "weights", "--root", str(tmp_path / "w"), "--no-progress", "--convert",
                 "--url", f"{base}/w/resnet26_pretrained.t7"]) == 0
    converted = tmp_path / "w" / download.CONVERTED_WEIGHTS
    assert f"--pretrained {converted}" in capsys.readouterr().out
    state = load_checkpoint(converted)["model_state"]
    assert torch.equal(state["stem.conv.weight"], net.pre_layers_conv.conv.weight.detach())


def test_run_all_without_data_root_names_the_download_and_verify_commands(tmp_path, capsys):
    from decathlon import runner

    assert runner.main(["--suite", "decathlon", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "needs --data-root" in err
    assert "python -m decathlon download decathlon --root DIR" in err
    assert "python -m decathlon verify --data-root DIR/decathlon-1.0" in err
    assert runner.main(["--suite", "extra", "--out", str(tmp_path)]) == 2
    assert "python -m decathlon download extra --root DIR" in capsys.readouterr().err


def test_archives_already_in_place_are_adopted_not_fetched(server, archives, tmp_path):
    base, served = server
    _serve(served, archives)
    root = tmp_path / "data"
    root.mkdir()
    (root / download.DATA_ARCHIVE).write_bytes(archives[download.DATA_ARCHIVE])  # fetched by hand
    download.download_decathlon(root, base_url=f"{base}/share", labels_url=f"{base}/labels/labels_test.zip",
                                options=NO_WAIT, say=lambda s: None)
    assert served.requests(download.DATA_ARCHIVE) == []
    entry = read_manifest(root)[download.DATA_ARCHIVE]
    assert entry["verified"] == "found in place" and entry["unpacked"] is True
    assert entry["sha256"] == hashlib.sha256(archives[download.DATA_ARCHIVE]).hexdigest()
    assert sorted(p.name for p in (root / "decathlon-1.0" / "data").iterdir()) == sorted(DOMAINS)


def test_unknown_names_are_one_line_errors(tmp_path, capsys):
    assert main(["download", "decathlon", "--root", str(tmp_path), "--domains", "dtd,mnist"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--domains mnist: unknown" in err
    assert main(["download", "extra", "--root", str(tmp_path), "--datasets", "pets"]) == 2
    assert "--datasets pets: unknown" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was fetched or written
    # not a URL at all: one line, no traceback
    assert main(["download", "decathlon", "--root", str(tmp_path / "x"), "--base-url", "notaurl"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'notaurl/decathlon-1.0-devkit.tar.gz' is not a URL" in err


def test_a_whole_or_overlong_part_file_is_finished_or_restarted(server, archives, tmp_path):
    base, served = server
    _serve(served, archives)
    body = archives[download.DEVKIT_ARCHIVE]
    url = f"{base}/share/{download.DEVKIT_ARCHIVE}"
    whole, overlong = tmp_path / "whole.tar.gz", tmp_path / "overlong.tar.gz"
    part_path(whole).write_bytes(body)  # a run that stopped between the last byte and the rename
    part_path(overlong).write_bytes(body + b"stale bytes of another version")
    assert fetch(url, whole, options=NO_WAIT).sha256 == hashlib.sha256(body).hexdigest()
    fetch(url, overlong, options=NO_WAIT)
    assert whole.read_bytes() == body and overlong.read_bytes() == body
    n = len(body)
    assert served.requests(download.DEVKIT_ARCHIVE) == [f"bytes={n}-", f"bytes={n + 30}-", None]
