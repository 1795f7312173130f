"""Learning without Forgetting (Li & Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017).

Fine-tuning on the new domain while a distillation term keeps the source classifier's outputs on the new
images close to the original network's::

    loss = l_c(new head) + lambda_o * KL(softmax(y_o / T) || softmax(y_hat_o / T))

y_o: the original (pretrained) network's source-class logits on the training image; y_hat_o: the source
head of the network being trained, on the same image. T = 2 and lambda_o = 1 as in the paper (Sec. 3:
"T = 2", "lambda_o ... set to 1 for most experiments"; the Avalanche library's LwF defaults are the same),
``config.lwf_temperature`` and ``config.lwf_lambda``. Reference code: the authors' MatConvNet release
(lizhitwo/LearningWithoutForgetting); in the Decathlon table the row is Rebuffi et al.'s run of it (NIPS
2017), #par 10.

Interpretations taken (the paper's and the Decathlon runs' details the harness cannot reproduce exactly):

- **Source head**: the pretrained network's own classifier (the source domain's classes), read with the
  weights (:func:`source_num_classes` finds its class count in the weights file), kept as
  ``source_classifier`` beside the new ``classifier``; both are trained, with the shared layers, as in the
  paper (theta_s, theta_o and theta_n jointly).
- **Targets y_o computed on the fly** from a constant copy of the original network (``teacher``, eval
  mode, no gradient) on each augmented training image, instead of recorded once before training: with
  random crops and flips a recorded response would belong to another view of the image. It costs one
  extra forward pass (no backward) per step.
- **KL instead of cross-entropy**: the paper's term is the cross-entropy -sum y'_o log y_hat'_o; the KL
  divergence differs from it by the entropy of the fixed targets, so the gradients are identical, and
  the term is exactly 0 for the unchanged network. No T^2 factor (the paper has none). Mean over images.
- **No warm-up step** (the paper first trains the new head alone): every parameter trains from the first
  step, with the harness's fine-tuning recipe (SGD, ``config.lr``, the domain's weight decay), so LwF
  differs from ``finetune`` only by the distillation term.
- **#par**: the source head is needed only while training; the new domain's predictions use the shared
  layers and the new head, so the source head is declared ``storage_bits`` 0
  (:mod:`decathlon.networks.params`): one network per domain, the published 10.
- Any backbone (ResNet-26, torchvision ResNet-50): the method only adds a head and a teacher.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from baselines.common import constant_copy, new_classifier
from decathlon.errors import CheckpointError
from decathlon.methods import Method, Output
from decathlon.networks.resnet import Backbone

SOURCE_LOGITS, TEACHER_LOGITS = "source_logits", "teacher_logits"  # Output.aux keys while training


class LwFNet(Backbone):
    """The pretrained backbone with a new ``classifier`` (the output), its ``source_classifier`` and a
    constant ``teacher`` copy of the original network (parameters as non-persistent buffers)."""

    def __init__(self, backbone: nn.Module, num_classes: int):
        super().__init__(backbone.stem, backbone.blocks, backbone.head, new_classifier(backbone, num_classes))
        self.teacher = constant_copy(backbone)
        self.source_classifier = backbone.classifier
        self.source_classifier.storage_bits = {"weight": 0, "bias": 0}  # not needed for the new domain
        self.weights_source = getattr(backbone, "weights_source", None)

    def train(self, mode: bool = True) -> LwFNet:
        super().train(mode)
        self.teacher.eval()  # the original network, BN statistics included, never changes
        return self


def distillation_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(teacher / T) || softmax(student / T)), mean over the batch; logits (batch, classes)."""
    target = F.log_softmax(teacher.float() / temperature, dim=1)
    return F.kl_div(F.log_softmax(student.float() / temperature, dim=1), target, reduction="batchmean",
                    log_target=True)


def source_num_classes(config) -> int:
    """The class count of the source classifier in ``config.pretrained`` (harness checkpoint, torchvision
    state_dict, official residual-adapters file, or ``"imagenet"``: torchvision's ImageNet-1k weights);
    without weights, the source domain's (``imagenet12``) class count of the suite."""
    from decathlon.domains import get_domain
    from decathlon.networks.checkpoint import read_harness_checkpoint
    from decathlon.networks.official import load_official_backbone
    from decathlon.networks.resnet import TORCHVISION_WEIGHTS

    weights = config.pretrained
    if weights is None:
        return get_domain("imagenet12", suite=config.suite).num_classes
    if str(weights) == "imagenet" and config.backbone in TORCHVISION_WEIGHTS:
        import torchvision

        return len(torchvision.models.get_weight(TORCHVISION_WEIGHTS[config.backbone]).meta["categories"])
    kind, content = read_harness_checkpoint(weights)
    state = content["model_state"] if kind == "harness" else content
    if kind == "other":
        return load_official_backbone(weights).classifier.out_features
    for key in ("classifier.weight", "fc.weight"):
        if key in state:
            return int(state[key].shape[0])
    raise CheckpointError(f"{weights}: LwF needs the source classifier, but the weights hold no "
                          "classifier.weight (harness) or fc.weight (torchvision) entry")


class LwF(Method):
    """Fine-tuning plus distillation toward the original network's source-class outputs."""

    name = "lwf"
    label = "LwF"
    summary = "fine-tuning + distillation (T 2, lambda 1) of the source head toward the original network"

    def create_backbone(self, config, num_classes: int) -> nn.Module:
        """The pretrained backbone with its own source classifier (the engine's default drops it)."""
        from decathlon.networks.factory import create_backbone

        return create_backbone(config.backbone, source_num_classes(config), width=config.width,
                               weights=config.pretrained)

    def build(self, backbone: nn.Module, spec, num_classes: int, config) -> nn.Module:
        return LwFNet(backbone, num_classes)

    def forward(self, model: nn.Module, images: torch.Tensor, *,
                generator: torch.Generator | None = None) -> Output:
        if not model.training:
            return Output(model(images))
        features = model.features(images)
        with torch.no_grad():
            teacher = model.teacher(images)
        return Output(model.classifier(features),
                      aux={SOURCE_LOGITS: model.source_classifier(features), TEACHER_LOGITS: teacher})

    def extra_loss(self, model: nn.Module, output: Output, config) -> torch.Tensor | None:
        if not output.aux:
            return None
        return config.lwf_lambda * distillation_loss(output.aux[SOURCE_LOGITS], output.aux[TEACHER_LOGITS],
                                                     config.lwf_temperature)


METHODS = (LwF(),)
