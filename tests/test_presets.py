"""Transform presets: geometry as data, output sizes per geometry family, normalisation, flips."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from decathlon.config import PRESETS as CONFIG_PRESETS
from decathlon.domains import CENTER, CROP, IMAGENET, RESIZE, SOURCE, get_domain, suite_domains
from decathlon.errors import UnknownNameError
from decathlon.presets import PRESETS, Geometry, crop_size, get_preset


def _image(width: int, height: int, seed: int = 0) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _small(spec):
    # the extra datasets are stored at 224 px; a 32 px stand-in keeps the test fast with the same rules
    return dataclasses.replace(spec, image_size=32) if spec.geometry == IMAGENET else spec


def test_registry_matches_config_and_unknown_names_fail():
    assert tuple(PRESETS) == CONFIG_PRESETS
    assert get_preset("faithful").name == "faithful"
    with pytest.raises(UnknownNameError, match="unknown preset 'fancy'.*faithful"):
        get_preset("fancy")


@pytest.mark.parametrize(("domain", "train", "expected"), [
    ("aircraft", True, Geometry(72, 64, random_crop=True, flip=False)),
    ("aircraft", False, Geometry(72, 72)),
    ("gtsrb", True, Geometry(72, 72)),
    ("omniglot", False, Geometry(72, 72)),
    ("daimlerpedcls", True, Geometry(72, None)),
    ("daimlerpedcls", False, Geometry(72, None)),
    ("cubs", False, Geometry(256, 224)),
])
def test_faithful_geometry_is_the_reference_recipe(domain, train, expected):
    assert get_preset("faithful").geometry(get_domain(domain), train) == expected


def test_faithful_imagenet_training_is_random_resized_crop_with_flip():
    geo = get_preset("faithful").geometry(get_domain("cubs"), True)
    assert (geo.resize, geo.crop, geo.flip, geo.scale) == (None, 224, True, (0.08, 1.0))


@pytest.mark.parametrize(("domain", "train", "expected"), [
    ("aircraft", True, Geometry(72, 64, random_crop=True, flip=True)),
    ("aircraft", False, Geometry(72, 64)),  # tested at the training crop size
    ("gtsrb", True, Geometry(72, 72, flip=False)),  # spec.flip is False: signs change meaning
    # Daimler as the residual-adapters loader treats it: RandomCrop(64) + flip, tested at CenterCrop(64)
    ("daimlerpedcls", True, Geometry(72, 64, random_crop=True, flip=True)),
    ("daimlerpedcls", False, Geometry(72, 64)),
    # the source domain is evaluated as the published ImNet entries were (residual adapters: 64 px centre)
    ("imagenet12", False, Geometry(72, 64)),
])
def test_adapters_geometry_adds_label_preserving_flips_and_tests_at_64(domain, train, expected):
    assert get_preset("adapters").geometry(get_domain(domain), train) == expected


def test_faithful_evaluates_the_source_domain_at_the_published_64_px_centre():
    # the ImNet column is the pretrained network's accuracy as residual adapters measured it (CenterCrop 64)
    assert get_preset("faithful").geometry(get_domain("imagenet12"), False) == Geometry(72, 64)
    assert get_preset("faithful").geometry(get_domain("aircraft"), False) == Geometry(72, 72)


def test_crop_scales_with_stored_image_size():
    small = dataclasses.replace(get_domain("dtd"), image_size=36)
    assert crop_size(small) == 32
    assert get_preset("faithful").geometry(small, True) == Geometry(36, 32, random_crop=True)
    assert get_preset("faithful").geometry(small, False) == Geometry(36, 36)
    assert get_preset("adapters").geometry(small, False) == Geometry(36, 32)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_geometry_depends_on_the_spec_not_its_name(preset):
    for spec in suite_domains("all"):
        renamed = dataclasses.replace(spec, name="renamed", label="R")
        for train in (True, False):
            assert get_preset(preset).geometry(renamed, train) == get_preset(preset).geometry(spec, train)


@pytest.mark.parametrize("preset", list(PRESETS))
@pytest.mark.parametrize("spec", suite_domains("all"), ids=lambda s: s.name)
def test_transform_output_matches_geometry_output_size(preset, spec):
    spec = _small(spec)
    s = spec.image_size
    # a stored image: shorter side = image_size; Daimler's are 72 wide x 144 high, others landscape
    width, height = (s, 2 * s) if spec.geometry == RESIZE else (s * 4 // 3, s)
    for train in (True, False):
        geo = get_preset(preset).geometry(spec, train)
        out = get_preset(preset).transform(spec, spec.mean, spec.std, train=train)(_image(width, height))
        assert out.dtype == torch.float32
        assert tuple(out.shape) == (3, *geo.output_size(height, width))


@pytest.mark.parametrize(("domain", "size", "train_hw", "test_hw"), [
    ("aircraft", (96, 72), (64, 64), (72, 72)),  # CROP: random 64 px crops, 72 px centre for testing
    ("svhn", (80, 72), (72, 72), (72, 72)),  # CENTER: the whole centre square
    ("daimlerpedcls", (72, 144), (144, 72), (144, 72)),  # RESIZE: 72 wide x 144 high kept non-square
])
def test_faithful_output_sizes(domain, size, train_hw, test_hw):
    spec, preset = get_domain(domain), get_preset("faithful")
    img = _image(*size)
    assert tuple(preset.train_transform(spec, spec.mean, spec.std)(img).shape) == (3, *train_hw)
    assert tuple(preset.test_transform(spec, spec.mean, spec.std)(img).shape) == (3, *test_hw)


def test_larger_images_are_resized_on_the_shorter_side_first():
    spec = get_domain("daimlerpedcls")
    out = get_preset("faithful").test_transform(spec, spec.mean, spec.std)(_image(36, 72))
    assert tuple(out.shape) == (3, 144, 72)
    assert Geometry(72, None).output_size(72, 36) == (144, 72)


def test_normalisation_uses_the_given_statistics():
    spec = get_domain("gtsrb")
    value = 128
    img = Image.new("RGB", (72, 72), (value, value, value))
    mean, std = (0.2, 0.5, 0.7), (0.1, 0.25, 0.5)
    out = get_preset("faithful").test_transform(spec, mean, std)(img)
    expected = torch.tensor([(value / 255 - m) / s for m, s in zip(mean, std, strict=True)])
    assert torch.allclose(out.mean(dim=(1, 2)), expected, atol=1e-5)
    assert torch.allclose(out.std(dim=(1, 2)), torch.zeros(3), atol=1e-5)


def test_faithful_training_is_deterministic_without_crop_augmentation():
    spec = get_domain("omniglot")
    img = _image(72, 72, seed=3)
    train = get_preset("faithful").train_transform(spec, spec.mean, spec.std)
    test = get_preset("faithful").test_transform(spec, spec.mean, spec.std)
    torch.manual_seed(0)
    assert all(torch.equal(train(img), test(img)) for _ in range(5))


def test_adapters_flip_draws_both_orientations_and_nothing_else():
    spec = dataclasses.replace(get_domain("gtsrb"), flip=True)  # a CENTER domain whose flips are allowed
    img = _image(72, 72, seed=4)
    plain = get_preset("adapters").test_transform(spec, spec.mean, spec.std)(img)
    mirrored = torch.flip(plain, dims=(2,))
    train = get_preset("adapters").train_transform(spec, spec.mean, spec.std)
    torch.manual_seed(0)
    seen = set()
    for _ in range(20):
        out = train(img)
        assert torch.equal(out, plain) or torch.equal(out, mirrored)
        seen.add(torch.equal(out, mirrored))
    assert seen == {True, False}


def test_random_crop_is_a_window_of_the_resized_image():
    spec = get_domain("vgg-flowers")
    img = _image(72, 72, seed=5)
    full = torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255
    train = get_preset("faithful").train_transform(spec, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    torch.manual_seed(1)
    out = train(img)
    windows = full.unfold(1, 64, 1).unfold(2, 64, 1)  # (3, 9, 9, 64, 64): every 64 px window
    hits = [(i, j) for i in range(9) for j in range(9) if torch.allclose(windows[:, i, j], out, atol=1e-6)]
    assert len(hits) == 1


def test_unknown_geometry_family_fails_with_the_known_ones():
    spec = dataclasses.replace(get_domain("dtd"), geometry="fisheye")
    with pytest.raises(UnknownNameError, match="fisheye"):
        get_preset("faithful").geometry(spec, True)
    assert set(get_preset("faithful").rules) == {CROP, CENTER, RESIZE, IMAGENET, SOURCE}
