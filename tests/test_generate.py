"""The domain registry facts, and the generated suite: real on-disk format, determinism, loading."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from decathlon import DecathlonDataset, build_dataset
from decathlon.data import load_mean_std
from decathlon.domains import (
    DECATHLON_COLUMNS,
    DECATHLON_DOMAINS,
    EXTRA_COLUMNS,
    EXTRA_DOMAINS,
    MINI_DOMAINS,
    get_domain,
    suite_domains,
)
from decathlon.errors import ConfigError, DataError, UnknownNameError
from decathlon.generate import MARKER, SuitePaths, ensure_suite, generate_suite, suite_specs

# --------------------------------------------------------------------------- registry facts
# (d, classes, train, val, test) from the challenge definition (reference page decathlon.md)
DECATHLON_FACTS = {
    "aircraft": (1, 100, 3334, 3333, 3333),
    "cifar100": (2, 100, 40000, 10000, 10000),
    "daimlerpedcls": (3, 2, 23520, 5880, 19600),
    "dtd": (4, 47, 1880, 1880, 1880),
    "gtsrb": (5, 43, 31367, 7842, 12630),
    "imagenet12": (6, 1000, 1232167, 49000, 48238),
    "omniglot": (7, 1623, 17853, 6492, 8115),
    "svhn": (8, 10, 47217, 26040, 26032),
    "ucf101": (9, 101, 7585, 1952, 3783),
    "vgg-flowers": (10, 102, 1020, 1020, 6149),
}
# (classes, train, test) of the extra datasets (reference page spottune.md)
EXTRA_FACTS = {
    "cubs": (200, 5994, 5794),
    "stanford-cars": (196, 8144, 8041),
    "flowers": (102, 2040, 6149),
    "wikiart": (195, 42129, 10628),
    "sketches": (250, 16000, 4000),
}


@pytest.mark.parametrize("name", sorted(DECATHLON_FACTS))
def test_decathlon_domain_facts(name):
    d, classes, train, val, test = DECATHLON_FACTS[name]
    spec = get_domain(name)
    assert (spec.number, spec.num_classes) == (d, classes)
    assert dict(spec.split_sizes) == {"train": train, "val": val, "test": test}
    assert spec.layout == "decathlon" and spec.image_size == 72
    assert spec.is_source == (name == "imagenet12")


@pytest.mark.parametrize("name", sorted(EXTRA_FACTS))
def test_extra_domain_facts(name):
    classes, train, test = EXTRA_FACTS[name]
    spec = get_domain(name)
    assert spec.num_classes == classes
    assert (spec.split_sizes["train"], spec.split_sizes["test"]) == (train, test)
    assert spec.number is None and spec.image_size == 224


def test_suites_are_lists_of_names_in_paper_order():
    assert [s.name for s in suite_domains("decathlon")] == list(DECATHLON_COLUMNS)
    assert DECATHLON_COLUMNS[0] == "imagenet12" and len(set(DECATHLON_COLUMNS)) == 10
    assert [s.name for s in suite_domains("extra")] == list(EXTRA_COLUMNS) == sorted(EXTRA_FACTS, key=list(
        EXTRA_COLUMNS).index)
    assert [s.name for s in suite_domains("all")] == list(DECATHLON_COLUMNS + EXTRA_COLUMNS)
    # d is the alphabetical rank of the folder name
    assert [s.number for s in sorted(DECATHLON_DOMAINS, key=lambda s: s.name)] == list(range(1, 11))
    assert len(EXTRA_DOMAINS) == 5


def test_unknown_names_list_the_known_ones():
    with pytest.raises(UnknownNameError, match="unknown domain 'imagenet'.*aircraft.*vgg-flowers"):
        get_domain("imagenet")
    with pytest.raises(UnknownNameError, match="unknown suite 'tiny'.*decathlon, extra, mini"):
        suite_domains("tiny")
    with pytest.raises(UnknownNameError, match="sketches"):
        get_domain("omniglot2", suite="mini")


def test_mini_specs_follow_the_generator_parameters():
    assert suite_domains("mini") == MINI_DOMAINS
    assert [s.name for s in MINI_DOMAINS] == list(DECATHLON_COLUMNS + EXTRA_COLUMNS)
    by_name = {s.name: s for s in MINI_DOMAINS}
    assert by_name["imagenet12"].num_classes == 20 and by_name["imagenet12"].split_sizes["train"] == 800
    assert by_name["daimlerpedcls"].num_classes == 2 and by_name["svhn"].num_classes == 10
    for spec in MINI_DOMAINS:
        real = get_domain(spec.name)
        assert spec.suites == ("mini",) and spec.image_size == 36
        assert spec.number == real.number and spec.geometry == real.geometry  # same ids, same transforms
        assert spec.layout == ("decathlon" if real.number else "folder")

        if spec.name not in ("imagenet12", "daimlerpedcls"):
            assert spec.num_classes == 10
            assert dict(spec.split_sizes) == ({"train": 160, "val": 80, "test": 80} if real.number
                                              else {"train": 160, "val": 0, "test": 80})
    small = {s.name: s for s in suite_specs(image_size=20, target_counts=(3, 2, 1))}
    assert small["svhn"].image_size == 20 and dict(small["svhn"].split_sizes) == {"train": 30, "val": 20,
                                                                                  "test": 10}


# --------------------------------------------------------------------------- generated suite: format

TINY = {"image_size": 10, "source_counts": (1, 1, 1), "target_counts": (1, 1, 1), "extra_counts": (1, 1)}

def test_the_specs_class_counts_are_what_the_generator_draws():
    from decathlon.domains import MINI_CLASSES
    from decathlon.generate import _RECIPES

    assert {name: len(recipe.classes) for name, recipe in _RECIPES.items()} == dict(MINI_CLASSES)



def _annotations(root: Path, domain: str, split: str) -> dict:
    return json.loads((root / "annotations" / f"{domain}_{split}.json").read_text())


@pytest.mark.parametrize("domain", DECATHLON_COLUMNS)
def test_generated_annotations_follow_the_real_format(mini_suite, domain):
    root = mini_suite.decathlon_root
    spec = get_domain(domain, suite="mini")
    d = spec.number
    expected_categories = [d * 10**7 + k + 1 for k in range(spec.num_classes)]
    next_id = d * 10**7 + 200001  # image ids run through train, val, test
    for split in ("train", "val", "test"):
        data = _annotations(root, domain, split)
        assert set(data) == {"info", "images", "annotations", "categories", "licenses"}
        assert [c["id"] for c in data["categories"]] == expected_categories
        assert all(c["supercategory"] == domain for c in data["categories"])
        # names sort like ids, so "sorted categories" means the same thing either way
        assert sorted(c["name"] for c in data["categories"]) == [c["name"] for c in data["categories"]]
        images = data["images"]
        assert len(images) == spec.split_sizes[split]
        assert [im["id"] for im in images] == list(range(next_id, next_id + len(images)))
        next_id += len(images)
        assert [im["file_name"] for im in images] == [f"data/{domain}/{split}/{i + 1:06d}.jpg"
                                                      for i in range(len(images))]
        anns = data["annotations"]
        assert [a["image_id"] for a in anns] == [im["id"] for im in images]
        assert all(a["id"] == a["image_id"] and a["category_id"] in expected_categories for a in anns)
        assert set(anns[0]) == {"id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd"}
        # every class occurs equally often in every split
        counts = np.bincount([a["category_id"] - d * 10**7 - 1 for a in anns], minlength=spec.num_classes)
        assert counts.min() == counts.max() == spec.split_sizes[split] // spec.num_classes
        for im in images[:3]:
            with Image.open(root / im["file_name"]) as img:
                assert img.format == "JPEG" and img.size == (im["width"], im["height"])
                assert min(img.size) == spec.image_size
    stripped = _annotations(root, domain, "test_stripped")
    test = _annotations(root, domain, "test")
    assert stripped["images"] == test["images"] and stripped["categories"] == test["categories"]
    assert stripped["annotations"] == [] and len(test["annotations"]) == len(test["images"])


def test_daimler_is_grey_and_twice_as_high_as_wide(mini_suite):
    data = _annotations(mini_suite.decathlon_root, "daimlerpedcls", "train")
    assert {(im["width"], im["height"]) for im in data["images"]} == {(36, 72)}
    with Image.open(mini_suite.decathlon_root / data["images"][0]["file_name"]) as img:
        assert img.mode == "L"


def test_mean_std_pickle_has_the_real_keys_and_train_statistics(mini_suite):
    path = mini_suite.decathlon_root / "decathlon_mean_std.pickle"
    raw = path.read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, like the released Python 2 pickle
    stats = pickle.loads(raw, encoding="latin1")
    assert {f"{d}{k}" for d in DECATHLON_COLUMNS for k in ("mean", "std")} <= set(stats)
    for domain in DECATHLON_COLUMNS:
        mean, std = stats[f"{domain}mean"], stats[f"{domain}std"]
        assert isinstance(mean, np.ndarray) and mean.shape == (3,) and std.shape == (3,)
        assert np.all((mean > 0) & (mean < 1)) and np.all((std > 0.01) & (std < 0.5))
    # recompute one domain from its decoded train images (JPEG changes pixels only slightly)
    data = _annotations(mini_suite.decathlon_root, "gtsrb", "train")
    files = [mini_suite.decathlon_root / im["file_name"] for im in data["images"]]
    pixels = np.concatenate([np.asarray(Image.open(f).convert("RGB"), np.float64).reshape(-1, 3) / 255
                             for f in files])
    np.testing.assert_allclose(stats["gtsrbmean"], pixels.mean(0), atol=0.01)
    np.testing.assert_allclose(stats["gtsrbstd"], pixels.std(0), atol=0.01)
    # omniglot is white strokes on black and daimler grey, as in the real statistics
    assert stats["omniglotmean"][0] < 0.2 and np.ptp(stats["daimlerpedclsmean"]) < 1e-9
    # the data layer prefers the generated statistics over the real ones built into the spec
    mean, _ = load_mean_std(mini_suite.decathlon_root, get_domain("gtsrb", suite="mini"))
    np.testing.assert_allclose(mean, stats["gtsrbmean"])


@pytest.mark.parametrize("spec", MINI_DOMAINS, ids=lambda s: s.name)
def test_generated_suite_loads_through_the_readers(mini_suite, spec):
    root = mini_suite.decathlon_root if spec.layout == "decathlon" else mini_suite.extra_root
    # "trainval" is the whole released train split in every layout (folder trees carve val out of it)
    for split, size in (("trainval", spec.split_sizes["train"] + spec.split_sizes["val"]),
                        ("test", spec.split_sizes["test"])):
        ds = build_dataset(spec, root, split)
        assert ds.num_classes == spec.num_classes and len(ds) == size
        assert sorted(set(ds.labels)) == list(range(spec.num_classes))
    image, label = ds[0]
    assert image.mode == "RGB" and min(image.size) == spec.image_size and 0 <= label < spec.num_classes
    if spec.layout == "decathlon":
        ds = DecathlonDataset(mini_suite.decathlon_root, spec.name, "trainval", suite="mini")
        assert len(ds) == spec.split_sizes["train"] + spec.split_sizes["val"]


def test_extra_stand_ins_are_class_per_folder_trees(mini_suite):
    assert isinstance(mini_suite, SuitePaths) and mini_suite.extra_root.name == "extra"
    assert mini_suite.decathlon_root.name == "decathlon-1.0"
    for name in EXTRA_COLUMNS:
        for split, per_class in (("train", 16), ("test", 8)):
            classes = sorted(p.name for p in (mini_suite.extra_root / name / split).iterdir())
            assert len(classes) == 10 and classes[0].startswith("001.")
            files = sorted((mini_suite.extra_root / name / split / classes[0]).iterdir())
            assert [f.name for f in files] == [f"{i + 1:05d}.jpg" for i in range(per_class)]


def test_classes_differ_visually(mini_suite):
    # a weak but cheap check that labels carry signal: the nearest class mean of 8x8 thumbnails beats
    # chance (10%) clearly on the held-out split of a shape-and-colour-defined domain
    def features(split):
        ds = build_dataset(get_domain("gtsrb", suite="mini"), mini_suite.decathlon_root, split)
        x = np.stack([np.asarray(ds[i][0].resize((8, 8)), np.float32).ravel() / 255 for i in range(len(ds))])
        return x - x.mean(1, keepdims=True), np.asarray(ds.labels)

    (xtr, ytr), (xte, yte) = features("train"), features("test")
    means = np.stack([xtr[ytr == k].mean(0) for k in range(10)])
    predicted = np.argmin(((xte[:, None] - means[None]) ** 2).sum(-1), axis=1)
    assert (predicted == yte).mean() > 0.3


# --------------------------------------------------------------------------- generator behaviour


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_other_seed_other_images(tmp_path):
    a = _files(Path(generate_suite(tmp_path / "a", seed=3, **TINY).decathlon_root).parent)
    b = _files(Path(generate_suite(tmp_path / "b", seed=3, **TINY).decathlon_root).parent)
    assert a.keys() == b.keys() and len(a) > 300
    assert a == b  # every file, images included
    c = _files(Path(generate_suite(tmp_path / "c", seed=4, **TINY).decathlon_root).parent)
    assert a.keys() == c.keys()
    images = [k for k in a if k.endswith(".jpg")]
    assert sum(a[k] != c[k] for k in images) > 0.9 * len(images)
    assert not any(p.name.startswith(".build-") for p in (tmp_path / "a").iterdir())  # no build leftovers


def test_ensure_suite_reuses_a_complete_suite_and_regenerates_otherwise(tmp_path):
    out = tmp_path / "suite"
    paths = ensure_suite(out, seed=1, **TINY)
    marker = json.loads((out / MARKER).read_text())
    assert marker["params"]["seed"] == 1 and marker["params"]["image_size"] == 10
    probe = paths.decathlon_root / "annotations" / "svhn_train.json"
    stamp = probe.stat().st_mtime_ns
    assert ensure_suite(out, seed=1, **TINY) == paths
    assert probe.stat().st_mtime_ns == stamp  # reused, not rewritten
    (out / MARKER).unlink()  # an interrupted generation leaves no marker: regenerate
    ensure_suite(out, seed=1, **TINY)
    assert (out / MARKER).is_file() and probe.stat().st_mtime_ns != stamp
    before = probe.read_bytes()
    ensure_suite(out, seed=2, **TINY)  # other parameters: regenerate
    assert json.loads((out / MARKER).read_text())["params"]["seed"] == 2
    assert json.loads(probe.read_text())["info"]["seed"] == 2 and probe.read_bytes() != before


def test_generator_refuses_to_replace_folders_it_did_not_write(tmp_path):
    precious = tmp_path / "decathlon-1.0" / "annotations" / "aircraft_train.json"
    precious.parent.mkdir(parents=True)
    precious.write_text("{}")
    with pytest.raises(DataError, match="decathlon-1.0 exists and was not written by decathlon.generate"):
        generate_suite(tmp_path, **TINY)
    assert precious.read_text() == "{}"
    with pytest.raises(ConfigError, match="image_size=4"):
        generate_suite(tmp_path / "x", image_size=4)
    with pytest.raises(ConfigError, match=r"target_counts=\(4, 0, 1\): expected 3 image counts"):
        generate_suite(tmp_path / "x", target_counts=(4, 0, 1))
    assert not (tmp_path / "x").exists()
