"""Cap oneDNN at AVX2, because on AVX-512 CPUs MindSpore's oneDNN runs float32 convolutions through a slow path.

MindSpore's CPU convolutions (and pooling, and op-by-op MatMul) call oneDNN. With AVX-512
available, MindSpore 2.9's oneDNN (v3.10) runs float32 convolutions on MindSpore's plain NCHW
tensors through its ``jit_uni_ncsp:conv+ref:any`` implementation; capped at AVX2 it takes
im2col + GEMM (``gemm:jit``, as ``ONEDNN_VERBOSE=1`` shows). On a 2-core AMD EPYC with AVX-512,
capped, training steps of the DigitCNN, LeNet5 and the digit ResNet took 0.07x, 0.19x and 0.06x
the time, and SmolLM2 (op-by-op forward, compiled prefill, decode step) 0.95-1.00x
(bench/results/onednn_isa.md). ``ONEDNN_MAX_CPU_ISA`` is oneDNN's documented switch.
"""

from __future__ import annotations

import os

VARIABLE = "ONEDNN_MAX_CPU_ISA"
"""oneDNN's cap on the instruction sets it uses: ``AVX2`` here, ``ALL`` (oneDNN's default) lifts it."""

FORMER_VARIABLE = "DNNL_MAX_CPU_ISA"
"""The same switch under oneDNN's former name, still read; a user who set it has chosen."""


def prefer_avx2() -> None:
    """Cap oneDNN at AVX2 unless the user chose a cap already (``ONEDNN_MAX_CPU_ISA=ALL``
    keeps every instruction set).

    oneDNN reads the variable once per process, when it creates its first primitive, so this
    only takes effect if no MindSpore convolution or MatMul has run yet; importing gscore first
    is enough. On CPUs without AVX-512 it changes nothing.
    """
    if VARIABLE not in os.environ and FORMER_VARIABLE not in os.environ:
        os.environ[VARIABLE] = "AVX2"
