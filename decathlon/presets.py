"""Transform presets: named recipes mapping a domain's geometry family to concrete transforms.

A preset never looks at a domain's name. It reads two facts of the :class:`~decathlon.domains.DomainSpec`:
``geometry`` (one of ``CROP``, ``CENTER``, ``RESIZE``, ``IMAGENET``) and ``image_size`` (the shorter side
of the stored images, 72 px for the Decathlon), plus ``flip`` (whether a horizontal flip keeps the label).

The geometry of a transform is exposed as data (:class:`Geometry`) so that the fast uint8 cache can
re-implement exactly the same crops on tensors; :meth:`Preset.train_transform` and
:meth:`Preset.test_transform` turn that data into torchvision transforms followed by
``ToTensor + Normalize(mean, std)``.

Presets (see ``/work/shared/reference/decathlon.md``):

- ``faithful``: the official SpotTune transforms. CROP: Resize(72) + RandomCrop(64) for training,
  Resize(72) + CenterCrop(72) for testing, no flip. CENTER: Resize(72) + CenterCrop(72) for both.
  RESIZE: Resize(72) only (Daimler's 72x144 crops stay non-square).
- ``adapters``: the residual-adapters recipe (``imdbfolder_coco.py``): as ``faithful``, plus a random
  horizontal flip for training when ``spec.flip``, and CROP domains are tested at CenterCrop(64) (the
  training crop size). RESIZE (Daimler) is treated like CROP there, as the reference code does: Resize(72)
  + RandomCrop(64) + flip for training, Resize(72) + CenterCrop(64) for testing.

Both presets treat SOURCE (the Decathlon's ImageNet, whose table entry is the pretrained network's own
accuracy) as the residual-adapters code evaluates it, Resize(72) + CenterCrop(64): the published ImNet
entries come from that evaluation (SpotTune's code never evaluates ImageNet). Training (the pretraining of
the generated suite's source) uses RandomCrop(64) + flip.

Both presets treat IMAGENET (the extra datasets at 224 px) the same way: RandomResizedCrop(224) + flip
for training, Resize(256) + CenterCrop(224) for testing.

Crop sizes scale with the stored image size (crop = image_size * 64 // 72), so a generated suite stored
at 36 px gets 32 px crops.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from torchvision import transforms

from decathlon.domains import CENTER, CROP, IMAGENET, RESIZE, SOURCE, DomainSpec
from decathlon.errors import UnknownNameError

# RandomResizedCrop's defaults (torchvision / the ImageNet recipe): area fraction and aspect ratio range.
RRC_SCALE = (0.08, 1.0)
RRC_RATIO = (3 / 4, 4 / 3)


@dataclass(frozen=True)
class Geometry:
    """The pure geometry of one transform, applied in this order.

    1. ``scale is None``: resize the shorter side to ``resize`` px (aspect kept), then, when ``crop`` is
       set, take a ``crop`` x ``crop`` square, random (``random_crop``) or centred.
       ``scale`` set: RandomResizedCrop to ``crop`` x ``crop`` with area fraction in ``scale`` and aspect
       ratio in ``ratio`` (``resize`` is None).
    2. ``flip``: random horizontal flip with probability 0.5.
    """

    resize: int | None  # shorter side after resizing, px (None with RandomResizedCrop)
    crop: int | None  # side of the square crop, px (None: keep the whole resized image)
    random_crop: bool = False  # random position (training) instead of the centre
    flip: bool = False  # random horizontal flip, p = 0.5
    scale: tuple[float, float] | None = None  # RandomResizedCrop area fraction range; None: no RRC
    ratio: tuple[float, float] = RRC_RATIO  # RandomResizedCrop aspect-ratio range (used with `scale`)

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of the output for an input of `height` x `width` px."""
        if self.crop is not None:
            return self.crop, self.crop
        # torchvision's Resize(int): the shorter side becomes `resize`, the longer one is truncated.
        if height <= width:
            return self.resize, int(self.resize * width / height)
        return int(self.resize * height / width), self.resize

    def ops(self) -> list:
        """The torchvision (PIL) transforms of this geometry, without ToTensor/Normalize."""
        if self.scale is not None:
            out: list = [transforms.RandomResizedCrop(self.crop, scale=self.scale, ratio=self.ratio)]
        else:
            out = [transforms.Resize(self.resize)]
            if self.crop is not None:
                out.append(transforms.RandomCrop(self.crop) if self.random_crop
                           else transforms.CenterCrop(self.crop))
        if self.flip:
            out.append(transforms.RandomHorizontalFlip())
        return out


def crop_size(spec: DomainSpec) -> int:
    """The training crop of CROP domains: 64 px for 72 px images, scaled with the stored size."""
    return spec.image_size * 64 // 72


# --- geometry rules: (spec, train) -> Geometry, one per geometry family and preset


def _random_crop_centre_test(spec: DomainSpec, train: bool) -> Geometry:
    # faithful CROP: RandomCrop(64) for training, but the *whole* 72 px centre for testing
    s = spec.image_size
    return Geometry(s, crop_size(spec), random_crop=True) if train else Geometry(s, s)


def _random_crop_same_test(spec: DomainSpec, train: bool) -> Geometry:
    # adapters CROP: train and test at the same 64 px crop; flips only where they keep the label
    s, c = spec.image_size, crop_size(spec)
    return Geometry(s, c, random_crop=True, flip=spec.flip) if train else Geometry(s, c)


def _whole_square(spec: DomainSpec, train: bool) -> Geometry:
    # CENTER (digits, signs, glyphs): the whole centre-cropped square, no crop augmentation
    return Geometry(spec.image_size, spec.image_size)


def _whole_square_flip(spec: DomainSpec, train: bool) -> Geometry:
    return Geometry(spec.image_size, spec.image_size, flip=train and spec.flip)


def _shorter_side(spec: DomainSpec, train: bool) -> Geometry:
    # RESIZE (Daimler): resize the shorter side only, keeping the 1:2 pedestrian crops
    return Geometry(spec.image_size, None)


def _imagenet(spec: DomainSpec, train: bool) -> Geometry:
    # the standard ImageNet recipe at image_size (224): RRC + flip; Resize(256) + CenterCrop(224)
    s = spec.image_size
    if train:
        return Geometry(None, s, random_crop=True, flip=spec.flip, scale=RRC_SCALE)
    return Geometry(s * 256 // 224, s)


GeometryRule = Callable[[DomainSpec, bool], Geometry]


@dataclass(frozen=True)
class Preset:
    """A named transform recipe: one geometry rule per geometry family."""

    name: str
    summary: str
    rules: Mapping[str, GeometryRule]

    def geometry(self, spec: DomainSpec, train: bool) -> Geometry:
        """The geometry this preset applies to `spec`'s images for training or testing."""
        try:
            rule = self.rules[spec.geometry]
        except KeyError:
            raise UnknownNameError("geometry", spec.geometry, self.rules) from None
        return rule(spec, train)

    def transform(self, spec: DomainSpec, mean: Sequence[float], std: Sequence[float], *,
                  train: bool) -> transforms.Compose:
        """PIL image -> normalised float tensor (C, H, W)."""
        ops = self.geometry(spec, train).ops()
        ops += [transforms.ToTensor(), transforms.Normalize(tuple(mean), tuple(std))]
        return transforms.Compose(ops)

    def train_transform(self, spec: DomainSpec, mean: Sequence[float], std: Sequence[float]):
        """The training transform (random crops/flips as the preset says)."""
        return self.transform(spec, mean, std, train=True)

    def test_transform(self, spec: DomainSpec, mean: Sequence[float], std: Sequence[float]):
        """The deterministic evaluation transform."""
        return self.transform(spec, mean, std, train=False)


FAITHFUL = Preset(
    name="faithful",
    summary="official SpotTune transforms: random 64 px crops, 72 px centre tests, no flips",
    rules=MappingProxyType({
        CROP: _random_crop_centre_test, CENTER: _whole_square, RESIZE: _shorter_side, IMAGENET: _imagenet,
        SOURCE: _random_crop_same_test,
    }),
)

ADAPTERS = Preset(
    name="adapters",
    summary="residual-adapters transforms: flips where label-preserving, 64 px crops for train and test",
    rules=MappingProxyType({
        CROP: _random_crop_same_test, CENTER: _whole_square_flip, RESIZE: _random_crop_same_test,
        IMAGENET: _imagenet, SOURCE: _random_crop_same_test,
    }),
)

PRESETS: Mapping[str, Preset] = MappingProxyType({p.name: p for p in (FAITHFUL, ADAPTERS)})


def get_preset(name: str) -> Preset:
    """The transform preset called `name` (``faithful`` or ``adapters``)."""
    try:
        return PRESETS[name]
    except KeyError:
        raise UnknownNameError("preset", name, PRESETS) from None
