"""Every error gscore raises on purpose, so callers can catch the family at once.

Some classes also derive from the built-in exception a caller would have caught before
(``ValueError``, ``FileNotFoundError``, ...), so catching either works.
"""

from __future__ import annotations

import contextlib
from typing import Iterator


class GscoreError(Exception):
    """Base of all deliberate gscore errors."""


class GscoreWarning(UserWarning):
    """An option or input that has no effect, or a switch that matched nothing: the run goes
    on, but the user probably meant something else."""


class ConfigError(GscoreError, ValueError):
    """A configuration value or combination is invalid; the message lists what is allowed."""


class ConfigFrozenError(ConfigError, AttributeError):
    """A config was changed after construction; derive a new one with ``dataclasses.replace``."""


class NonFiniteValueError(GscoreError, ValueError):
    """A tensor to quantize (weights, calibration statistics) holds NaN or +/-Inf."""


class UnknownNameError(GscoreError, KeyError):
    """A registry (algorithms, model adapters) holds nothing under the name asked for."""

    def __str__(self) -> str:  # KeyError would otherwise print the message with quotes
        return str(self.args[0]) if self.args else ""


class NameConflictError(GscoreError):
    """Two plugins registered the same name or alias in one registry."""


class UnknownAlgorithmError(UnknownNameError):
    """``gscore.get(name)`` found no algorithm of that name."""


class AlgorithmConflictError(NameConflictError):
    """Two plugins registered the same algorithm name or alias."""


class UnknownModelError(UnknownNameError):
    """``gscore.model(name)`` found no model adapter of that name."""


class ModelConflictError(NameConflictError):
    """Two plugins registered the same model adapter name or alias."""


class MissingHelperMethodError(GscoreError, TypeError):
    """A network helper lacks a method the algorithm needs; the message names it and the way out."""


class RegistrationError(GscoreError, TypeError):
    """A plugin registered something that is not what the registry holds (an algorithm class, a model adapter's helper or loader, or a 'module:attr' path)."""


class PluginLoadError(GscoreError):
    """A plugin failed to import or register (raised in strict mode, or when a class registered
    by path is used and does not import)."""


class PhaseAnswerError(GscoreError, TypeError):
    """A phase hook answered with something that is not a network; the message names the plugin."""


class PhaseOrderError(GscoreError, RuntimeError):
    """A verb ran before the one it needs (``convert`` before ``apply``, ``describe`` before ``convert``)."""


class NoQuantizableLayerError(GscoreError):
    """An algorithm found no layer it can work on (after the blacklist)."""


class CheckpointMismatchError(GscoreError):
    """A checkpoint cannot be used with the network: unreadable or corrupted, a missing, extra,
    mis-shaped or mis-typed parameter, or a description that contradicts the network."""


class CheckpointNotFoundError(CheckpointMismatchError, FileNotFoundError):
    """There is no checkpoint file at the given path."""


class CalibrationDataError(GscoreError):
    """A phase needs calibration data (a network helper or datasets) that was not given, or the
    data given does not fit the network."""


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


#: What MindSpore raises when a network cannot run on an input (wrong shape, dtype, rank).
FRAMEWORK_DATA_ERRORS = (TypeError, ValueError, RuntimeError, IndexError)


@contextlib.contextmanager
def data_errors(context: str) -> Iterator[None]:
    """Turn the framework's errors from running a network on user data into a
    :class:`CalibrationDataError` that starts with ``context`` (the cause stays chained);
    GscoreErrors pass unchanged."""
    try:
        yield
    except GscoreError:
        raise
    except FRAMEWORK_DATA_ERRORS as exc:
        first_paragraph = str(exc).strip().split("\n\n")[0]  # MindSpore appends a C++ call stack
        raise CalibrationDataError(f"{context}: {first_paragraph}") from exc


class RecipeError(ConfigError):
    """A recipe file cannot be used: not readable YAML, an unknown or missing key, or a stage
    whose algorithm or config is invalid. The message names the file, the stage and the field."""


class RunFolderError(GscoreError):
    """A run folder (what ``gscore quantize --out`` wrote) is missing, incomplete or unreadable."""
