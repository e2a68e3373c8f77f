"""The ``schedule.*`` config block of ``sail train``: the learning rate of every step.

A warm-up from 0 over ``warmup_steps`` steps, then the rate held ``constant`` or decayed ``linear``-ly
or along a ``cosine`` to 0 at the last step, built with transformers' ``get_scheduler``. The trainer
sets each parameter group's rate from the step number alone (:meth:`ScheduleConfig.build` gives the
``LambdaLR`` whose factors it uses), so a skipped step or a resume changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sail.config import FieldError, check_choices


@dataclass
class ScheduleConfig:
    """The learning-rate schedule."""

    name: Literal["constant", "linear", "cosine"] = "constant"
    """After the warm-up: ``constant``, or a ``linear`` or ``cosine`` decay to 0 at the last step.
    Every parameter group's rate is scaled by the same factor."""
    warmup_steps: int = 0
    """Steps of linear warm-up from 0 to the learning rate (0: none)."""

    def __post_init__(self):
        check_choices(self)
        if self.warmup_steps < 0:
            raise FieldError("warmup_steps", f"must be >= 0, got {self.warmup_steps}")

    def transformers_name(self) -> str:
        """The schedule's name in ``transformers.get_scheduler``."""
        if self.name == "constant":
            return "constant_with_warmup" if self.warmup_steps else "constant"
        return self.name

    def build(self, optimizer, total_steps: int):
        """The ``LambdaLR`` of this schedule over ``total_steps`` steps."""
        from transformers import get_scheduler

        return get_scheduler(self.transformers_name(), optimizer, num_warmup_steps=self.warmup_steps, num_training_steps=total_steps)

    def extends_exactly(self) -> bool:
        """Whether the rates of past steps stay the same when the total number of steps changes."""
        return self.name == "constant"
