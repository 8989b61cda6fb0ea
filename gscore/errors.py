"""Every error gscore raises on purpose, so callers can catch the family at once."""


class GscoreError(Exception):
    """Base of all deliberate gscore errors."""


class ConfigError(GscoreError, ValueError):
    """A configuration value or combination is invalid; the message lists what is allowed."""


class UnknownAlgorithmError(GscoreError, KeyError):
    """``gscore.get(name)`` found no algorithm of that name."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0]) if self.args else ""


class AlgorithmConflictError(GscoreError):
    """Two plugins registered the same algorithm name or alias."""


class PluginLoadError(GscoreError):
    """A plugin failed to import or register (raised only in strict mode)."""


class NoQuantizableLayerError(GscoreError):
    """An algorithm found no layer it can work on (after the blacklist)."""


class CheckpointMismatchError(GscoreError):
    """A checkpoint does not fit the network: a missing, extra, mis-shaped or mis-typed parameter."""


class CalibrationDataError(GscoreError):
    """A phase needs calibration data (a network helper or datasets) that was not given."""


class ModelFolderError(GscoreError):
    """A model folder cannot be loaded: a file or config field is missing or invalid, or a
    tensor is missing, unexpected, mis-shaped or of a dtype gscore does not read. The message
    names the file and the field or tensor."""


class UnsupportedModelError(ModelFolderError):
    """A model folder asks for an architecture or feature gscore does not implement (say
    ``rope_scaling``); the message lists what is supported. Refused rather than computed wrong."""


class UnloadedParametersError(CheckpointMismatchError):
    """A DEPLOY network still holds placeholders that no checkpoint replaced (plain
    ``mindspore.load_checkpoint`` only warns about names it cannot match); the message names them."""


class DistributedMismatchError(GscoreError):
    """Data-parallel workers hold different results where they must agree (a block's quantized
    weights, a checkpoint, a job's settings); the message says what and on which ranks."""


class LaunchError(GscoreError):
    """An ``msrun`` job failed or timed out; the message holds the end of the worker logs."""
