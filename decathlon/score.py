"""The Decathlon S-score, the ``results.json`` submission writer and local scoring of a submission.

S = sum over domains of alpha_d * max(0, Emax_d - E_d) ** 2, with E the top-1 test error as a fraction,
Emax_d = 2 * E_d(baseline) and alpha_d = 1000 * Emax_d ** -2: a perfect domain gives 1000 points, a
domain at the baseline 250.

One rule for the baseline, in the reports and on the command line: the published Fine-tuning model
(:data:`decathlon.published.FINETUNE_BASELINE`) on the real Decathlon; on any other data (the generated
suite, a new backbone) the run's own standard fine-tuning, passed as `baseline` (the reports write it as
``baseline.json`` beside each submission). Scoring generated test annotations without a baseline is refused.
"""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from decathlon.errors import DataError, UnknownNameError
from decathlon.io import atomic_write_bytes, atomic_write_text
from decathlon.published import BASELINE_DESCRIPTION, FINETUNE_BASELINE

ID_BASE = 10**7  # image_id = d * ID_BASE + 200001 + position; category_id = d * ID_BASE + k
SUBMISSION_NAME = "results.json"  # the file name inside the uploaded zip
GENERATOR = "decathlon.generate"  # the `info.contributor` of the generated suite's annotation files
GAMMA = 2.0  # exponent of the S-score (the challenge uses 2 for every domain)
POINTS_PER_DOMAIN = 1000.0  # points of an error-free domain


@dataclass(frozen=True)
class ScoreResult:
    """An S-score: the total, the points per baseline domain, and the baseline domains with no input."""

    total: float
    points: Mapping[str, float]  # every baseline domain, in the baseline's order (missing ones 0)
    missing: tuple[str, ...] = field(default=())


def _check_accuracy(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 100.0:
        raise DataError(f"{what} is {value!r}; expected an accuracy in % between 0 and 100")
    return float(value)


def domain_points(accuracy: float | np.ndarray, baseline_accuracy: float) -> float | np.ndarray:
    """Points of one domain: alpha * max(0, Emax - E) ** 2 with Emax = 2 * baseline error (fractions).

    `accuracy` in %: a number (returns a float) or an array of them (returns an array of the same shape,
    e.g. bootstrap resamples, :mod:`decathlon.stats`).
    """
    # alpha * max(0, Emax - E) ** gamma == 1000 * max(0, 1 - E / Emax) ** gamma; errors in % (the ratio is
    # unit-free), which keeps a domain at the baseline at exactly 250 points in floating point
    error, e_max = 100.0 - np.asarray(accuracy, dtype=np.float64), 2.0 * (100.0 - baseline_accuracy)
    if e_max <= 0.0:  # a perfect baseline: the limit of the formula (1000 for a perfect domain, else 0)
        points = np.where(error <= 0.0, POINTS_PER_DOMAIN, 0.0)
    else:
        points = POINTS_PER_DOMAIN * np.maximum(0.0, 1.0 - error / e_max) ** GAMMA
    return float(points) if points.ndim == 0 else points


def s_score(accuracy_by_domain: Mapping[str, float],
            baseline: Mapping[str, float] | None = None) -> ScoreResult:
    """The S-score of top-1 accuracies (%) keyed by domain name.

    `baseline` (accuracy % by domain, default the published Fine-tuning) also fixes the scored domains:
    a name outside it raises UnknownNameError; a baseline domain missing from the input scores 0 and is
    listed in ``ScoreResult.missing``.
    """
    baseline = FINETUNE_BASELINE if baseline is None else baseline
    if not baseline:
        raise DataError("the S-score baseline is empty; expected accuracies (%) for at least one domain")
    for name in accuracy_by_domain:
        if name not in baseline:
            raise UnknownNameError("domain", name, baseline)
    points, missing = {}, []
    for name, base in baseline.items():
        base = _check_accuracy(base, f"the baseline accuracy of {name!r}")
        if name not in accuracy_by_domain:
            points[name] = 0.0
            missing.append(name)
            continue
        acc = _check_accuracy(accuracy_by_domain[name], f"the accuracy of {name!r}")
        points[name] = domain_points(acc, base)
    return ScoreResult(total=math.fsum(points.values()), points=points, missing=tuple(missing))


# --------------------------------------------------------------------------------------- submissions


def _domain_number(name: str) -> int | None:
    from decathlon.domains import DECATHLON_DOMAINS

    return next((s.number for s in DECATHLON_DOMAINS if s.name == name), None)


def _as_int(value: Any, what: str) -> int:
    try:
        as_int = int(value)
    except (TypeError, ValueError):
        raise DataError(f"{what} is {value!r}; expected an integer") from None
    if isinstance(value, bool) or as_int != value:
        raise DataError(f"{what} is {value!r}; expected an integer")
    return as_int


def submission_entries(predictions: Mapping[str, Sequence], *,
                       categories: Mapping[str, Sequence[int]] | None = None) -> list[dict[str, int]]:
    """The ``results.json`` entries of `predictions`, checked.

    `predictions` maps a domain name to ``(image_ids, class_indices)`` or
    ``(image_ids, class_indices, category_ids)``, where ``category_ids`` are the domain's category ids
    sorted (class index k -> ``category_ids[k]``). Without them, ``categories[domain]`` is used, and
    without that the id scheme of the real specs (``d * 10**7 + k + 1``).
    """
    entries: list[dict[str, int]] = []
    seen: dict[int, str] = {}
    for domain, value in predictions.items():
        if not isinstance(value, (tuple, list)) or len(value) not in (2, 3):
            raise DataError(f"predictions of {domain!r}: expected (image_ids, class_indices[, category_ids])")
        image_ids, classes = list(value[0]), list(value[1])
        cats = list(value[2]) if len(value) == 3 else (categories or {}).get(domain)
        d = _domain_number(domain)
        if cats is None and d is None:
            raise UnknownNameError("Decathlon domain", domain, _known_domains())
        if len(image_ids) != len(classes):
            raise DataError(f"predictions of {domain!r}: {len(image_ids)} image ids but {len(classes)} "
                            "class indices; expected one class index per image")
        for image_id, k in zip(image_ids, classes, strict=True):
            image_id = _as_int(image_id, f"an image id of {domain!r}")
            k = _as_int(k, f"the class index of image {image_id} ({domain!r})")
            if image_id in seen:
                raise DataError(f"image id {image_id} is predicted twice ({seen[image_id]!r} and "
                                f"{domain!r}); expected one prediction per test image")
            seen[image_id] = domain
            if cats is not None:
                if not 0 <= k < len(cats):
                    raise DataError(f"class index {k} of image {image_id} ({domain!r}) is outside "
                                    f"0..{len(cats) - 1}; expected an index into the {len(cats)} categories")
                category_id = int(cats[k])
            else:
                category_id = d * ID_BASE + k + 1
            entries.append({"image_id": image_id, "category_id": category_id})
    return entries


def _known_domains() -> tuple[str, ...]:
    from decathlon.domains import DECATHLON_COLUMNS

    return DECATHLON_COLUMNS


def _zip_bytes(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    # a fixed timestamp keeps the archive byte-identical for identical predictions
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(info, data)
    return buffer.getvalue()


def write_submission(predictions: Mapping[str, Sequence], path: str | os.PathLike, *,
                     zip_path: str | os.PathLike | None = None,
                     categories: Mapping[str, Sequence[int]] | None = None) -> list[Path]:
    """Write the challenge submission ``results.json`` (and optionally the zip to upload) atomically.

    See :func:`submission_entries` for `predictions` and `categories`. Returns the paths written.
    """
    text = json.dumps(submission_entries(predictions, categories=categories))
    written = [atomic_write_text(path, text)]
    if zip_path is not None:
        written.append(atomic_write_bytes(zip_path, _zip_bytes(SUBMISSION_NAME, text.encode())))
    return written


def _read_submission(path: Path) -> list:
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [n for n in archive.namelist() if Path(n).name == SUBMISSION_NAME]
                if not names:
                    raise DataError(f"zip {path} holds no {SUBMISSION_NAME} (it has {archive.namelist()})")
                text = archive.read(names[0]).decode("utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise DataError(f"submission {path} does not exist; "
                        f"expected {SUBMISSION_NAME} or a zip of it") from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read submission {path}: {exc}; expected a JSON list") from None
    if not isinstance(data, list):
        raise DataError(f"submission {path} holds a JSON {type(data).__name__}; expected a list of "
                        '{"image_id": ..., "category_id": ...} objects')
    return data


@dataclass(frozen=True)
class _TestSet:
    labels: Mapping[int, int]  # image_id -> category_id
    category_ids: frozenset[int]
    generated: bool  # written by decathlon.generate (not the real Decathlon)


def _read_test_sets(directory: Path) -> dict[str, _TestSet]:
    if not directory.is_dir():
        raise DataError(f"annotation folder {directory} does not exist; "
                        "expected a folder of <domain>_test.json files")
    out = {}
    for path in sorted(directory.glob("*_test.json")):
        domain = path.name[: -len("_test.json")]
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            labels = {int(a["image_id"]): int(a["category_id"]) for a in data["annotations"]}
            cats = frozenset(int(c["id"]) for c in data["categories"])
            images = {int(im["id"]) for im in data["images"]}
            info = data.get("info")
            generated = isinstance(info, dict) and info.get("contributor") == GENERATOR
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read test annotations {path}: {exc!r}; expected COCO-style JSON with "
                            "images, annotations and categories") from None
        if set(labels) != images:
            raise DataError(f"test annotations {path} label {len(labels)} of its {len(images)} images; "
                            "expected one label per image (a *_test_stripped.json cannot be scored)")
        out[domain] = _TestSet(labels, cats, generated)
    if not out:
        raise DataError(f"no <domain>_test.json in {directory}; expected the labelled test annotations")
    return out


def score_submission(submission_path: str | os.PathLike, annotations_dir: str | os.PathLike, *,
                     baseline: Mapping[str, float] | None = None,
                     baseline_name: str | None = None) -> dict[str, Any]:
    """Score a ``results.json`` (or its zip) against the ``<domain>_test.json`` files in `annotations_dir`.

    Returns ``{"domains": {name: {"accuracy": % or None, "points": float, "images": M, "unpredicted": N}},
    "score": S, "missing": [names], "baseline": description}`` over the baseline's domains (default: the
    published Fine-tuning, real Decathlon annotations only). Test images without a prediction count as
    errors (``unpredicted`` of ``images``); baseline domains without any prediction score 0, have no
    accuracy (None) and are listed in ``missing``. Predictions for domains outside the baseline are checked
    but not scored (``unscored``); ``baseline`` is `baseline_name` (default: a description of
    `baseline`); predictions for domains with only ``<domain>_test_stripped.json`` (no
    labels) are not scored either (``unlabelled``). DataError for unreadable or inconsistent input, for a
    baseline naming a domain without test annotations in `annotations_dir`, and for generated annotations
    scored without a `baseline` (their S would be measured against the real Decathlon's Fine-tuning).
    """
    path, directory = Path(submission_path), Path(annotations_dir)
    entries = _read_submission(path)
    tests = _read_test_sets(directory)
    stripped = _stripped_ids(directory, exclude=tests)
    if baseline is not None:
        unknown = sorted(set(baseline) - set(tests) - set(stripped))
        if unknown:
            raise DataError(f"the baseline names {', '.join(unknown)}, which has no test annotations in "
                            f"{directory}; expected domains among {', '.join(sorted({*tests, *stripped}))}")
    owner = {image_id: domain for domain, test in tests.items() for image_id in test.labels}
    unlabelled_owner = {image_id: domain for domain, ids in stripped.items() for image_id in ids}
    unlabelled: set[str] = set()
    correct = {domain: 0 for domain in tests}
    predicted: set[int] = set()
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or not {"image_id", "category_id"} <= set(entry):
            raise DataError(f"entry #{i} of {path} is {entry!r}; "
                            "expected an object with image_id and category_id")
        image_id = _as_int(entry["image_id"], f"image_id of entry #{i} of {path}")
        category_id = _as_int(entry["category_id"], f"category_id of entry #{i} of {path}")
        domain = owner.get(image_id)
        if domain is None and image_id in unlabelled_owner:
            unlabelled.add(unlabelled_owner[image_id])  # a domain without labelled test file: not scored
            continue
        if domain is None:
            raise DataError(f"image_id {image_id} (entry #{i} of {path}) is in no test annotation file in "
                            f"{directory} ({', '.join(sorted(tests))})")
        if image_id in predicted:
            raise DataError(f"image_id {image_id} appears twice in {path} (again at entry #{i}); "
                            "expected one prediction per test image")
        predicted.add(image_id)
        if category_id not in tests[domain].category_ids:
            raise DataError(f"category_id {category_id} of image {image_id} (entry #{i} of {path}) is not a "
                            f"category of {domain!r}; expected one of {domain}_test.json's category ids")
        correct[domain] += category_id == tests[domain].labels[image_id]
    generated = sorted(d for d, t in tests.items() if t.generated)
    if baseline is None and generated:
        raise DataError(f"{directory}: the test annotations of {', '.join(generated)} were written by "
                        f"{GENERATOR} (the generated suite); the published Fine-tuning baseline applies "
                        "to the real Decathlon only: pass --baseline, a JSON object {domain: accuracy %} of "
                        "this run's own finetune (the reports write it as baseline.json beside each "
                        "submission)")
    present = {owner[i] for i in predicted}
    accuracy = {d: 100.0 * correct[d] / len(tests[d].labels) for d in present}
    counted = {d: 0 for d in tests}
    for image_id in predicted:
        counted[owner[image_id]] += 1
    default_name = BASELINE_DESCRIPTION if baseline is None else "the given baseline accuracies"
    description = baseline_name or default_name
    baseline = FINETUNE_BASELINE if baseline is None else baseline
    result = s_score({d: a for d, a in accuracy.items() if d in baseline}, baseline)
    images = {d: len(tests[d].labels) if d in tests else 0 for d in result.points}
    return {
        "domains": {d: {"accuracy": accuracy.get(d), "points": p, "images": images[d],
                        "unpredicted": images[d] - counted.get(d, 0)} for d, p in result.points.items()},
        "score": result.total,
        "missing": list(result.missing),
        "unlabelled": sorted(unlabelled),
        "unscored": sorted(present - set(baseline)),
        "baseline": description,
    }


def _stripped_ids(directory: Path, exclude: Mapping[str, Any]) -> dict[str, set[int]]:
    """Image ids of the ``<domain>_test_stripped.json`` files of domains not in `exclude` (no labels)."""
    out = {}
    for path in sorted(directory.glob("*_test_stripped.json")):
        domain = path.name[: -len("_test_stripped.json")]
        if domain in exclude:
            continue
        try:
            out[domain] = {int(im["id"]) for im in json.loads(path.read_text(encoding="utf-8"))["images"]}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"cannot read test images of {path}: {exc!r}; expected COCO-style JSON with "
                            "an 'images' list") from None
    return out


def score_notes(result: Mapping[str, Any]) -> list[str]:
    """One line per thing a score leaves out or counts wrong (a :func:`score_submission` result): "<domain>:
    N of M test images have no prediction (counted wrong)" for every scored domain with predictions
    missing, and the domains whose predictions were not scored (no labels; not in the baseline)."""
    lines = [f"{d}: {e['unpredicted']} of {e['images']} test images have no prediction (counted wrong)"
             for d, e in result["domains"].items() if d not in result["missing"] and e.get("unpredicted")]
    lines += [f"{d}: no labelled test file (only {d}_test_stripped.json): its predictions are not "
              "scored" for d in result.get("unlabelled", ())]
    lines += [f"{d}: not in the S baseline: its predictions are not scored"
              for d in result.get("unscored", ())]
    return lines
