"""RTN's KV-cache int8 (dynamic per token) on real SmolLM2 layers."""

import mindspore as ms
import numpy as np
from mindspore import Tensor

import gscore
from gscore import PTQConfig
from gscore.io import load_checkpoint, save_checkpoint
from gscore.models.llama import LlamaConfig, build_llama
from gscore.models.smollm2 import load_smollm2
from gscore.nn.kv_cache import DynamicInt8KVCache

RTN = gscore.get("rtn")
KV = {"kvcache_quant_dtype": "int8", "kvcache_quant_granularity": "per_token"}


def test_rtn_a16w8_with_int8_kv_cache_deploys_and_reloads(tmp_path):
    ms.runtime.launch_blocking()
    weights, config, tokenizer = load_smollm2()
    make = lambda: build_llama(LlamaConfig(**{**config, "num_layers": 2}), weights)  # noqa: E731
    ids = Tensor(np.array([tokenizer.encode("The capital of France is Paris, and the capital of Italy is").ids], np.int32))
    float_logits = make()(ids, 0).asnumpy()

    net = make()
    algo = RTN(PTQConfig(**KV))
    algo.convert(algo.apply(net))
    assert all(isinstance(layer.self_attn.kv_cache, DynamicInt8KVCache) for layer in net.model.layers)
    logits = net(ids, 0).asnumpy()
    assert net.model.layers[0].self_attn.kv_cache.keys[0][0].dtype == ms.int8
    net.reset_cache()
    assert np.linalg.norm(logits - float_logits) / np.linalg.norm(float_logits) < 0.02

    path = save_checkpoint(net, tmp_path / "rtn-kv.ckpt", description=algo.describe(net))
    fresh = make()
    deploy = RTN(PTQConfig(mode="deploy", **KV))
    deploy.convert(deploy.apply(fresh))
    load_checkpoint(path, fresh)
    np.testing.assert_array_equal(fresh(ids, 0).asnumpy(), logits)
