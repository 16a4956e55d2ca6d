"""Errors a user can cause. The CLI prints the message of an `LmforgeError` and exits 2."""


class LmforgeError(Exception):
    """A user mistake: bad path, bad config value, corrupt file. The message says what and how to fix."""


class ConfigError(LmforgeError):
    """An architecture or run configuration that cannot be honoured."""


class CheckpointError(LmforgeError):
    """A checkpoint folder that is missing, incomplete, tampered with or does not match its config."""


class InputError(LmforgeError):
    """Tensors or text given to a model that it cannot process (shape, ids, length)."""


class DataError(LmforgeError):
    """Corpora, labelled files or tokenizers that cannot be read or do not fit together."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; the message says which checkpoint was kept and how to continue."""
