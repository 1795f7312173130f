"""The benchmark's shared networks: what every method starts from, independent of any method.

- :mod:`~decathlon.networks.resnet`: the Decathlon's ResNet-26 and torchvision's ResNet-50/101 behind
  one interface (``stem``, ``blocks``, ``head``, ``classifier``), loading by name with shape checks;
- :mod:`~decathlon.networks.factory`: :func:`create_backbone` by registry name, with weights from any
  supported file;
- :mod:`~decathlon.networks.checkpoint`: the harness checkpoint format (plain tensors, weights_only);
- :mod:`~decathlon.networks.params`: parameter counts and the paper's "#par";
- :mod:`~decathlon.networks.official`: the safe import of the residual-adapters reference code's files.
"""

from decathlon.networks.checkpoint import load_checkpoint, read_harness_checkpoint, save_checkpoint
from decathlon.networks.factory import BACKBONES, create_backbone, load_weights_file
from decathlon.networks.official import load_official, load_official_backbone
from decathlon.networks.params import count_parameters, par_ratio, stored_parameters
from decathlon.networks.resnet import Backbone, ResNet26, TorchvisionResNet, init_weights

__all__ = [
    "BACKBONES", "Backbone", "ResNet26", "TorchvisionResNet", "count_parameters", "create_backbone",
    "init_weights", "load_checkpoint", "load_official", "load_official_backbone", "load_weights_file",
    "par_ratio", "read_harness_checkpoint", "save_checkpoint", "stored_parameters",
]
