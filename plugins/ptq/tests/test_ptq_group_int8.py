"""int8 weights per group (issue 9, item 1): convert, save, DEPLOY and load all run.

The group quantizer used to unpack int4 nibbles whatever the bit width, so a network with
int8 group codes (stored unpacked, ``[out, in]``) failed its first forward after convert
(``AddExt ... [128, 4, 64] and [128, 2, 1]``), and the DEPLOY form failed the same way.
"""

import mindspore as ms
import numpy as np
from mindspore import Tensor

import gscore
from gscore import PTQConfig
from gscore.io import load_checkpoint, read_description, save_checkpoint
from gscore.testing.fuzz import FuzzMLP

ms.runtime.launch_blocking()

PTQ = gscore.get("ptq")
WIDTHS = (256, 128, 96, 16)  # 96 is not a multiple of the group: its last group is short
CONFIG = {"weight_quant_granularity": "per_group", "group_size": 64, "algo_args": {"progress": False}}


def test_int8_per_group_runs_after_convert_and_after_deploy_and_load(tmp_path):
    x = Tensor(np.random.default_rng(0).standard_normal((3, WIDTHS[0])).astype(np.float32))
    reference = FuzzMLP(WIDTHS, seed=1)(x).asnumpy()
    net = FuzzMLP(WIDTHS, seed=1)
    algo = PTQ(PTQConfig(**CONFIG))
    algo.apply(net)
    simulated = net(x).asnumpy()
    algo.convert(net)
    converted = net(x).asnumpy()
    np.testing.assert_array_equal(converted, simulated)
    assert np.linalg.norm(converted - reference) / np.linalg.norm(reference) < 0.02
    params = {p.name: p for p in net.get_parameters()}
    assert params["body.2.weight"].dtype == ms.int8 and params["body.2.weight"].shape == (96, 128)  # unpacked
    assert params["body.2._weight_quantizer.scale"].shape == (96, 2)

    path = save_checkpoint(net, tmp_path / "w8g64.ckpt", description=algo.describe(net))
    layer = read_description(path)["layers"]["body.4"]
    assert (layer["bits"], layer["group_size"], layer["packed"]) == (8, 64, False)
    deploy = PTQ(PTQConfig(mode="deploy", **CONFIG))
    fresh = deploy.convert(deploy.apply(FuzzMLP(WIDTHS, seed=2)))
    fresh(x)  # the placeholders run too
    load_checkpoint(path, fresh)
    np.testing.assert_array_equal(fresh(x).asnumpy(), converted)
