"""Learning-rate schedules, as a multiplicative factor per epoch.

Every schedule is a pure function of the epoch index (0-based) and the run length, so a resumed run
recomputes exactly the same values. The factor multiplies every parameter group's base learning rate
(network and policy alike: the reference code drops both optimisers together).

- ``faithful``: what the reference code actually does: one x``gamma`` drop at 40/110 of the run, i.e.
  from epoch 40 of 110 on (its hand-written schedule meant 40/60/80 but its branches overwrite each
  other, so only the first drop is ever applied).
- ``multistep``: the intended schedule: x``gamma`` at each milestone (fractions of the run; default
  40/110, 60/110, 80/110).
- ``cosine``: half a cosine period from 1 at epoch 0 towards 0 at the end of the run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from decathlon.config import SCHEDULES
from decathlon.errors import UnknownNameError

FAITHFUL_DROP = 40 / 110  # fraction of the run after which the reference code drops the rate once


def milestone_epochs(fractions: Sequence[float], epochs: int) -> tuple[int, ...]:
    """Epoch indices (0-based) from which each drop applies, for a run of `epochs` epochs.

    A fraction f gives epoch round(f * epochs), at least 1 (a drop never applies to the first epoch,
    so a one-epoch smoke run trains at the base rate).
    """
    return tuple(max(1, round(f * epochs)) for f in fractions)


def lr_factor(schedule: str, epoch: int, epochs: int, *, milestones: Sequence[float] = (),
              gamma: float = 0.1) -> float:
    """The factor applied to the base learning rate during `epoch` (0-based) of an `epochs`-epoch run."""
    if schedule == "faithful":
        drops = milestone_epochs((FAITHFUL_DROP,), epochs)
    elif schedule == "multistep":
        drops = milestone_epochs(milestones, epochs)
    elif schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))
    else:
        raise UnknownNameError("schedule", schedule, SCHEDULES)
    return gamma ** sum(epoch >= m for m in drops)


def build_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int, *,
                    milestones: Sequence[float] = (), gamma: float = 0.1
                    ) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-epoch LambdaLR (call ``.step()`` once after each epoch) applying :func:`lr_factor`."""
    if schedule not in SCHEDULES:
        raise UnknownNameError("schedule", schedule, SCHEDULES)
    milestones = tuple(milestones)

    def factor(epoch: int) -> float:
        return lr_factor(schedule, epoch, epochs, milestones=milestones, gamma=gamma)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
