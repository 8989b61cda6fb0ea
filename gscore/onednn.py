"""Cap oneDNN at AVX2, because on AVX-512 CPUs MindSpore's oneDNN runs float32 convolutions 20-50x slower.

MindSpore's CPU convolutions (and pooling, and op-by-op MatMul) call oneDNN. With AVX-512
available, MindSpore 2.9's oneDNN (v3.10) runs float32 convolutions on MindSpore's plain NCHW
tensors through its ``jit_uni_ncsp`` implementation; capped at AVX2 it takes im2col + GEMM
(``gemm:jit``). On a 2-core AMD EPYC with AVX-512 the second took 1/20 to 1/50 of the time
(a DigitCNN training step, SCOP's knockoff stage and the QAT benches with it), while language
models, whose op-by-op MatMul loses its AVX-512 GEMM, changed far less; the measurements are in
bench/results/onednn_isa.md. ``ONEDNN_MAX_CPU_ISA`` is oneDNN's documented switch.
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
