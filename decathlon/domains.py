"""Domain registry: one :class:`DomainSpec` per dataset, as data.

The facts (class counts, split sizes, normalisation, weight decay) come from the challenge definition
and the reference SpotTune code; see ``docs/reference.md``. Suites are lists of names. A domain of the
generated ``mini`` suite has the same name as the real domain it stands in for, so that the on-disk
layout and the id scheme are identical; it is looked up with ``suite="mini"``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from decathlon.errors import UnknownNameError

SPLITS = ("train", "val", "trainval", "test")
SUITES = ("decathlon", "extra", "mini")

# Geometry families. A transform preset (decathlon.presets) maps a family to concrete train/test
# transforms; the family is a property of the domain, never a name test inside a loader.
CROP = "crop"  # natural images: random crop for training, centre crop for testing
CENTER = "center"  # digits, signs, glyphs: the whole (centre-cropped) image, no crop augmentation
RESIZE = "resize"  # non-square pedestrian crops: resize the shorter side only
IMAGENET = "imagenet"  # extra datasets at 224 px: RandomResizedCrop + flip, Resize + CenterCrop
SOURCE = "source"  # the Decathlon's source domain: evaluated as the published ImNet entries were (64 px)


@dataclass(frozen=True)
class SplitSizes(Mapping):
    """Images per released split; an immutable, hashable and picklable mapping ``split -> count``."""

    train: int
    val: int
    test: int

    def __getitem__(self, split: str) -> int:
        if split not in ("train", "val", "test"):
            raise KeyError(split)
        return getattr(self, split)

    def __iter__(self):
        return iter(("train", "val", "test"))

    def __len__(self) -> int:
        return 3


@dataclass(frozen=True)
class DomainSpec:
    """Everything the harness knows about one dataset."""

    name: str  # folder name on disk, also the key everywhere (results, ids, tables)
    label: str  # column label of the paper's tables
    num_classes: int
    split_sizes: SplitSizes  # images per split as released ("test" is the evaluation split)
    mean: tuple[float, float, float]  # RGB in [0, 1]
    std: tuple[float, float, float]
    geometry: str  # one of CROP, CENTER, RESIZE, IMAGENET, SOURCE
    weight_decay: float  # reference weight decay of the network optimiser
    suites: tuple[str, ...]
    layout: str = "decathlon"  # "decathlon" (COCO annotations), "folder" (class-per-folder), "cub"
    number: int | None = None  # d in image_id / category_id (Decathlon layout only)
    image_size: int = 72  # shorter side of the stored images (Decathlon: 72 px); 224 for the extra sets
    is_source: bool = False  # the pretraining domain (imagenet12): reported, not fine-tuned
    flip: bool = True  # horizontal flips preserve the label (used by the `adapters` preset)
    folder: str | None = None  # directory name under the data root when it differs from `name`

    @property
    def directory(self) -> str:
        return self.folder or self.name


def _spec(name, label, number, classes, train, val, test, mean, std, geometry, wd, **kw) -> DomainSpec:
    return DomainSpec(
        name=name,
        label=label,
        number=number,
        num_classes=classes,
        split_sizes=SplitSizes(train, val, test),
        mean=tuple(mean),
        std=tuple(std),
        geometry=geometry,
        weight_decay=wd,
        suites=("decathlon",),
        **kw,
    )


def _grey(v: float) -> tuple[float, float, float]:
    return (v, v, v)


# The ten Decathlon domains; `number` is d of the id scheme (alphabetical order of folder names).
DECATHLON_DOMAINS: tuple[DomainSpec, ...] = (
    _spec("aircraft", "Airc.", 1, 100, 3334, 3333, 3333,
          (0.47983041, 0.51074066, 0.53437998), (0.21070221, 0.20508901, 0.23729657), CROP, 5e-4),
    _spec("cifar100", "C100", 2, 100, 40000, 10000, 10000,
          (0.50705882, 0.48666667, 0.44078431), (0.26745098, 0.25647059, 0.27607843), CROP, 0.0),
    _spec("daimlerpedcls", "DPed", 3, 2, 23520, 5880, 19600,
          _grey(0.48203529), _grey(0.23612616), RESIZE, 5e-4),
    _spec("dtd", "DTD", 4, 47, 1880, 1880, 1880,
          (0.52696497, 0.47025164, 0.42396662), (0.25226877, 0.2409176, 0.2499409), CROP, 0.0),
    _spec("gtsrb", "GTSR", 5, 43, 31367, 7842, 12630,
          (0.33921263, 0.3117836, 0.32047045), (0.27560347, 0.26576119, 0.27089863), CENTER, 0.0,
          flip=False),
    _spec("imagenet12", "ImNet", 6, 1000, 1232167, 49000, 48238,
          (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), SOURCE, 1e-4, is_source=True),
    _spec("omniglot", "OGlt", 7, 1623, 17853, 6492, 8115,
          _grey(0.08099839), _grey(0.27046935), CENTER, 5e-4, flip=False),
    _spec("svhn", "SVHN", 8, 10, 47217, 26040, 26032,
          (0.4376821, 0.4437697, 0.47280442), (0.19803012, 0.20101562, 0.19703614), CENTER, 0.0,
          flip=False),
    _spec("ucf101", "UCF", 9, 101, 7585, 1952, 3783,
          (0.49953101, 0.49880386, 0.49981996), (0.10898684, 0.10810246, 0.10679939), CROP, 5e-4),
    _spec("vgg-flowers", "Flwr", 10, 102, 1020, 1020, 6149,
          (0.43414682, 0.38309883, 0.29714763), (0.28509808, 0.23842338, 0.2639633), CROP, 1e-4),
)

# Column order of the paper's Decathlon table (not the d order).
DECATHLON_COLUMNS: tuple[str, ...] = (
    "imagenet12", "aircraft", "cifar100", "daimlerpedcls", "dtd", "gtsrb", "vgg-flowers", "omniglot",
    "svhn", "ucf101",
)

_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _extra(name, label, train, test, classes, layout="folder", mean=_IMAGENET_MEAN, std=_IMAGENET_STD):
    # The extra datasets are fine-tuned from ImageNet weights at 224 px, so they use the ImageNet
    # statistics the network was trained with (as the Piggyback code does for all five); the Decathlon
    # pickle's `sketches` entry describes the 72 px Decathlon-style copy and is not used here.
    # Their "val" is not released: `split_sizes["val"] = 0` and train->val carves it from train.
    return DomainSpec(
        name=name, label=label, num_classes=classes,
        split_sizes=SplitSizes(train, 0, test),
        mean=mean, std=std, geometry=IMAGENET, weight_decay=1e-4, suites=("extra",),
        layout=layout, image_size=224,
    )


EXTRA_DOMAINS: tuple[DomainSpec, ...] = (
    _extra("cubs", "CUBS", 5994, 5794, 200, layout="cub"),
    _extra("stanford-cars", "Stanford Cars", 8144, 8041, 196),
    _extra("flowers", "Flowers", 2040, 6149, 102),
    _extra("wikiart", "WikiArt", 42129, 10628, 195),
    _extra("sketches", "Sketches", 16000, 4000, 250),
)

EXTRA_COLUMNS: tuple[str, ...] = tuple(d.name for d in EXTRA_DOMAINS)


def _index(specs: tuple[DomainSpec, ...]) -> Mapping[str, DomainSpec]:
    return MappingProxyType({s.name: s for s in specs})


_REAL = _index(DECATHLON_DOMAINS + EXTRA_DOMAINS)


# ------------------------------------------------------------------------------- the generated suite
# Its default parameters are data here, so that the specs exist without importing the generator
# (decathlon.generate draws the images and imports this module, never the reverse). A test checks that
# the generator's class lists have these lengths.

MINI_IMAGE_SIZE = 36  # px, shorter side (the real Decathlon uses 72)
MINI_SOURCE_COUNTS = (40, 10, 10)  # images per class: train, val, test (imagenet12)
MINI_TARGET_COUNTS = (16, 8, 8)  # images per class: train, val, test (the nine target domains)
MINI_EXTRA_COUNTS = (16, 8)  # images per class: train, test (extra stand-ins; no released val)
MINI_CLASSES: Mapping[str, int] = MappingProxyType({  # classes the generator draws per domain
    "imagenet12": 20, "aircraft": 10, "cifar100": 10, "daimlerpedcls": 2, "dtd": 10, "gtsrb": 10,
    "vgg-flowers": 10, "omniglot": 10, "svhn": 10, "ucf101": 10,
    "cubs": 10, "stanford-cars": 10, "flowers": 10, "wikiart": 10, "sketches": 10,
})


def mini_split_counts(name: str, *, source_counts: Sequence[int] = MINI_SOURCE_COUNTS,
                      target_counts: Sequence[int] = MINI_TARGET_COUNTS,
                      extra_counts: Sequence[int] = MINI_EXTRA_COUNTS) -> dict[str, int]:
    """Images per class and split of one generated domain (val 0 for the extra stand-ins)."""
    if name in EXTRA_COLUMNS:
        train, test = extra_counts
        return {"train": train, "val": 0, "test": test}
    counts = source_counts if name == "imagenet12" else target_counts
    # daimlerpedcls has 2 classes: 5x the images per class keeps its splits the size of the others'
    factor = 5 if name == "daimlerpedcls" else 1
    return {s: factor * n for s, n in zip(("train", "val", "test"), counts, strict=True)}


def mini_domains(*, image_size: int = MINI_IMAGE_SIZE, source_counts: Sequence[int] = MINI_SOURCE_COUNTS,
                 target_counts: Sequence[int] = MINI_TARGET_COUNTS,
                 extra_counts: Sequence[int] = MINI_EXTRA_COUNTS) -> tuple[DomainSpec, ...]:
    """Specs of a generated suite: the real specs with the generated class counts and sizes.

    Paper column order, then the extras. ``decathlon.generate.generate_suite`` writes these domains.
    """
    out = []
    for name in DECATHLON_COLUMNS + EXTRA_COLUMNS:
        real, n = _REAL[name], MINI_CLASSES[name]
        per_class = mini_split_counts(name, source_counts=source_counts, target_counts=target_counts,
                                      extra_counts=extra_counts)
        out.append(dataclasses.replace(
            real, num_classes=n, split_sizes=SplitSizes(**{s: c * n for s, c in per_class.items()}),
            suites=("mini",), image_size=image_size,
            # the generated stand-ins of the extra datasets are class-per-folder trees
            layout="decathlon" if real.layout == "decathlon" else "folder",
        ))
    return tuple(out)


MINI_DOMAINS: tuple[DomainSpec, ...] = mini_domains()


def suite_domains(suite: str) -> tuple[DomainSpec, ...]:
    """The domains of a suite, in the paper's column order."""
    if suite == "decathlon":
        return tuple(_REAL[n] for n in DECATHLON_COLUMNS)
    if suite == "extra":
        return EXTRA_DOMAINS
    if suite == "mini":
        return MINI_DOMAINS
    if suite == "all":
        return suite_domains("decathlon") + suite_domains("extra")
    raise UnknownNameError("suite", suite, SUITES + ("all",))


def get_domain(name: str, suite: str | None = None) -> DomainSpec:
    """Look a domain up by name (real datasets by default, or within `suite`)."""
    specs = _REAL if suite is None or suite in ("decathlon", "extra", "all") else _index(suite_domains(suite))
    try:
        return specs[name]
    except KeyError:
        raise UnknownNameError("domain", name, specs) from None


# ------------------------------------------------------------------------- where the data comes from

IMAGENET_HINT = ("imagenet12 is not in the public Decathlon archive (ImageNet's terms need an account at "
                 "image-net.org; see the Decathlon page http://www.robots.ox.ac.uk/~vgg/decathlon/): unpack "
                 "it into decathlon-1.0/data/imagenet12/{train,val,test}/, or leave it out with --domains")


def download_hint(suite: str = "decathlon") -> str:
    """The commands that get and check the data of `suite` (for error messages)."""
    if suite == "extra":
        return ("get the extra datasets with `python -m decathlon download extra --root DIR` and check them "
                "with `python -m decathlon verify --extra-root DIR`")
    return ("get the data with `python -m decathlon download decathlon --root DIR` and check it with "
            "`python -m decathlon verify --data-root DIR/decathlon-1.0`")
