"""Dataset readers on tiny real-format files: Decathlon (COCO JSON), class-per-folder, CUB; mean/std."""

from __future__ import annotations

import dataclasses
import os
import pickle
from collections import Counter

import pytest
import torch
from PIL import Image

from decathlon.data import (
    READERS,
    VAL_FRACTION,
    CubDataset,
    DecathlonDataset,
    FolderDataset,
    build_dataset,
    carve_val,
    load_mean_std,
)
from decathlon.domains import SPLITS, get_domain
from decathlon.errors import ConfigError, DataError, HarnessError, UnknownNameError
from decathlon.presets import get_preset
from tests.fakes import (
    D,
    decathlon_labels,
    read_json,
    write_cub,
    write_decathlon,
    write_folder,
    write_json,
    write_mean_std,
)

AIRCRAFT = get_domain("aircraft")  # d = 1
SVHN = get_domain("svhn")  # d = 8


# ------------------------------------------------------------------------------ Decathlon layout: facts


def test_reader_facts_follow_the_id_scheme(tmp_path):
    root = write_decathlon(tmp_path, "svhn", classes=4, sizes={"train": 6, "val": 3, "test": 5})
    ds = DecathlonDataset(root, "svhn", "train")
    assert len(ds) == 6 and ds.num_classes == 4
    assert ds.image_ids == [8 * D + 200001 + i for i in range(6)]
    assert ds.category_ids == [8 * D + k for k in range(1, 5)]
    assert ds.labels == [k - 1 for k in decathlon_labels("train", 6, 4)]
    assert ds.classes == ["class1", "class2", "class3", "class4"]
    assert ds.file_paths[0] == root / "data/svhn/train/000001.jpg"
    assert ds.labelled
    val = DecathlonDataset(root, SVHN, "val")  # a DomainSpec works like its name
    assert val.image_ids == [8 * D + 200007 + i for i in range(3)]
    test = DecathlonDataset(root, "svhn", "test")
    assert test.image_ids[0] == 8 * D + 200010 and len(test) == 5


def test_labels_are_positions_in_the_id_sorted_categories(tmp_path):
    root = write_decathlon(tmp_path, classes=3, sizes={"train": 3, "val": 1, "test": 1})
    path = root / "annotations/aircraft_train.json"
    doc = read_json(path)
    doc["categories"] = doc["categories"][::-1]  # file order must not matter
    doc["annotations"][0]["category_id"] = D + 3
    write_json(path, doc)
    ds = DecathlonDataset(root, "aircraft", "train")
    assert [c["id"] for c in ds.categories] == [D + 1, D + 2, D + 3]
    assert ds.labels == [2, 1, 2]


def test_num_classes_counts_categories_even_when_a_split_misses_classes(tmp_path):
    root = write_decathlon(tmp_path, classes=5, sizes={"train": 10, "val": 6, "test": 2},
                           present={"val": [2, 4]})
    val = DecathlonDataset(root, "aircraft", "val")
    assert val.num_classes == 5
    assert sorted(set(val.labels)) == [1, 3]


def test_trainval_is_train_then_val(tmp_path):
    root = write_decathlon(tmp_path, sizes={"train": 4, "val": 3, "test": 2})
    train, val = DecathlonDataset(root, "aircraft", "train"), DecathlonDataset(root, "aircraft", "val")
    both = DecathlonDataset(root, "aircraft", "trainval")
    assert both.image_ids == train.image_ids + val.image_ids
    assert both.labels == train.labels + val.labels
    assert both.file_paths == train.file_paths + val.file_paths
    assert len(both.annotation_paths) == 2


def test_test_split_labelled_when_released_else_stripped(tmp_path):
    root = write_decathlon(tmp_path, classes=3, sizes={"train": 3, "val": 3, "test": 4})
    labelled = DecathlonDataset(root, "aircraft", "test")
    assert labelled.labelled and labelled.labels == [0, 1, 2, 0]
    assert labelled.annotation_paths == [root / "annotations/aircraft_test.json"]
    (root / "annotations/aircraft_test.json").unlink()
    stripped = DecathlonDataset(root, "aircraft", "test")
    assert not stripped.labelled
    assert stripped.labels == [-1] * 4
    assert stripped.image_ids == labelled.image_ids
    assert stripped.num_classes == 3
    assert stripped.annotation_paths == [root / "annotations/aircraft_test_stripped.json"]


def test_stripped_test_without_categories_takes_them_from_train(tmp_path):
    root = write_decathlon(tmp_path, classes=3, labelled_test=False)
    path = root / "annotations/aircraft_test_stripped.json"
    doc = read_json(path)
    del doc["categories"], doc["annotations"]
    write_json(path, doc)
    ds = DecathlonDataset(root, "aircraft", "test")
    assert ds.category_ids == [D + 1, D + 2, D + 3] and not ds.labelled


def test_items_are_rgb_images_or_transformed_tensors(tmp_path):
    root = write_decathlon(tmp_path, image_size=(12, 8))
    image, label = DecathlonDataset(root, "aircraft", "train")[1]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (12, 8)
    assert label == 1
    small = dataclasses.replace(AIRCRAFT, image_size=8)
    transform = get_preset("faithful").train_transform(small, small.mean, small.std)
    tensor, _ = DecathlonDataset(tmp_path, small, "train", transform)[0]  # the parent folder works too
    assert tuple(tensor.shape) == (3, 7, 7) and tensor.dtype == torch.float32


def test_loading_prints_nothing(tmp_path, capsys):
    root = write_decathlon(tmp_path)
    DecathlonDataset(root, "aircraft", "trainval")
    assert capsys.readouterr().out == ""


def test_dataloader_batches(tmp_path):
    root = write_decathlon(tmp_path, image_size=(8, 8), sizes={"train": 5, "val": 1, "test": 1})
    spec = dataclasses.replace(AIRCRAFT, image_size=8)
    transform = get_preset("faithful").test_transform(spec, spec.mean, spec.std)
    ds = DecathlonDataset(root, spec, "train", transform)
    images, labels = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and labels.tolist() == [0, 1, 2, 0]


# ------------------------------------------------------------------------------ normalisation statistics


def test_mean_std_falls_back_to_the_spec_without_a_pickle(tmp_path):
    root = write_decathlon(tmp_path)
    assert load_mean_std(root, AIRCRAFT) == (AIRCRAFT.mean, AIRCRAFT.std)
    assert load_mean_std(None, AIRCRAFT) == (AIRCRAFT.mean, AIRCRAFT.std)


def test_mean_std_prefers_the_users_pickle(tmp_path):
    root = write_decathlon(tmp_path)
    write_mean_std(root / "decathlon_mean_std.pickle",
                   {"aircraft": ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]), "omniglot": ([0.08], [0.27])})
    assert load_mean_std(root, AIRCRAFT) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))
    assert load_mean_std(tmp_path, AIRCRAFT) == ((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))  # parent folder
    assert load_mean_std(root, get_domain("omniglot")) == ((0.08,) * 3, (0.27,) * 3)  # grey: x3
    assert load_mean_std(root, SVHN) == (SVHN.mean, SVHN.std)  # not in the pickle: built-in values


def test_mean_std_pickle_is_data_only(tmp_path):
    marker = tmp_path / "executed"

    class Exploit:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    path = tmp_path / "decathlon_mean_std.pickle"
    path.write_bytes(pickle.dumps({"aircraftmean": Exploit(), "aircraftstd": [0.1, 0.1, 0.1]}, protocol=2))
    with pytest.raises(DataError, match="decathlon_mean_std.pickle.*refusing"):
        load_mean_std(tmp_path, AIRCRAFT)
    assert not marker.exists()


@pytest.mark.parametrize(("content", "match"), [
    (b"not a pickle", "cannot read statistics pickle"),
    (pickle.dumps([1, 2, 3], protocol=2), "holds a list"),
    (pickle.dumps({"aircraftmean": [0.1, 0.2]}, protocol=2), "only one of"),
    (pickle.dumps({"aircraftmean": [0.1, 0.2], "aircraftstd": [1, 1, 1]}, protocol=2), "3 finite RGB"),
])
def test_mean_std_bad_pickles(tmp_path, content, match):
    (tmp_path / "decathlon_mean_std.pickle").write_bytes(content)
    with pytest.raises(DataError, match=match):
        load_mean_std(tmp_path, AIRCRAFT)


# ------------------------------------------------------------------------------ Decathlon layout: bad input


def _edit(root, split, change):
    path = root / f"annotations/aircraft_{split}.json"
    doc = read_json(path)
    change(doc)
    write_json(path, doc)


def _set(doc, *keys_and_value):
    *keys, last, value = keys_and_value
    for key in keys:
        doc = doc[key]
    doc[last] = value


@pytest.mark.parametrize(("change", "match"), [
    (lambda d: _set(d, "categories", 0, "id", 2 * D + 1), "category id 20000001.*outside.*10000001..1000010"),
    (lambda d: _set(d, "annotations", 0, "category_id", D + 50), "category_id 10000050.*not in"),
    (lambda d: _set(d, "annotations", 0, "image_id", 999), r"image id\(s\) \[999\].*not in its 'images'"),
    (lambda d: d["annotations"].pop(), "has 0 annotations; expected exactly one"),
    (lambda d: d.pop("annotations"), "no list 'annotations'"),
    (lambda d: d.pop("images"), "no list 'images'"),
    (lambda d: d["images"].append(dict(d["images"][0])), "image id twice"),
    (lambda d: d["images"][0].pop("file_name"), r"image #0 .*file_name \(str\)"),
])
def test_malformed_annotations_raise_data_error_naming_the_file(tmp_path, change, match):
    root = write_decathlon(tmp_path)
    _edit(root, "train", change)
    with pytest.raises(DataError, match=match) as info:
        DecathlonDataset(root, "aircraft", "train")
    assert "aircraft_train.json" in str(info.value)


def test_malformed_json(tmp_path):
    root = write_decathlon(tmp_path)
    (root / "annotations/aircraft_val.json").write_text('{"images": [')
    with pytest.raises(DataError, match="cannot parse annotation file .*aircraft_val.json"):
        DecathlonDataset(root, "aircraft", "val")
    (root / "annotations/aircraft_val.json").write_text("[]")
    with pytest.raises(DataError, match="aircraft_val.json holds a list"):
        DecathlonDataset(root, "aircraft", "val")


def test_missing_root_annotation_folder_and_file(tmp_path):
    with pytest.raises(DataError, match=f"data root {tmp_path / 'nowhere'} does not exist"):
        DecathlonDataset(tmp_path / "nowhere", "aircraft", "train")
    with pytest.raises(DataError, match="no data root given"):
        DecathlonDataset(None, "aircraft", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="annotation folder .*annotations does not exist"):
        DecathlonDataset(tmp_path / "empty", "aircraft", "train")
    root = write_decathlon(tmp_path)
    (root / "annotations/aircraft_val.json").unlink()
    with pytest.raises(DataError, match="annotation file .*aircraft_val.json does not exist"):
        DecathlonDataset(root, "aircraft", "trainval")
    (root / "annotations/aircraft_test.json").unlink()
    (root / "annotations/aircraft_test_stripped.json").unlink()
    with pytest.raises(DataError, match="aircraft_test_stripped.json does not exist"):
        DecathlonDataset(root, "aircraft", "test")


def test_listed_image_absent_fails_at_construction(tmp_path):
    root = write_decathlon(tmp_path)
    (root / "data/aircraft/val/000002.jpg").unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\) listed in .*aircraft_val.json.*000002.jpg"):
        DecathlonDataset(root, "aircraft", "val")


def test_corrupt_image_fails_at_load_time_naming_the_file(tmp_path):
    root = write_decathlon(tmp_path)
    (root / "data/aircraft/train/000003.jpg").write_bytes(b"\xff\xd8 definitely not a jpeg")
    ds = DecathlonDataset(root, "aircraft", "train")
    ds[0]
    with pytest.raises(DataError, match="cannot read image .*train/000003.jpg"):
        ds[2]


def test_truncated_image_fails_at_load_time(tmp_path):
    root = write_decathlon(tmp_path, image_size=(16, 16))
    path = root / "data/aircraft/train/000001.jpg"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError, match="000001.jpg"):
        DecathlonDataset(root, "aircraft", "train")[0]


def test_train_and_val_must_share_categories(tmp_path):
    root = write_decathlon(tmp_path, classes=3, present={"val": [1, 2]})
    _edit(root, "val", lambda d: d["categories"].pop())  # a consistent file on its own, but not with train
    assert DecathlonDataset(root, "aircraft", "val").num_classes == 2
    with pytest.raises(DataError, match="different categories"):
        DecathlonDataset(root, "aircraft", "trainval")


def test_unknown_domain_split_and_non_decathlon_spec(tmp_path):
    root = write_decathlon(tmp_path)
    with pytest.raises(UnknownNameError, match="unknown domain 'airplanes'"):
        DecathlonDataset(root, "airplanes", "train")
    with pytest.raises(UnknownNameError, match="unknown split 'validation'.*trainval"):
        DecathlonDataset(root, "aircraft", "validation")
    with pytest.raises(ConfigError, match="'cubs'.*no Decathlon number"):
        DecathlonDataset(root, "cubs", "train")


def test_every_error_is_a_harness_error():
    assert issubclass(DataError, HarnessError) and issubclass(UnknownNameError, HarnessError)


# ------------------------------------------------------------------------------ val carve-out


def test_carve_val_is_class_balanced_deterministic_and_disjoint():
    labels = [0] * 20 + [1] * 10 + [2] * 30 + [3] * 1
    train, val = carve_val(labels, 4)
    assert Counter(labels[i] for i in val) == {0: 2, 1: 1, 2: 3}  # 10% per class; a lone image stays
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(len(labels)))
    assert carve_val(labels, 4) == (train, val)
    assert carve_val(labels, 4, seed=1)[1] != val
    assert VAL_FRACTION == 0.1


def test_carve_val_keeps_one_image_of_tiny_classes():
    _, val = carve_val([0, 0, 1, 1, 1], 2)
    assert Counter([0, 0, 1, 1, 1][i] for i in val) == {0: 1, 1: 1}


# ------------------------------------------------------------------------------ class-per-folder layout


def test_folder_dataset_splits(tmp_path):
    write_folder(tmp_path, "flowers", {"tulip": 10, "rose": 20}, {"rose": 2, "tulip": 3})
    spec = get_domain("flowers")
    train, val = FolderDataset(tmp_path, spec, "train"), FolderDataset(tmp_path, spec, "val")
    trainval, test = FolderDataset(tmp_path, spec, "trainval"), FolderDataset(tmp_path, spec, "test")
    assert train.classes == ["rose", "tulip"] and train.num_classes == 2
    assert len(trainval) == 30 and len(test) == 5
    assert Counter(val.labels) == {0: 2, 1: 1}
    assert set(train.image_ids).isdisjoint(val.image_ids)
    assert sorted(train.image_ids + val.image_ids) == sorted(trainval.image_ids)
    assert FolderDataset(tmp_path, spec, "val").image_ids == val.image_ids
    assert test.image_ids[0] == "test/rose/0000.jpg" and test.labels == [0, 0, 1, 1, 1]
    assert all(i.startswith("train/") for i in trainval.image_ids)
    image, label = test[4]
    assert image.mode == "RGB" and label == 1


def test_folder_dataset_test_class_missing_from_train_is_an_error(tmp_path):
    write_folder(tmp_path, "flowers", {"rose": 2}, {"rose": 1, "daisy": 1})
    with pytest.raises(DataError, match=r"\['daisy'\].*not in .*flowers/train"):
        FolderDataset(tmp_path, "flowers", "test")


def test_folder_dataset_missing_folders(tmp_path):
    with pytest.raises(DataError, match="dataset folder of 'flowers' .*flowers does not exist"):
        FolderDataset(tmp_path, "flowers", "train")
    write_folder(tmp_path, "flowers", {"rose": 2}, {})
    with pytest.raises(DataError, match="test folder .*flowers/test does not exist"):
        FolderDataset(tmp_path, "flowers", "test")
    (tmp_path / "wikiart" / "train").mkdir(parents=True)
    with pytest.raises(DataError, match="has no class folders"):
        FolderDataset(tmp_path, "wikiart", "train")


def test_folder_dataset_corrupt_image(tmp_path):
    write_folder(tmp_path, "flowers", {"rose": 2}, {"rose": 1})
    (tmp_path / "flowers/test/rose/0000.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="cannot read image .*test/rose/0000.jpg"):
        FolderDataset(tmp_path, "flowers", "test")[0]


# ------------------------------------------------------------------------------ CUB-200-2011 layout


@pytest.mark.parametrize("nested", [True, False])
def test_cub_dataset(tmp_path, nested):
    base = write_cub(tmp_path, train=[10, 20, 1], test=[2, 3, 1], nested=nested)
    train, val = CubDataset(tmp_path, "cubs", "train"), CubDataset(tmp_path, "cubs", "val")
    test = CubDataset(tmp_path, "cubs", "test")
    assert train.root == base and train.num_classes == 3
    assert train.classes == ["001.Bird_1", "002.Bird_2", "003.Bird_3"]
    assert Counter(val.labels) == {0: 1, 1: 2}
    assert len(train) + len(val) == 31 and set(train.image_ids).isdisjoint(val.image_ids)
    assert test.labels == [0, 0, 1, 1, 1, 2] and test.image_ids[:2] == [11, 12]
    assert test.file_paths[0] == base / "images/001.Bird_1/Bird_1_0010.jpg"
    assert test[0][0].mode == "RGB"


def test_cub_bad_input(tmp_path):
    with pytest.raises(DataError, match="no CUB-200-2011 metadata under"):
        CubDataset(tmp_path, "cubs", "train")
    base = write_cub(tmp_path, train=[2, 2], test=[1, 1])
    (base / "images/002.Bird_2/Bird_2_0000.jpg").unlink()
    with pytest.raises(DataError, match=r"1 image file\(s\) listed in .*images.txt"):
        CubDataset(tmp_path, "cubs", "train")
    (base / "train_test_split.txt").write_text("1 1\n2 yes\n")
    with pytest.raises(DataError, match="train_test_split.txt has a non-integer value"):
        CubDataset(tmp_path, "cubs", "train")
    (base / "train_test_split.txt").write_text("1 1\n")
    with pytest.raises(DataError, match=r"train_test_split.txt has no line for image id\(s\) \[2, 3"):
        CubDataset(tmp_path, "cubs", "train")
    (base / "classes.txt").write_text("1 001.Bird_1\nbird two\n")
    with pytest.raises(DataError, match="classes.txt:2: 'bird two'"):
        CubDataset(tmp_path, "cubs", "train")
    (base / "classes.txt").unlink()
    with pytest.raises(DataError, match="classes.txt does not exist"):
        CubDataset(tmp_path, "cubs", "train")


# ------------------------------------------------------------------------------ dispatch


def test_build_dataset_dispatches_on_layout(tmp_path):
    root = write_decathlon(tmp_path / "dec")
    write_folder(tmp_path / "extra", "flowers", {"a": 2}, {"a": 1})
    write_cub(tmp_path / "extra", train=[2], test=[1])
    assert type(build_dataset(AIRCRAFT, root, "val")) is DecathlonDataset
    assert type(build_dataset("flowers", tmp_path / "extra", "test", suite="extra")) is FolderDataset
    assert type(build_dataset(get_domain("cubs"), tmp_path / "extra", "trainval")) is CubDataset
    assert set(READERS) == {"decathlon", "folder", "cub"}
    with pytest.raises(UnknownNameError, match="unknown layout 'zip'"):
        build_dataset(dataclasses.replace(AIRCRAFT, layout="zip"), root, "train")


# ------------------------------------------------------------------------------ the generated suite


def test_generated_suite_loads_through_the_readers(tmp_path):
    from decathlon.generate import generate_suite, suite_specs

    params = {"image_size": 8, "source_counts": (1, 1, 1), "target_counts": (1, 1, 1), "extra_counts": (2, 1)}
    paths = generate_suite(tmp_path, **params)
    for spec in suite_specs(**params):
        root = paths.decathlon_root if spec.layout == "decathlon" else paths.extra_root
        sizes = {split: len(build_dataset(spec, root, split)) for split in SPLITS}
        assert sizes["trainval"] == spec.split_sizes["train"] + spec.split_sizes["val"], spec.name
        assert sizes["train"] + sizes["val"] == sizes["trainval"] and sizes["val"] > 0, spec.name
        assert sizes["test"] == spec.split_sizes["test"], spec.name
        test = build_dataset(spec, root, "test")
        assert test.num_classes == spec.num_classes and set(test.labels) == set(range(spec.num_classes))
        assert test[0][0].mode == "RGB"
    aircraft = DecathlonDataset(paths.decathlon_root, "aircraft", "test", suite="mini")
    assert aircraft.image_ids[0] == D + 200001 + 2 * aircraft.num_classes  # after train and val
    mean, std = load_mean_std(paths.decathlon_root, aircraft.spec)
    assert mean != aircraft.spec.mean and all(0 < v < 1 for v in mean + std)  # the generated pickle


def test_datasets_pickle_for_spawned_dataloader_workers(tmp_path):
    root = write_decathlon(tmp_path / "dec")
    extra = tmp_path / "extra"
    write_folder(extra, "flowers", {"a": 3}, {"a": 1})
    for ds in (DecathlonDataset(root, "aircraft", "val"), build_dataset("flowers", extra, "val")):
        copy = pickle.loads(pickle.dumps(ds))
        assert copy.spec == ds.spec and copy.image_ids == ds.image_ids and copy.labels == ds.labels
        assert copy[0][0].tobytes() == ds[0][0].tobytes()


def test_a_missing_trainval_image_names_the_annotation_file_that_lists_it(mini_suite, tmp_path):
    import shutil

    root = tmp_path / "decathlon-1.0"
    shutil.copytree(mini_suite.decathlon_root, root)
    (root / "data" / "svhn" / "train" / "000005.jpg").unlink()
    with pytest.raises(DataError, match=r"listed in .*svhn_train\.json are missing, e\.g\. .*000005\.jpg"):
        build_dataset("svhn", root, "trainval", suite="mini")
