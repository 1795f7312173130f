"""One decode policy for the PIL path and the cache, on small real-format files altered as public bug
reports describe: 16-bit PNGs, decompression bombs, images of another size, non-UTF-8 file names, and the
extra datasets' two layouts."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from decathlon import cache
from decathlon.data import MAX_PIXELS_ENV, CubDataset, FolderDataset, build_dataset, naming_batches
from decathlon.domains import get_domain
from decathlon.errors import DataError
from decathlon.io import atomic_write_json
from decathlon.presets import Geometry
from tests.fakes import write_cub, write_folder

FLOWERS = get_domain("flowers")
WHOLE = Geometry(None, None)  # no resize, no crop: every image of a split must have one size


def _cache_pixels(dataset, tmp_path, geometry=WHOLE) -> list[np.ndarray]:
    opened = cache.cache_for_dataset(dataset, geometry, cache_dir=tmp_path / "cache", progress=False)
    return [opened.image(i).permute(1, 2, 0).numpy() for i in range(len(opened))]


# ------------------------------------------------------------------------------------- 16-bit images


def test_a_16_bit_grayscale_png_is_scaled_to_8_bits_on_both_paths(tmp_path):
    root = write_folder(tmp_path, "flowers", {"a": 1}, {"a": 1})
    ramp = (np.arange(100, dtype=np.uint32).reshape(10, 10) * 655).astype(np.uint16)  # 0 .. 64845
    Image.fromarray(ramp).save(root / "test" / "a" / "deep.png")
    assert Image.open(root / "test" / "a" / "deep.png").mode == "I;16"
    test = FolderDataset(tmp_path, FLOWERS, "test")
    position = [p.name for p in test.file_paths].index("deep.png")
    expected = np.round(ramp.astype(np.float64) * 255 / 65535).astype(np.uint8)
    pil = np.asarray(test[position][0])
    assert pil.shape == (10, 10, 3) and (pil == expected[:, :, None]).all()  # not clipped to white
    assert (_cache_pixels(test, tmp_path)[position] == pil).all()


def test_a_32_bit_integer_image_is_refused_naming_the_file(tmp_path):
    root = write_folder(tmp_path, "flowers", {"a": 1}, {"a": 1})
    Image.fromarray(np.full((10, 10), 70000, dtype=np.int32)).save(root / "test" / "a" / "wide.tif")
    test = FolderDataset(tmp_path, FLOWERS, "test")
    position = [p.name for p in test.file_paths].index("wide.tif")
    with pytest.raises(DataError, match=r"wide\.tif has mode 'I'"):
        test[position]


# ------------------------------------------------------------------------------------- decode errors


def test_a_decompression_bomb_is_a_data_error_naming_the_file_on_both_paths(tmp_path, monkeypatch):
    write_folder(tmp_path, "flowers", {"a": 2}, {"a": 1}, image_size=(40, 40))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 400)  # 1600 px > 2 x 400: Pillow raises
    train = FolderDataset(tmp_path, FLOWERS, "trainval")
    with pytest.raises(DataError, match=rf"{train.file_paths[0]}.*DecompressionBombError.*{MAX_PIXELS_ENV}"):
        train[0]
    with pytest.raises(DataError, match=r"cannot read image .*train/a/000\d\.jpg.*DecompressionBombError"):
        _cache_pixels(train, tmp_path)
    monkeypatch.setenv(MAX_PIXELS_ENV, "1000000")  # the documented way to allow larger images
    assert train[0][0].size == (40, 40)
    assert len(_cache_pixels(train, tmp_path)) == 2


# -------------------------------------------------------------------------------- one size per split


def test_an_image_of_another_size_is_named_before_any_batch_and_in_the_failing_batch(tmp_path):
    root = write_folder(tmp_path, "flowers", {"a": 3, "b": 3}, {"a": 1})
    Image.new("RGB", (12, 10)).save(root / "train" / "b" / "0001.jpg")  # 10x12 among 10x10
    train = FolderDataset(tmp_path, FLOWERS, "trainval")
    with pytest.raises(DataError, match=r"1 image\(s\) differ.*train/b/0001\.jpg \(10x12\)"):
        cache.make_eval_loader(train, WHOLE, (0.5,) * 3, (0.5,) * 3, batch_size=2, cache_dir=tmp_path / "c",
                               progress=False)
    train = FolderDataset(tmp_path, FLOWERS, "trainval", ToTensor())
    loader = DataLoader(**naming_batches(train), batch_size=6)
    with pytest.raises(DataError, match=r"train/b/0001\.jpg \(10x12\)"):
        next(iter(loader))
    images, labels, index = next(iter(DataLoader(**naming_batches(train), batch_size=2)))  # 10x10 only
    assert images.shape == (2, 3, 10, 10) and index.tolist() == [0, 1] and labels.tolist() == [0, 0]


# ------------------------------------------------------------------------------ paths are bytes to the OS


def test_a_non_utf8_file_name_is_cached_and_gets_a_lossless_id(tmp_path):
    root = write_folder(tmp_path, "flowers", {"a": 1}, {"a": 1})
    latin1 = os.fsdecode(b"caf\xe9.jpg")  # a latin-1 name from an old archive
    Image.new("RGB", (10, 10), (200, 10, 10)).save(root / "test" / "a" / latin1, format="JPEG")
    test = FolderDataset(tmp_path, FLOWERS, "test")
    assert "test/a/caf%E9.jpg" in test.image_ids
    ids_json = tmp_path / "predictions.json"
    atomic_write_json(ids_json, {"image_ids": test.image_ids})
    json.loads(ids_json.read_text(encoding="utf-8"))  # valid UTF-8 JSON, no lone surrogates
    assert all(i.encode("utf-8") for i in json.loads(ids_json.read_text())["image_ids"])
    pixels = _cache_pixels(test, tmp_path)
    red = pixels[test.image_ids.index("test/a/caf%E9.jpg")]
    assert len(pixels) == 2 and red[..., 0].mean() > 150 and red[..., 1].mean() < 60


# ------------------------------------------------------------------------------ the extra datasets' layouts


@pytest.mark.parametrize("layout", ["folder", "cub"])
def test_cubs_is_read_in_either_documented_layout(tmp_path, layout):
    if layout == "folder":
        write_folder(tmp_path, "cubs", {"001.Bird": 3, "002.Bird": 2}, {"001.Bird": 1, "002.Bird": 1})
        expected = FolderDataset
    else:
        write_cub(tmp_path, train=[3, 2], test=[1, 1])
        expected = CubDataset
    cubs = get_domain("cubs")
    test = build_dataset(cubs, tmp_path, "test")
    assert type(test) is expected and len(test) == 2 and test.num_classes == 2


def test_an_extra_dataset_in_neither_layout_names_both(tmp_path):
    (tmp_path / "cubs").mkdir()
    with pytest.raises(DataError, match=r"cubs: no dataset of 'cubs'.*class-per-folder.*CUB-200-2011"):
        build_dataset(get_domain("cubs"), tmp_path, "train")


# ------------------------------------------------------------------------------ annotation fields


def test_annotations_without_ids_are_read(tmp_path):
    from decathlon.data import DecathlonDataset
    from tests.fakes import read_json, write_decathlon, write_json

    root = write_decathlon(tmp_path)
    for split in ("train", "val"):
        path = root / "annotations" / f"aircraft_{split}.json"
        doc = read_json(path)
        write_json(path, {**doc, "annotations": [{k: v for k, v in a.items() if k != "id"}
                                                 for a in doc["annotations"]]})
    trainval = DecathlonDataset(root.parent, "aircraft", "trainval")
    assert len(trainval) == 9 and trainval.labels == [0, 1, 2, 0, 1, 2, 0, 1, 2]
