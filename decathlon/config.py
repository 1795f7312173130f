"""The one frozen configuration of a run.

Defaults are the reference recipe (Decathlon, "faithful"); units and reasons are in the comments.
``RunConfig.from_dict`` rejects unknown keys and values outside their allowed set. The resolved config is
saved with every checkpoint and result, and its hash identifies the job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from decathlon.errors import ConfigError

PROTOCOLS = ("train->val", "trainval->test")
SCHEDULES = ("faithful", "multistep", "cosine")
PRESETS = ("faithful", "adapters")
FROZEN_BN = ("faithful", "frozen")
EVAL_POLICIES = ("argmax", "sampled")
L2SP_SCOPES = ("weights", "all")
DEVICE_PATTERN = r"auto|cpu|cuda(:\d+)?"  # the devices the engine places runs on

# Fields that name the job rather than configure it: excluded from the config hash so that the hash
# identifies "the same settings" across methods, domains and seeds.
IDENTITY_FIELDS = ("suite", "method", "domain", "seed", "protocol")
# Fields that say where files live, not what they hold: left out of the hash, so that a results folder, its
# data and its weights can move (the weights' content enters the hash through `weights_digest`).
LOCATION_FIELDS = ("data_root", "pretrained", "pretrained_deep")


@dataclass(frozen=True)
class RunConfig:
    # --- what runs
    suite: str = "decathlon"
    method: str = "spottune"
    domain: str = "aircraft"
    seed: int = 0
    protocol: str = "trainval->test"  # the official SpotTune numbers; "train->val" for model selection
    # --- data
    data_root: str | None = None  # decathlon-1.0 folder (Decathlon layout) or folder of the extra sets
    preset: str = "faithful"  # transform preset, see decathlon.presets
    batch_size: int = 128  # images per step
    eval_batch_size: int = 256
    num_workers: int = 4  # DataLoader workers (0 = in-process)
    limit_train_images: int | None = None  # smoke runs: cap the training set (class-balanced, seeded)
    # --- model
    backbone: str = "resnet26"  # decathlon.networks.resnet registry name
    width: float = 1.0  # channel-width multiplier of ResNet-26 (small CPU configurations use < 1)
    pretrained: str | None = None  # path to the pretrained backbone (harness or official format)
    # --- optimisation (network)
    epochs: int = 110
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float | None = None  # None = the domain's reference value
    schedule: str = "faithful"  # "faithful": one x0.1 drop at 40/110 of the run; "multistep": 40/60/80
    milestones: tuple[float, ...] = (40 / 110, 60 / 110, 80 / 110)  # fractions of the run (multistep)
    lr_gamma: float = 0.1
    frozen_bn: str = "faithful"  # "faithful": pretrained blocks' BN train; "frozen": eval mode, fixed
    # --- policy network (SpotTune)
    policy_lr: float = 0.01
    policy_momentum: float = 0.9
    policy_weight_decay: float = 1e-3
    tau: float = 5.0  # Gumbel-Softmax temperature (reference: 5)
    eval_policy: str = "argmax"  # "argmax" (deterministic) or "sampled" (reference behaviour)
    eval_samples: int = 1  # samples averaged when eval_policy == "sampled"
    # --- Global-k (SpotTune-Global-k): l = l_c + lambda1 * (sum v - k)^2 + lambda2 * sum -v log v
    global_k: int = 6  # fine-tuned blocks shared by every image (half of ResNet-26's 12)
    lambda1: float = 1.0
    lambda2: float = 0.1
    # --- baselines
    l2sp_alpha: float = 0.1  # pull of shared weights toward their pretrained values
    l2sp_beta: float = 0.01  # plain decay of new layers
    l2sp_scope: str = "weights"  # "weights": kernels only (L2-SP reference code); "all": + BN and biases
    stochastic_per_image: bool = True  # stochastic fine-tuning: sample the 50% of blocks per image
    stochastic_eval: str = "mean"  # stochastic fine-tuning at test: "mean" (0.5/0.5 mix), "tuned", "sampled"
    progressive_init: str = "pretrained"  # progressive nets' new column: "pretrained" copy or "random"
    pretrained_deep: str | None = None  # weights of finetune-resnet101's deeper backbone (None = random)
    # LwF (Li & Hoiem 2016, Sec. 3): loss = l_c + lwf_lambda * KL(softmax(y_o/T) || softmax(y_hat_o/T))
    lwf_temperature: float = 2.0  # T of the distillation softmax (the paper: 2)
    lwf_lambda: float = 1.0  # lambda_o, weight of the distillation term (the paper: 1)
    # PiggyBack (Mallya et al. 2018; arunmallya/piggyback src/main.py, scripts/run_piggyback_training.sh)
    piggyback_lr: float = 1e-4  # Adam learning rate of the mask scores (--lr_mask 1e-4)
    piggyback_classifier_lr: float = 1e-4  # Adam learning rate of the new classifier (--lr_classifier 1e-4)
    piggyback_threshold: float = 5e-3  # a weight is kept where its score > threshold (DEFAULT_THRESHOLD)
    piggyback_mask_scale: float = 1e-2  # initial value of every score, i.e. every weight kept (--mask_scale)
    piggyback_train_bn: bool = False  # also train the BN layers (--train_bn; off in the reference script)
    # content identity of `pretrained` and `pretrained_deep` (decathlon.jobs.weights_digest: sha256 of the
    # files, or the id of the plan's job that writes them); hashed in place of their paths
    weights_digest: str | None = None
    # --- engine
    device: str = "auto"  # "auto" = cuda when available, else cpu
    amp: bool = False  # fp16 mixed precision on CUDA (ignored on the CPU); off: the reference trains in fp32
    channels_last: bool = True  # model and batches channels_last (CPU and CUDA: faster on both)
    compile: bool = False  # torch.compile the model
    cache: bool = False  # decode-once uint8 cache and batched augmentation (decathlon.cache)
    # --- GPU execution (each ignored on the CPU; measured by benchmarks/gpu_check.py)
    fused_sgd: bool = True  # CUDA: torch.optim.SGD(fused=True), one kernel over every parameter
    device_rng: bool = True  # CUDA: routing noise drawn on the GPU from a seeded CUDA generator
    cudnn_benchmark: bool = True  # cuDNN autotunes its convolution algorithms for the run's fixed shapes
    deterministic: bool = False  # bit-reproducible GPU runs: deterministic algorithms, no autotuning
    log_every: int = 0  # batches between progress callbacks (0 = once per epoch)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
        """Override `base` (default: the reference defaults) with `values`; unknown keys fail."""
        known = set(cls.field_names())
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {unknown}; known keys: {', '.join(sorted(known))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        cfg = dataclasses.replace(base or cls(), **values)
        cfg.validate()
        return cfg

    def replace(self, **values: Any) -> RunConfig:
        return RunConfig.from_dict(values, base=self)

    def validate(self) -> None:
        for name, allowed in (("protocol", PROTOCOLS), ("schedule", SCHEDULES), ("preset", PRESETS),
                              ("frozen_bn", FROZEN_BN), ("eval_policy", EVAL_POLICIES),
                              ("l2sp_scope", L2SP_SCOPES)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r}; expected one of {', '.join(allowed)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {self.epochs}, {self.batch_size}")
        if self.width <= 0 or self.eval_samples < 1 or self.eval_batch_size < 1:
            raise ConfigError(f"width must be > 0 and eval_samples, eval_batch_size >= 1; got "
                              f"width={self.width}, eval_samples={self.eval_samples}, "
                              f"eval_batch_size={self.eval_batch_size}")
        if self.lwf_temperature <= 0 or self.lwf_lambda < 0 or self.piggyback_lr <= 0 \
                or self.piggyback_classifier_lr <= 0:
            raise ConfigError(f"lwf_temperature, piggyback_lr and piggyback_classifier_lr must be > 0 and "
                              f"lwf_lambda >= 0; got lwf_temperature={self.lwf_temperature}, "
                              f"lwf_lambda={self.lwf_lambda}, piggyback_lr={self.piggyback_lr}, "
                              f"piggyback_classifier_lr={self.piggyback_classifier_lr}")
        if self.piggyback_mask_scale <= self.piggyback_threshold:
            raise ConfigError(f"piggyback_mask_scale={self.piggyback_mask_scale} must exceed "
                              f"piggyback_threshold={self.piggyback_threshold}: the masks must start keeping "
                              "every weight (the untrained model is the pretrained network)")
        if not re.fullmatch(DEVICE_PATTERN, str(self.device)):
            raise ConfigError(f"device={self.device!r}; expected auto, cpu, cuda or cuda:N")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def settings(self) -> dict[str, Any]:
        """The settings of the run: every field but the identity fields and data_root, JSON-ready (tuples
        as lists). Recorded in ``result.json``; reports compare it with the suite's defaults."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.to_dict().items()
                if k not in IDENTITY_FIELDS + ("data_root",)}

    def hash(self) -> str:
        """Short hash of the settings (:meth:`settings`: identity fields and data_root excluded).

        With a `weights_digest` the weights count by content, not path (a moved results folder or weights
        file keeps its jobs); without one (a config built in Python) their paths count, as they did.
        """
        skip = LOCATION_FIELDS if self.weights_digest is not None else ("weights_digest",)
        d = {k: v for k, v in self.settings().items() if k not in skip}
        return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    @property
    def train_split(self) -> str:
        return "train" if self.protocol == "train->val" else "trainval"

    @property
    def eval_split(self) -> str:
        return "val" if self.protocol == "train->val" else "test"


def parse_assignments(items: Sequence[str], what: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings -> dict, each value read as YAML (``3`` int, ``0.5`` float, ``true`` bool)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as e:
            raise ConfigError(f"{what} {item!r}: the value is not valid YAML ({yaml_problem(e)})") from None
    return out


def yaml_problem(error: yaml.YAMLError) -> str:
    """A YAML error on one line: ``line 3, column 7: mapping values are not allowed here`` (PyYAML's own
    message spans several lines, with a copy of the text and a caret)."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or " ".join(str(error).split())
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    return f"{where}{problem}"
