"""gscore: model compression for MindSpore, with every algorithm a plugin picked by name.

``gscore.get("rtn")`` returns the class a plugin registered. Importing this package imports
neither MindSpore nor mindformers and discovers no plugin; discovery happens on first use. It does
choose how MindSpore dispatches host work (inline, see :mod:`gscore.host_dispatch`) and caps
oneDNN at AVX2 (:mod:`gscore.onednn`), both of which have to happen before MindSpore runs anything.
"""

from gscore import host_dispatch, onednn

host_dispatch.prefer_inline()
onednn.prefer_avx2()

from gscore.algorithm import Algorithm, PruningAlgorithm, PTQAlgorithm, QATAlgorithm
from gscore.config import (
    BackendTarget,
    OutliersSuppressionType,
    PrecisionRecovery,
    PTQConfig,
    PTQMode,
    QuantDtype,
    QuantGranularity,
)
from gscore.errors import (
    AlgorithmConflictError,
    CalibrationDataError,
    CheckpointMismatchError,
    ConfigError,
    MissingHelperMethodError,
    ModelConflictError,
    ConfigFrozenError,
    GscoreError,
    GscoreWarning,
    NoQuantizableLayerError,
    PhaseAnswerError,
    PluginLoadError,
    UnknownAlgorithmError,
    UnknownModelError,
)
from gscore.hookspecs import answers_for, hookimpl
from gscore.plugins import algorithms, get, model, models, plugin_failures
from gscore.version import API_VERSION, __version__

__all__ = [
    "API_VERSION",
    "Algorithm",
    "AlgorithmConflictError",
    "BackendTarget",
    "CalibrationDataError",
    "CheckpointMismatchError",
    "ConfigError",
    "MissingHelperMethodError",
    "ModelConflictError",
    "ConfigFrozenError",
    "GscoreError",
    "GscoreWarning",
    "NoQuantizableLayerError",
    "OutliersSuppressionType",
    "PhaseAnswerError",
    "PTQAlgorithm",
    "PruningAlgorithm",
    "QATAlgorithm",
    "PTQConfig",
    "PTQMode",
    "PluginLoadError",
    "PrecisionRecovery",
    "QuantDtype",
    "QuantGranularity",
    "UnknownAlgorithmError",
    "UnknownModelError",
    "__version__",
    "algorithms",
    "answers_for",
    "get",
    "hookimpl",
    "model",
    "models",
    "plugin_failures",
]
