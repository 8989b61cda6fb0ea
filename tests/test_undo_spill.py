"""The undo record of an all-or-nothing phase can live on disk (issue 8: calibration memory flat in depth).

A layer-by-layer phase replaces every layer it passes; the transaction's snapshot keeps the
old storage (and the cells taken out) so a failure can undo it. ``spill_undo`` moves that data
to a temporary file between blocks: memory held drops to zero, the cells taken out are emptied,
and a failure after the spill still restores the network exactly.
"""

from __future__ import annotations

import warnings

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn

import gscore
from gscore import PTQConfig
from gscore.errors import GscoreWarning
from gscore.nn.snapshot import NetworkSnapshot
from gscore.nn.walk import replace_cell
from gscore.testing.reliability import describe_difference, network_state
from gscore.transaction import spill_undo, transaction

ms.runtime.launch_blocking()


class Failure(RuntimeError):
    pass


def two_layers() -> nn.SequentialCell:
    ms.set_seed(0)
    return nn.SequentialCell([nn.Dense(8, 16), nn.ReLU(), nn.Dense(16, 4)])


def stack() -> nn.SequentialCell:
    """Three blocks of one Dense(16, 16) each: the generic helper calibrates them block by block."""
    rng = np.random.default_rng(3)
    return nn.SequentialCell([
        nn.SequentialCell([nn.Dense(16, 16, weight_init=Tensor(rng.standard_normal((16, 16)).astype(np.float32)),
                                    bias_init=Tensor(rng.standard_normal(16).astype(np.float32)))])
        for _ in range(3)
    ])


def change(net: nn.SequentialCell) -> None:
    """What a phase does: new storage for one weight, a replaced cell for the other layer."""
    net[0].weight.set_data(Tensor(np.full((16, 8), 3.0, np.float32)))
    replace_cell(net, "2", nn.Dense(16, 4))


def test_spill_moves_replaced_and_detached_storage_out_of_memory_and_restore_is_exact():
    net = two_layers()
    before = network_state(net)
    old_cell = net[2]
    snapshot = NetworkSnapshot(net)
    change(net)
    assert snapshot.replaced_bytes() == 16 * 8 * 4
    moved = snapshot.spill()
    assert moved == (16 * 8 + 16 * 4 + 4) * 4  # the replaced weight, and the detached cell's weight and bias
    assert snapshot.replaced_bytes() == 0
    assert old_cell.weight.shape == (0,) and old_cell.bias.shape == (0,)
    assert snapshot.spill() == 0  # nothing new to move
    snapshot.restore()
    assert network_state(net) == before, describe_difference(before, network_state(net))
    snapshot.close()


def test_a_failure_after_spill_undo_restores_the_network():
    net = two_layers()
    before = network_state(net)
    with pytest.raises(Failure):
        with transaction(net):
            change(net)
            assert spill_undo(net) > 0
            net[0].bias.set_data(Tensor(np.ones(16, np.float32)))  # changed after the spill: still undone
            raise Failure("late")
    assert network_state(net) == before, describe_difference(before, network_state(net))


def test_spill_undo_outside_a_transaction_does_nothing():
    net = two_layers()
    change(net)
    assert spill_undo(net) == 0


def test_a_disk_that_cannot_take_the_undo_data_keeps_it_in_memory_with_a_warning(monkeypatch):
    net = two_layers()
    before = network_state(net)
    snapshot = NetworkSnapshot(net)
    change(net)

    def full_disk(data: np.ndarray) -> np.ndarray:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot, "_write", full_disk)
    with pytest.warns(GscoreWarning, match="No space left on device"):
        assert snapshot.spill() == 0
    assert snapshot.replaced_bytes() == 16 * 8 * 4
    snapshot.restore()
    assert network_state(net) == before


def test_layerwise_calibration_that_fails_in_its_last_block_restores_spilled_blocks(monkeypatch):
    """Static A8W8 + SmoothQuant, block by block: the driver spills before the first block and
    after every finished one, then the last block fails; every block comes back as it was, and
    the retry equals an undisturbed run."""
    from gscore_ptq import block as ptq_block

    data = [np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)]
    cfg = PTQConfig(act_quant_dtype="int8", outliers_suppression="smooth", algo_args={"progress": False})
    spilled: list[int] = []
    placed = {"n": 0, "fail_at": None}
    original_spill, original_place = NetworkSnapshot.spill, ptq_block.BlockCalibrator._place

    def counting_spill(self: NetworkSnapshot) -> int:
        spilled.append(original_spill(self))
        return spilled[-1]

    def place(self, *args, **kwargs):
        placed["n"] += 1
        original_place(self, *args, **kwargs)
        if placed["n"] == placed["fail_at"]:
            raise Failure("last block")

    monkeypatch.setattr(NetworkSnapshot, "spill", counting_spill)
    monkeypatch.setattr(ptq_block.BlockCalibrator, "_place", place)
    undisturbed = gscore.get("ptq")(cfg).apply(stack(), datasets=data)
    assert placed["n"] >= 2, "one block only: nothing would be spilled before the failure"

    net = stack()
    before = network_state(net)
    placed.update(fail_at=placed["n"] * 2, n=placed["n"])  # the last block of the second run
    spilled.clear()
    with pytest.raises(Failure):
        gscore.get("ptq")(cfg).apply(net, datasets=data)
    assert sum(spilled) > 0, "the driver spilled nothing before the failure: restore from disk is not exercised"
    assert network_state(net) == before, describe_difference(before, network_state(net))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        retried = gscore.get("ptq")(cfg).apply(net, datasets=data)
    assert network_state(retried) == network_state(undisturbed)
