"""A Hugging Face-format Llama folder as a streaming source: one decoder layer resident at a time.

:class:`LlamaFolderSource` implements :class:`gscore.calib.streaming.StreamingSource` on the
memory-mapped safetensors of a folder (:mod:`gscore.models.hf_folder`): a layer's float
weights are read (one tensor at a time) only when the layer is materialised, into a
:class:`~gscore.models.llama.DecoderLayer` built without initialising its parameters
(:func:`mindspore.nn.utils.no_init_parameters`), and they go when the layer goes. The
embedding table is read twice, for the first block's inputs and to write it, and not kept.

The computation is the one in-memory calibration with :class:`~gscore.models.llama_helper.LlamaHelper`
does, op for op, so a streamed checkpoint equals the in-memory one bit for bit
(``tests/test_streaming.py``)::

    source = LlamaFolderSource("path/to/model")
    quantize_streaming(PTQ(config), source, windows, "out/")       # gscore.calib.streaming
    load_streamed("out/", deploy_network)                          # gscore.io.streamed
"""

from __future__ import annotations

import os
from dataclasses import asdict, replace
from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Tensor, nn
from mindspore.nn.utils import no_init_parameters

from gscore import dist
from gscore.errors import ConfigError
from gscore.models.hf_folder import open_llama_folder
from gscore.models.llama import DecoderLayer, LlamaForCausalLM
from gscore.models.llama_helper import BlockState, LlamaHelper

_HF_NAMES = {"model.embed_tokens.embedding_table": "model.embed_tokens.weight"}  # MindSpore name -> HF name where they differ
_WHOLE_MODEL = (
    "streaming calibration holds one layer at a time, so it cannot run a step over the whole model "
    "(PTQ's rotation of the residual stream, a float token prefix, an int8 output head, distillation); calibrate in memory for those"
)


class _BlockHelper(LlamaHelper):
    """A :class:`LlamaHelper` for one layer whose calibration data is the state entering it.

    ``after`` receives the state after the calibrated layer (``block_done``); ``shard`` tells
    data-parallel calibration that the state already is this worker's shard.
    """

    def __init__(self, name: str, block: nn.Cell, shard: dist.Shard | None, windows_per_forward: int | None) -> None:
        super().__init__(windows_per_forward=windows_per_forward)
        self.name, self.block, self.shard = name, block, shard
        self.after: BlockState | None = None

    def blocks(self, network: nn.Cell) -> list[tuple[str, nn.Cell]]:
        return [(self.name, self.block)]

    def block_inputs(self, network: nn.Cell, datasets: BlockState) -> BlockState:
        self.specs["seq_length"] = datasets.hidden.shape[0] // datasets.batch
        return datasets

    def block_done(self, name: str, block: nn.Cell, state: BlockState) -> None:
        self.after = state

    def _refuse(self, *args: Any) -> Any:
        raise ConfigError(_WHOLE_MODEL)

    prepare_rotation = residual_stream = set_prefix = prefix_placeholders = bos_token_id = linear_head = logits = _refuse


class LlamaFolderSource:
    """The layers of a Llama-family folder, materialised one at a time (module docstring).

    ``windows_per_forward``: calibration windows per forward pass (see :class:`LlamaHelper`).
    """

    def __init__(self, folder: str | os.PathLike[str], windows_per_forward: int | None = None) -> None:
        self.folder = open_llama_folder(folder)
        self.config = self.folder.config
        self.weights = self.folder.weights()
        self.windows_per_forward = windows_per_forward
        LlamaHelper(windows_per_forward=windows_per_forward)  # validates it

    def identity(self) -> dict[str, Any]:
        return {
            "folder": str(self.folder.path.resolve()),
            "config": asdict(self.config),
            "tensors": {name: [entry.dtype, list(entry.shape), entry.file.name] for name, entry in sorted(self.folder.tensors.items())},
            "files": {entry.file.name: entry.file.stat().st_size for entry in self.folder.tensors.values()},
        }

    def block_names(self) -> list[str]:
        return [f"model.layers.{i}" for i in range(self.config.num_layers)]

    def _shell(self, load: tuple[str, ...] = ()) -> LlamaForCausalLM:
        """The network without layers, parameters uninitialised except those named in ``load``."""
        with no_init_parameters():
            net = LlamaForCausalLM(replace(self.config, num_layers=0))
        for param in net.get_parameters():
            if param.name in load:
                param.set_data(Tensor(self.weights[_HF_NAMES.get(param.name, param.name)], ms.float32))
        return net

    def rest_network(self) -> nn.Cell:
        return self._shell(load=tuple(p.name for p in self._shell().get_parameters()))

    def first_state(self, windows: np.ndarray) -> BlockState:
        return LlamaHelper().block_inputs(self._shell(load=("model.embed_tokens.embedding_table",)), windows)

    def state_array(self, state: BlockState) -> np.ndarray:
        return state.hidden.asnumpy()

    def state_from_array(self, array: np.ndarray, windows: np.ndarray) -> BlockState:
        cos, sin, mask = self._shell().position_inputs(windows.shape[1], 0)
        return BlockState(Tensor(array), len(windows), cos, sin, mask)

    def block_network(self, name: str) -> tuple[nn.Cell, nn.Cell]:
        index = self.block_names().index(name)
        with no_init_parameters():
            layer = DecoderLayer(self.config)
        layers, model, network = nn.Cell(), nn.Cell(), nn.Cell()
        layers.insert_child_to_cell(str(index), layer)
        model.insert_child_to_cell("layers", layers)
        network.insert_child_to_cell("model", model)
        for full, param in network.parameters_and_names():
            param.name = full
            param.set_data(Tensor(self.weights[full], ms.float32))
        return network, layer

    def calibration_helper(self, name: str, block: nn.Cell, shard: dist.Shard | None) -> _BlockHelper:
        return _BlockHelper(name, block, shard, self.windows_per_forward)
