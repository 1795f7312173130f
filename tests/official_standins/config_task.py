"""Stand-in for the official ``config_task`` module (global settings read by the official ``models``).

Test data only: tests put this folder on sys.path while they build and save stand-in networks, so the
pickles name the same modules and classes as the official files.
"""

mode = "normal"  # "normal" (the pretrained ImageNet network), "series_adapters", "parallel_adapters"
task = 0  # index of the task-specific BN / classifier used in forward
proj = "11"
factor = 1.0  # width multiplier of the residual-adapters ResNet
