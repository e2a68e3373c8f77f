"""The error of a run that cannot go on."""


class TrainingError(RuntimeError):
    """A run that cannot go on (too many non-finite losses, a bad model path, …)."""
