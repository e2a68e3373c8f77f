"""The errors of a run: one that cannot start or go on because of what it was given
(:class:`TrainingError`, exit status 2), and one that failed on its own (:class:`RunFailure`, exit
status 1: the training state became non-finite)."""


class TrainingError(RuntimeError):
    """A run that cannot start or go on because of its input (a bad model path, a model or
    checkpoint that does not load, …); the message is one line that names the key or file."""


class RunFailure(TrainingError):
    """A run that failed on its own, not on its input: the loss, the gradient, the parameters or
    the sampling logits became non-finite; the message names the step and the likely cause."""
