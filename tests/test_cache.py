"""The decode-once cache and the batched augmentation path (decathlon.cache)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional as F

from decathlon import cache
from decathlon.data import build_dataset
from decathlon.domains import get_domain, suite_domains
from decathlon.errors import ConfigError, DataError
from decathlon.presets import Geometry, get_preset
from tests.fakes import write_decathlon

MEAN, STD = (0.48, 0.45, 0.41), (0.23, 0.22, 0.25)
TRAIN = Geometry(72, 64, random_crop=True)  # the faithful CROP training geometry


def _varied_domain(root: Path) -> Path:
    """A Decathlon-layout aircraft domain whose train images have different widths (72 px high)."""
    base = write_decathlon(root, "aircraft", classes=3, sizes={"train": 6, "val": 3, "test": 3},
                           image_size=(96, 72))
    rng = np.random.default_rng(1)
    for i, width in enumerate((72, 80, 96, 121, 150, 73)):
        path = base / "data" / "aircraft" / "train" / f"{i + 1:06d}.jpg"
        Image.fromarray(rng.integers(0, 256, (72, width, 3), dtype=np.uint8)).save(path, quality=90)
    return base


@pytest.fixture
def varied(tmp_path):
    base = _varied_domain(tmp_path / "data")
    return build_dataset(get_domain("aircraft"), base, "train"), tmp_path / "cache"


def _open(dataset, cache_dir, geometry=TRAIN):
    return cache.cache_for_dataset(dataset, geometry, cache_dir=cache_dir, progress=False)


def _pil_crop(image: Image.Image, geometry: Geometry, top: int, left: int, flip: bool) -> np.ndarray:
    """The reference PIL path with explicit crop offsets and flip: Resize, crop, flip (as the preset)."""
    image = transforms.Resize(geometry.resize)(image)
    if geometry.crop is not None:
        image = F.crop(image, top, left, geometry.crop, geometry.crop)
    if flip:
        image = F.hflip(image)
    return np.asarray(image)


# ------------------------------------------------------------------------------------ build and reuse


def test_build_then_reuse_without_decoding(varied, monkeypatch):
    dataset, cache_dir = varied
    first = _open(dataset, cache_dir)
    assert first.built and first.decoded == len(dataset) == 6
    widths = (72, 80, 96, 121, 150, 73)
    assert first.images.shape == (3 * 72 * sum(widths),)  # every pixel once, no padding
    assert first.starts.tolist() == [3 * 72 * sum(widths[:i]) for i in range(6)]
    for i in range(6):  # channels first, as ToTensor lays them out
        assert np.array_equal(first.image(i).permute(1, 2, 0).numpy(), np.asarray(dataset[i][0]))
    assert first.sizes.tolist() == [[72, w] for w in widths]
    assert first.labels.tolist() == dataset.labels
    meta_mtime = (first.directory / "meta.json").stat().st_mtime_ns

    def no_decoding(*args, **kwargs):
        raise AssertionError("the second open decoded an image")

    monkeypatch.setattr(cache, "decode_image", no_decoding)
    second = _open(dataset, cache_dir)
    assert not second.built and second.decoded == 0
    assert second.directory == first.directory
    assert (second.directory / "meta.json").stat().st_mtime_ns == meta_mtime
    assert torch.equal(second.images, first.images)
    # no temporary folders left behind
    assert [p.name for p in cache_dir.iterdir()] == [first.directory.name]


def test_default_cache_dir_and_env(tmp_path, monkeypatch):
    monkeypatch.delenv(cache.CACHE_ENV, raising=False)
    root = tmp_path / "data" / "decathlon-1.0"
    assert cache.default_cache_dir(root) == (tmp_path / "data" / ".cache" / "spottune-decathlon").resolve()
    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "elsewhere"))
    assert cache.default_cache_dir(root) == tmp_path / "elsewhere"


def test_annotation_change_rebuilds(varied):
    dataset, cache_dir = varied
    first = _open(dataset, cache_dir)
    annotation = dataset.annotation_paths[0]
    annotation.write_text(annotation.read_text().replace('"fake"', '"edited"'))
    second = _open(build_dataset(get_domain("aircraft"), dataset.root, "train"), cache_dir)
    assert second.built and second.directory != first.directory
    assert not first.directory.exists()  # the stale cache of the same files is removed


def test_image_change_rebuilds_with_new_pixels(varied):
    dataset, cache_dir = varied
    first = _open(dataset, cache_dir)
    path = dataset.file_paths[2]
    new = np.full((72, 96, 3), 200, dtype=np.uint8)
    Image.fromarray(new).save(path, quality=100)
    os.utime(path, ns=(1, 1))  # a different mtime even on coarse file-system clocks
    second = _open(dataset, cache_dir)
    assert second.built and second.directory != first.directory
    stored = second.image(2).permute(1, 2, 0).numpy()
    assert np.array_equal(stored, np.asarray(Image.open(path).convert("RGB")))


def test_corrupt_image_raises_data_error_naming_it(varied):
    dataset, cache_dir = varied
    bad = dataset.file_paths[3]
    bad.write_bytes(bad.read_bytes()[:200])  # a truncated JPEG: the header parses, the pixels do not
    with pytest.raises(DataError, match=str(bad.name)):
        _open(dataset, cache_dir)
    assert not any(cache_dir.iterdir())  # the interrupted build left nothing behind


def test_unsupported_geometry_is_a_config_error(varied):
    dataset, cache_dir = varied
    rrc = get_preset("faithful").geometry(get_domain("cubs"), train=True)
    with pytest.raises(ConfigError, match="scale"):
        _open(dataset, cache_dir, rrc)


# ------------------------------------------------------------------------------------ pixel parity


def _hwc(crop: torch.Tensor) -> np.ndarray:
    """A (3, h, w) uint8 crop as the (h, w, 3) array PIL gives."""
    return crop.permute(1, 2, 0).numpy()


@pytest.mark.parametrize("gather", [False, True], ids=["slices", "gather"])
@pytest.mark.parametrize("geometry", [
    Geometry(72, 64, random_crop=True, flip=True),  # faithful/adapters CROP training
    Geometry(72, 72),  # centre crop of the whole height
    Geometry(72, 80),  # a centre crop larger than the image: zero padding as torchvision (gather only)
    Geometry(64, 48, random_crop=True),  # a resize that resamples (shorter side 72 -> 64)
])
def test_batched_crops_equal_pil_crops(varied, geometry, gather):
    dataset, cache_dir = varied
    opened = _open(dataset, cache_dir, geometry)
    geo = cache.crop_geometry(geometry)
    index = torch.tensor([4, 0, 5, 2, 1, 3])  # a shuffled batch: starts and sizes follow the index
    n = len(index)
    starts, sizes = opened.starts[index], opened.sizes[index]
    offsets = cache.crop_offsets(sizes, geo, torch.Generator().manual_seed(3))
    flips = torch.tensor([True, False] * (n // 2)) if geometry.flip else torch.zeros(n, dtype=torch.bool)
    out_hw = cache.output_size(sizes, geo)
    if geometry.crop == 80 and not gather:
        with pytest.raises(DataError, match="inside the images"):
            cache.crop_batch(opened.images, starts, sizes, offsets, flips, out_hw, gather=False)
        return
    crops = cache.crop_batch(opened.images, starts, sizes, offsets, flips, out_hw, gather=gather)
    assert crops.shape == (n, 3, *out_hw) and crops.dtype == torch.uint8
    for k, i in enumerate(index.tolist()):
        image, _ = dataset[i]
        if geometry.random_crop:
            expected = _pil_crop(image, geometry, int(offsets[k, 0]), int(offsets[k, 1]), bool(flips[k]))
        else:  # the preset's own deterministic transform, no explicit offsets
            expected = np.asarray(transforms.Compose(geometry.ops())(image))
        assert np.array_equal(_hwc(crops[k]), expected), f"image {i}"


def test_random_offsets_cover_the_valid_range(varied):
    dataset, cache_dir = varied
    opened = _open(dataset, cache_dir)
    geo = cache.crop_geometry(Geometry(72, 64, random_crop=True))
    sizes = opened.sizes.repeat(400, 1)
    offsets = cache.crop_offsets(sizes, geo, torch.Generator().manual_seed(0))
    room = sizes - 64
    assert bool((offsets >= 0).all()) and bool((offsets <= room).all())
    widest = sizes[:, 1] == 150  # 87 possible left offsets: both ends are drawn
    assert offsets[widest, 1].min() == 0 and offsets[widest, 1].max() == 86
    assert offsets[:, 0].max() == 8


def test_random_crop_larger_than_image_is_a_data_error(varied):
    dataset, cache_dir = varied
    opened = _open(dataset, cache_dir)
    with pytest.raises(DataError, match="larger than image"):
        cache.crop_offsets(opened.sizes, cache.crop_geometry(Geometry(72, 73, random_crop=True)), None)


# ------------------------------------------------------------------------------------ loaders


def test_batched_normalisation_equals_torchvision(varied):
    dataset, cache_dir = varied
    geometry = Geometry(72, 72)
    opened = _open(dataset, cache_dir, geometry)
    loader = cache.CachedLoader(opened, geometry, MEAN, STD, batch_size=4)
    images, labels, index = zip(*loader, strict=True)
    images, labels, index = torch.cat(images), torch.cat(labels), torch.cat(index)
    assert index.tolist() == list(range(6)) and labels.tolist() == dataset.labels
    reference = transforms.Compose(geometry.ops() + [transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    expected = torch.stack([reference(dataset[i][0]) for i in range(6)])
    assert images.shape == expected.shape == (6, 3, 72, 72) and images.dtype == torch.float32
    assert torch.allclose(images, expected, atol=1e-6, rtol=0)
    last = cache.CachedLoader(opened, geometry, MEAN, STD, batch_size=4, channels_last=True)
    first = next(iter(last))[0]
    assert first.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(first, images[:4])


def _epoch(loader):
    return [(x.clone(), y.clone(), i.clone()) for x, y, i in loader]


def test_batches_are_deterministic_for_a_seed_and_worker_count(varied):
    dataset, cache_dir = varied
    geometry = Geometry(72, 64, random_crop=True, flip=True)

    def loader(seed, workers=0):
        return cache.make_train_loader(dataset, geometry, MEAN, STD, batch_size=4, drop_last=False,
                                       generator=torch.Generator().manual_seed(seed), num_workers=workers,
                                       cache_dir=cache_dir, progress=False)

    a, b, c = loader(0), loader(0), loader(1)
    assert len(a) == 2
    epochs_a = [_epoch(a), _epoch(a)]
    epochs_b = [_epoch(b), _epoch(b)]
    for ea, eb in zip(epochs_a, epochs_b, strict=True):
        for (xa, ya, ia), (xb, yb, ib) in zip(ea, eb, strict=True):
            assert torch.equal(xa, xb) and torch.equal(ya, yb) and torch.equal(ia, ib)
    # a new epoch draws a new permutation / crops; another seed gives other batches
    assert not torch.equal(epochs_a[0][0][0], epochs_a[1][0][0])
    assert not torch.equal(epochs_a[0][0][0], _epoch(c)[0][0])
    # the plan is drawn in the main process: worker processes give the same batches
    with_workers = _epoch(loader(0, workers=2))
    for (xa, ya, ia), (xw, yw, iw) in zip(epochs_a[0], with_workers, strict=True):
        assert torch.equal(xa, xw) and torch.equal(ya, yw) and torch.equal(ia, iw)
    # every image once per epoch, labels follow the indices
    seen = torch.cat([i for _, _, i in epochs_a[0]])
    assert sorted(seen.tolist()) == list(range(6))
    labels = torch.cat([y for _, y, _ in epochs_a[0]])
    assert labels.tolist() == [dataset.labels[i] for i in seen.tolist()]


def test_subset_and_drop_last(varied):
    dataset, cache_dir = varied
    subset = torch.utils.data.Subset(dataset, [5, 1, 3])
    loader = cache.make_train_loader(subset, Geometry(72, 64, random_crop=True), MEAN, STD, batch_size=2,
                                     generator=torch.Generator().manual_seed(0), drop_last=True,
                                     cache_dir=cache_dir, progress=False)
    batches = _epoch(loader)
    assert len(loader) == len(batches) == 1 and batches[0][0].shape == (2, 3, 64, 64)
    assert set(batches[0][2].tolist()) <= {5, 1, 3}
    evaluation = cache.make_eval_loader(subset, Geometry(72, 72), MEAN, STD, batch_size=2,
                                        cache_dir=cache_dir, progress=False)
    assert [i.tolist() for _, _, i in evaluation] == [[5, 1], [3]]


def test_no_crop_needs_one_image_size(varied):
    dataset, cache_dir = varied
    opened = _open(dataset, cache_dir, Geometry(72, None))
    with pytest.raises(DataError, match=r"image\(s\) differ in size from the other .*\.\w+ \(\d+x\d+\)"):
        cache.CachedLoader(opened, Geometry(72, None), MEAN, STD, batch_size=2)


# ------------------------------------------------------------------------------------ the generated suite


def _mini_decathlon_specs():
    return [s for s in suite_domains("mini") if s.layout == "decathlon" and not s.is_source]


def test_generated_suite_parity_every_preset_and_domain(mini_suite, tmp_path):
    """Explicit offsets and flips on every generated Decathlon domain (Daimler non-square included), for
    both presets' training and test geometries: the batched crops equal the PIL path's pixels."""
    checked = set()
    for spec in _mini_decathlon_specs():
        dataset = build_dataset(spec, mini_suite.decathlon_root, "val")
        n = min(len(dataset), 4)
        images = [dataset[i][0] for i in range(n)]
        for preset_name in ("faithful", "adapters"):
            for train in (True, False):
                geometry = get_preset(preset_name).geometry(spec, train)
                opened = _open(dataset, tmp_path / "cache", geometry)
                geo = cache.crop_geometry(geometry)
                offsets = cache.crop_offsets(opened.sizes[:n], geo, torch.Generator().manual_seed(n))
                flips = (torch.arange(n) % 2 == 0) & geo.flip
                out_hw = cache.output_size(opened.sizes, geo)
                crops = cache.crop_batch(opened.images, opened.starts[:n], opened.sizes[:n], offsets, flips,
                                         out_hw)
                for i, image in enumerate(images):
                    if geometry.random_crop:
                        top, left = int(offsets[i, 0]), int(offsets[i, 1])
                    else:  # the preset's own centre crop decides the window
                        top = left = None
                    expected = _reference_pixels(image, geometry, top, left, bool(flips[i]))
                    assert np.array_equal(_hwc(crops[i]), expected), (spec.name, preset_name, train, i)
                checked.add((spec.geometry, out_hw[0] != out_hw[1]))
    assert ("resize", True) in checked  # Daimler: non-square batches (2:1)


def _reference_pixels(image, geometry, top, left, flip):
    """The preset's own PIL ops, with the random parts (crop window, flip) fixed by the caller."""
    ops = []
    for op in geometry.ops():
        if isinstance(op, transforms.RandomCrop):
            ops.append(transforms.Lambda(lambda im, op=op: F.crop(im, top, left, *op.size)))
        elif isinstance(op, transforms.RandomHorizontalFlip):
            continue
        else:
            ops.append(op)
    out = transforms.Compose(ops)(image)
    return np.asarray(F.hflip(out) if flip else out)


def test_training_through_the_cache_matches_the_pil_path(tmp_path, monkeypatch):
    """Without random augmentation (a CENTER domain of the faithful preset) both data paths feed the same
    batches in the same order: the run's per-epoch metrics and final evaluation are identical. The 20 px
    images are resized to 72 px, so the resampling Resize is covered too."""
    from decathlon.config import RunConfig
    from decathlon.engine import run

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    root = write_decathlon(tmp_path / "data", "gtsrb", classes=4, sizes={"train": 36, "val": 12, "test": 4},
                           image_size=(20, 20))
    geometry = get_preset("faithful").geometry(get_domain("gtsrb"), True)
    assert geometry.resize == 72 and not geometry.random_crop and not geometry.flip
    base = RunConfig(suite="decathlon", method="finetune", domain="gtsrb", data_root=str(root),
                     protocol="train->val", epochs=2, batch_size=16, eval_batch_size=32, num_workers=0,
                     width=0.125, device="cpu", limit_train_images=30)
    results = {}
    for flag in (False, True):
        run_dir = tmp_path / f"cache-{flag}"
        results[flag] = run(base.replace(cache=flag), run_dir)
        results[flag]["epochs_log"] = [
            {k: v for k, v in json.loads(line).items() if k in ("train_loss", "train_top1")}
            for line in (run_dir / "epochs.jsonl").read_text().splitlines()]
        results[flag]["predicted"] = json.loads((run_dir / "predictions.json").read_text())["predicted"]
    assert len(list((tmp_path / "cache").iterdir())) == 2  # the cache path really ran (train and val)
    assert len(results[True]["epochs_log"]) == 2
    for key in ("top1", "loss", "epochs_log", "predicted"):
        assert results[True][key] == results[False][key], key


def test_engine_keeps_random_resized_crops_on_the_pil_path(mini_suite, tmp_path, monkeypatch):
    """The extra datasets train with RandomResizedCrop, which the cache does not implement: with
    ``cache=True`` the engine trains them through PIL and still evaluates (Resize + CenterCrop) cached."""
    from decathlon.config import RunConfig
    from decathlon.engine import build_data

    monkeypatch.setenv(cache.CACHE_ENV, str(tmp_path / "cache"))
    spec = get_domain("flowers", suite="mini")
    preset = get_preset("faithful")
    assert not cache.supports(preset.geometry(spec, True)) and cache.supports(preset.geometry(spec, False))
    config = RunConfig(suite="mini", method="finetune", domain="flowers", protocol="train->val", cache=True,
                       data_root=str(mini_suite.extra_root), num_workers=0, device="cpu", eval_batch_size=8)
    data = build_data(config, spec, torch.device("cpu"), torch.Generator().manual_seed(0))
    assert isinstance(data.train_loader, torch.utils.data.DataLoader)
    assert isinstance(data.eval_loader, cache.CachedLoader)
    images, labels, index = next(iter(data.eval_loader))
    assert images.shape == (8, 3, spec.image_size, spec.image_size)
    assert labels.tolist() == [data.eval.labels[i] for i in index.tolist()]
