"""KV caches (growing and preallocated, native and MindSpore-ops attention) and compiled decoding.

Tolerance: attention outputs agree within 1e-5 relative to their scale (float32 summation
order; int8 entries are encoded identically on every path, so only the float math differs).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager, nullcontext
from typing import Iterator

import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor

from gscore import kernels
from gscore.errors import ConfigError
from gscore.models.llama import LlamaConfig, build_llama
from gscore.nn.decoding import CompiledDecoder
from gscore.nn.kv_cache import DynamicInt8KVCache, FloatKVCache, StaticInt8KVCache

BATCH, KV_HEADS, HEADS, HEAD_DIM, CAPACITY = 2, 2, 4, 8, 16
TINY = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4, num_kv_heads=2, max_positions=64)


@pytest.fixture(scope="module", autouse=True)
def _blocking():
    ms.runtime.launch_blocking()


@contextmanager
def portable() -> Iterator[None]:
    """The MindSpore-ops path (its fallback warning is the subject of test_kernel_build.py)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kernels.KernelFallbackWarning)
        with kernels.forced("portable"):
            yield


def make_cache(kind: str) -> FloatKVCache:
    rng = np.random.default_rng(3)
    if kind == "float":
        return FloatKVCache(KV_HEADS, HEAD_DIM)
    if kind == "dynamic":
        return DynamicInt8KVCache(KV_HEADS, HEAD_DIM)
    params = [Tensor((rng.random((KV_HEADS, 1, HEAD_DIM)) * 0.05 + 0.01).astype(np.float32)) if i % 2 == 0 else Tensor(rng.integers(-5, 5, (KV_HEADS, 1, HEAD_DIM)).astype(np.float32)) for i in range(4)]
    return StaticInt8KVCache(KV_HEADS, HEAD_DIM, *params)


def run_steps(cache: FloatKVCache, width: int | None, prefix_length: int = 0) -> list[np.ndarray]:
    """A 5-token prefill then steps of 1, 1 and 2 tokens; the same random inputs every time
    (and the same float prefix of ``prefix_length`` entries, when asked for)."""
    rng = np.random.default_rng(4)
    prefix = [Tensor(rng.standard_normal((1, KV_HEADS, prefix_length, HEAD_DIM)).astype(np.float32) * 4) for _ in range(2)] if prefix_length else []
    outputs, start = [], 0
    for tokens in (5, 1, 1, 2):
        q = Tensor(rng.standard_normal((BATCH, HEADS, tokens, HEAD_DIM)).astype(np.float32))
        k = Tensor(rng.standard_normal((BATCH, KV_HEADS, tokens, HEAD_DIM)).astype(np.float32))
        v = Tensor(rng.standard_normal((BATCH, KV_HEADS, tokens, HEAD_DIM)).astype(np.float32))
        keys, queries = np.arange(prefix_length + (width or start + tokens))[None, :], np.arange(prefix_length + start, prefix_length + start + tokens)[:, None]
        mask = Tensor(np.where(keys > queries, np.float32(-1e9), np.float32(0.0)))
        outputs.append(cache(q, k, v, mask, 0.35, *prefix).asnumpy())
        start += tokens
    return outputs


@pytest.mark.parametrize("kind", ["float", "static", "dynamic"])
@pytest.mark.parametrize("prefix_length", [0, 3])
def test_every_storage_and_attention_path_gives_the_same_attention(kind, prefix_length):
    """Growing and preallocated storage, native kernels and MindSpore ops: one attention, with
    and without a float prefix."""
    with portable():
        reference = run_steps(make_cache(kind), None, prefix_length)
    growing = run_steps(make_cache(kind), None, prefix_length)
    cache = make_cache(kind)
    before = {p.name for p in cache.get_parameters()}
    cache.allocate(BATCH, CAPACITY, "cache")
    preallocated = run_steps(cache, CAPACITY, prefix_length)
    cache.reset()
    again = run_steps(cache, CAPACITY, prefix_length)
    assert cache.stored_bytes() == (4 if kind == "float" else 1) * 2 * CAPACITY * BATCH * KV_HEADS * HEAD_DIM + (2 * 4 * CAPACITY * BATCH * KV_HEADS if kind == "dynamic" else 0)
    cache.release()
    assert {p.name for p in cache.get_parameters()} == before  # buffers never reach a checkpoint
    with portable():
        cache = make_cache(kind)
        cache.allocate(BATCH, CAPACITY, "cache")
        ops_preallocated = run_steps(cache, CAPACITY, prefix_length)
    for outputs in (growing, preallocated, again, ops_preallocated):
        for got, want in zip(outputs, reference):
            assert got.shape == (BATCH * want.shape[0] // BATCH, HEADS * HEAD_DIM)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())


def tiny_llama() -> object:
    ms.set_seed(0)
    return build_llama(TINY)


def teacher_forced_logits(run, prompt: np.ndarray, follow: list[int]) -> list[np.ndarray]:
    logits = [run(Tensor(prompt), 0).asnumpy()[:, -1]]
    for i, token in enumerate(follow):
        logits.append(run(Tensor(np.array([[token]], np.int32)), prompt.shape[1] + i).asnumpy()[:, -1])
    return logits


@pytest.mark.parametrize("prefix", [None, [1, 40]])
def test_compiled_decoding_equals_the_op_by_op_network_and_leaves_it_unchanged(prefix):
    net = tiny_llama()
    if prefix is not None:  # a fixed float prefix (PTQ's 'bos' prefix): attended in the graph too
        net.set_prefix(np.array(prefix))
    prompt, follow = np.array([[3, 14, 15, 92, 65]], np.int32), [35, 89, 79]
    net.reset_cache()
    eager = teacher_forced_logits(net, prompt, follow)
    net.reset_cache()
    names = [p.name for p in net.get_parameters()]
    with CompiledDecoder(net, capacity=12) as decoder:
        compiled = teacher_forced_logits(decoder, prompt, follow)
        decoder.reset_cache()
        again = teacher_forced_logits(decoder, prompt, follow)  # same graphs, reset caches
        with pytest.raises(ConfigError, match="must start there"):
            decoder(Tensor(np.array([[1]], np.int32)), 3)
        with pytest.raises(ConfigError, match="exceed the cache capacity of 12"):
            decoder(Tensor(np.zeros((1, 5), np.int32)), 8)
        with pytest.raises(ConfigError, match="batch 1"):
            decoder(Tensor(np.zeros((2, 1), np.int32)), 8)
    assert [p.name for p in net.get_parameters()] == names
    for got, second, want in zip(compiled, again, eager):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max())
        np.testing.assert_array_equal(second, got)


def test_last_token_logits_are_the_last_row_of_the_full_logits_op_by_op_and_compiled():
    """``last=True`` (what generation asks for) runs the head on each sequence's last token only:
    the same logits as the full forward's last row (float summation order aside), for every
    sequence of a batch, on the prefill and on a step."""
    net = tiny_llama()
    prompt, step = np.array([[3, 14, 15, 92, 65], [7, 1, 40, 2, 9]], np.int32), np.array([[35], [89]], np.int32)

    def logits(run, ids: np.ndarray, start: int, last: bool) -> np.ndarray:
        """``ids`` at ``start`` from fresh caches (holding the prompt first when ``start`` > 0)."""
        run.reset_cache()
        if start:
            run(Tensor(prompt), 0)
        return run(Tensor(ids), start, last=last).asnumpy()

    def both(run) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(logits(run, ids, start, True), logits(run, ids, start, False)[:, -1:]) for ids, start in ((prompt, 0), (step, prompt.shape[1]))]

    with CompiledDecoder(net, capacity=12, batch=2) as decoder:
        compiled = both(decoder)
    for last, full in both(net) + compiled:
        assert last.shape == (2, 1, TINY.vocab_size)
        np.testing.assert_allclose(last, full, rtol=1e-5, atol=1e-5 * np.abs(full).max())


@pytest.mark.parametrize("path", ["native", "portable"])
def test_a_later_decoder_of_the_same_capacity_uses_its_own_caches(path):
    """MindSpore keys a cell method's compiled graph by the cell: a second decoder reusing the
    first one's graph would read and write the buffers the first released (full, so the native
    operator refused; the MindSpore-ops path scattered past them). Each decoder compiles its own."""
    with portable() if path == "portable" else nullcontext():
        net = tiny_llama()
        prompt, follow = np.array([[3, 14, 15, 92, 65]], np.int32), [35, 89, 79]
        runs = []
        for _ in range(2):
            with CompiledDecoder(net, capacity=12) as decoder:
                runs.append(teacher_forced_logits(decoder, prompt, follow))
    for got, want in zip(*runs):
        np.testing.assert_array_equal(got, want)


def test_a_capacity_beyond_the_model_positions_is_refused():
    with pytest.raises(ConfigError, match="capacity must be 1..64"):
        CompiledDecoder(tiny_llama(), capacity=65)


def test_a_second_decoder_on_a_network_waits_for_the_first_to_close():
    """Building one would reallocate the caches under the open decoder (whose graphs would then
    read buffers of another capacity); after the first closes, a second works."""
    net = tiny_llama()
    with CompiledDecoder(net, capacity=8):
        with pytest.raises(ConfigError, match="held by an open CompiledDecoder"):
            CompiledDecoder(net, capacity=12)
    with CompiledDecoder(net, capacity=12) as decoder:
        assert decoder(Tensor(np.array([[3, 14]], np.int32)), 0).shape == (1, 2, net.config.vocab_size)
