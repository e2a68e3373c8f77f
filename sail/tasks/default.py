"""The default task (the trainer's embedded ``sail:tiny-task``): :mod:`sail.tasks.addition`.

``sail.tasks.default:reward`` is the default oracle's dotted path.
"""

from sail.tasks.addition import *  # noqa: F401,F403
from sail.tasks.addition import MAX_NEW_TOKENS, NAME, REWARD_SCALE, VERSION  # noqa: F401
