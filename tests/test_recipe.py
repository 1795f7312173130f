"""Defaults that follow the reference code, or are a recorded deviation (README, "Deviations")."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from decathlon.config import RunConfig
from decathlon.data import MEAN_STD_FILE, load_mean_std
from decathlon.domains import get_domain
from decathlon.report import suite_defaults
from decathlon.schedules import lr_factor
from decathlon.suites import EXTRA_RECIPE, get_suite

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_reference_recipe_trains_in_fp32():
    # the reference trains in fp32; mixed precision is an opt-in, recorded setting
    assert RunConfig().amp is False
    assert suite_defaults("decathlon", "decathlon")["amp"] is False


def test_extra_datasets_use_the_piggyback_resnet50_recipe():
    # Piggyback's fine-tuning baselines (run_baselines.sh): SGD lr 1e-3, 30 epochs, x0.1 after 15, batch 32,
    # no weight decay; set once in decathlon.suites and used by the extra and all suites
    config = RunConfig.from_dict(dict(get_suite("extra").overrides("extra")))
    assert (config.backbone, config.lr, config.epochs, config.batch_size, config.weight_decay) == (
        "resnet50", 1e-3, 30, 32, 0.0)
    factors = [lr_factor(config.schedule, e, config.epochs, milestones=config.milestones) for e in range(30)]
    assert factors[:15] == [1.0] * 15 and factors[15:] == pytest.approx([0.1] * 15)
    assert get_suite("all").overrides("extra") == EXTRA_RECIPE
    # the Decathlon family keeps the SpotTune reference recipe
    decathlon = RunConfig.from_dict(dict(get_suite("decathlon").overrides("decathlon")))
    assert (decathlon.lr, decathlon.epochs, decathlon.batch_size) == (0.1, 110, 128)


def test_sketches_uses_imagenet_statistics_even_beside_a_decathlon_pickle(tmp_path):
    # the ResNet-50 was pretrained on ImageNet-normalised images; the pickle's `sketches` entry describes
    # the 72 px Decathlon-style copy and is ignored for the extra dataset
    stats = {"sketchesmean": np.full(3, 0.97960958), "sketchesstd": np.full(3, 0.06532731),
             "aircraftmean": np.array([0.1, 0.2, 0.3]), "aircraftstd": np.array([0.4, 0.5, 0.6])}
    (tmp_path / MEAN_STD_FILE).write_bytes(pickle.dumps(stats, protocol=2))
    mean, std = load_mean_std(tmp_path, get_domain("sketches"))
    assert mean == pytest.approx(IMAGENET_MEAN) and std == pytest.approx(IMAGENET_STD)
    # Decathlon-layout domains still prefer the user's pickle
    assert load_mean_std(tmp_path, get_domain("aircraft"))[0] == pytest.approx((0.1, 0.2, 0.3))
