"""Quantized linear cells: the simulated (fake-quant) form and the deployed integer form.

Both hold a weight quantizer (``_weight_quantizer``: per channel int8, or per group int4
packed two per int8), optionally an input quantizer (``_input_quantizer``: static per tensor
or dynamic per token) and optionally ``smooth_scale`` (``[in]``, multiplies the input first:
SmoothQuant's ``1/s`` where it could not be folded into a preceding norm).

* :class:`SimQuantLinear` keeps the float weight and fake-quantizes weight and input on
  each forward.
* :class:`QuantLinear` holds the real int8 weight. By default it multiplies with a native
  kernel (:mod:`gscore.kernels`) that reads the int8 / packed int4 storage directly: int8 or
  int4 weights times float activations, or with an input quantizer int8 x int8 exactly in
  int32 (int8 x int4 per group: the activation codes times the int4 weight, as the ops path),
  the activation quantization fused in. With ``GSCORE_KERNELS=portable`` (or no C++
  compiler) it uses MindSpore ops instead: weight-only, it dequantises the weight and
  multiplies; with an input quantizer it multiplies the integer codes (as float32, exact
  below 2^24) and rescales the result by input x weight scales.

On the portable path, without an input quantizer, both forms compute ``(q + zp_neg) * scale``
in the compute dtype the same way, so their outputs are bit-identical; with one they differ
only by float rounding order (tested to 1e-5 relative). The kernels compute the same sums in
another order: float results agree within float32 rounding (``tests/test_kernels.py`` states
the tolerance), integer results are exact.
"""

from __future__ import annotations

from typing import Any

import mindspore as ms
import numpy as np
from mindspore import Parameter, Tensor, nn, ops

from gscore import kernels
from gscore.kernels.ops import primitive
from gscore.nn.linear_view import LinearView
from gscore.nn.quantizers import DynamicInputQuantizer, GroupWeightQuantizer, StaticInputQuantizer, WeightQuantizer


class _QuantLinearBase(nn.Cell):
    """What both forms share: the layer's shape, bias, activation and quantizers."""

    def __init__(self, view: LinearView, weight_quantizer: WeightQuantizer, input_quantizer: nn.Cell | None, smooth_scale: np.ndarray | None) -> None:
        super().__init__()
        self.in_channels, self.out_channels = view.in_channels, view.out_channels
        self.compute_dtype = view.compute_dtype
        self.transpose_b = view.transpose_b
        self.matmul = ops.MatMul(transpose_b=view.transpose_b)
        self.has_bias = view.bias is not None
        if self.has_bias:
            self.bias = view.bias
        self.activation = view.activation
        self._weight_quantizer = weight_quantizer
        self.has_input_quantizer = input_quantizer is not None
        if self.has_input_quantizer:
            self._input_quantizer = input_quantizer
        self.has_smooth = smooth_scale is not None
        if self.has_smooth:
            self.smooth_scale = Parameter(Tensor(smooth_scale.astype(np.float32)), name="smooth_scale", requires_grad=False)
        self.smooths_in_kernel = False

    def codes(self) -> Tensor:
        """The weight's integer codes (float32 values): computed (simulated) or stored (deployed)."""
        raise NotImplementedError

    def project_weight_only(self, x: Tensor) -> Tensor:
        """``x @ W.T`` with the quantized weight, in the compute dtype (same ops in both forms)."""
        wq = self._weight_quantizer
        if wq.rescales_output:
            return self.matmul(x, wq.shifted(self.codes())) * wq.output_scale()
        return self.matmul(x, wq.dequantize(self.codes()))

    def project(self, x: Tensor) -> Tensor:
        """``x [n, in]`` (compute dtype) -> ``[n, out]``; the form-specific matmul."""
        raise NotImplementedError

    def construct(self, x: Tensor) -> Tensor:
        out_shape = x.shape[:-1] + (self.out_channels,)
        ori_dtype = x.dtype
        x = ops.cast(ops.reshape(x, (-1, self.in_channels)), self.compute_dtype)
        if self.has_smooth and not self.smooths_in_kernel:
            x = x * ops.cast(self.smooth_scale, self.compute_dtype)
        y = self.project(x)
        if self.has_bias:
            y = ops.bias_add(y, ops.cast(self.bias, self.compute_dtype))
        if self.activation is not None:
            y = self.activation(y)
        return ops.reshape(ops.cast(y, ori_dtype), out_shape)


class SimQuantLinear(_QuantLinearBase):
    """Simulated quantization: float ``weight`` kept, weight and input fake-quantized."""

    def __init__(self, view: LinearView, weight_quantizer: WeightQuantizer, input_quantizer: nn.Cell | None = None, smooth_scale: np.ndarray | None = None) -> None:
        super().__init__(view, weight_quantizer, input_quantizer, smooth_scale)
        self.weight = view.weight

    def codes(self) -> Tensor:
        return self._weight_quantizer.codes_of(self.weight)

    def project(self, x: Tensor) -> Tensor:
        wq = self._weight_quantizer
        if not self.has_input_quantizer:  # dequantize(codes()) is fake_quantize(weight): one fused operator where there is one
            return self.project_weight_only(x) if wq.rescales_output else self.matmul(x, wq.fake_quantize(self.weight))
        w = wq.fake_quantize(self.weight)
        y = self.matmul(self._input_quantizer.fake_quantize(ops.cast(x, ms.float32)), ops.cast(w, ms.float32))
        return ops.cast(y, self.compute_dtype)


class QuantLinear(_QuantLinearBase):
    """Deployed form: ``weight`` is real int8 storage (int4 codes packed for group quantizers).

    ``kernel`` names the native kernel the cell multiplies with (chosen when the cell is built,
    from its quantizers and the active :func:`gscore.kernels.level`), or is None for the
    MindSpore ops path. The parameters are the same either way, so checkpoints do not change.
    """

    def __init__(self, view: LinearView, weight_quantizer: WeightQuantizer, stored: np.ndarray, input_quantizer: nn.Cell | None = None, smooth_scale: np.ndarray | None = None) -> None:
        super().__init__(view, weight_quantizer, input_quantizer, smooth_scale)
        if stored.dtype != np.int8:
            raise TypeError(f"QuantLinear stores its weight as int8, got {stored.dtype}")
        self.weight = Parameter(Tensor.from_numpy(stored), name="weight", requires_grad=False)
        self.kernel = native_kernel(weight_quantizer, input_quantizer, view.transpose_b)
        self.native = primitive(self.kernel) if self.kernel else None
        if self.kernel in _INT4:
            self.group_size = Tensor(np.array([weight_quantizer.group_size], np.int32))
        if self.kernel in (*_A8W8, *_A8W4):
            # the kernels with quantized inputs multiply by the input scale themselves (in
            # float32, as the ops path does in float32 compute); without one they get ones
            self.smooths_in_kernel = self.has_smooth and self.compute_dtype == ms.float32
            if not self.smooths_in_kernel:
                self.unit_scale = Tensor(np.ones(self.in_channels, np.float32))

    def codes(self) -> Tensor:
        return ops.cast(self._weight_quantizer.unpack(self.weight), ms.float32)

    def project(self, x: Tensor) -> Tensor:
        if self.native is not None:
            return self.project_native(x)
        if not self.has_input_quantizer:
            return self.project_weight_only(x)
        wq = self._weight_quantizer
        x_codes, x_scale = self._input_quantizer.deploy(ops.cast(x, ms.float32))
        if is_group_quantizer(wq):  # A8W4: a scale per weight group, so the weight is dequantised first
            y = self.matmul(x_codes, ops.cast(wq.dequantize(self.codes()), ms.float32)) * x_scale
            return ops.cast(y, self.compute_dtype)
        w_codes = ops.cast(wq.shifted(self.codes()), ms.float32)
        y = self.matmul(x_codes, w_codes) * x_scale * ops.cast(wq.output_scale(), ms.float32)
        return ops.cast(y, self.compute_dtype)

    def project_native(self, x: Tensor) -> Tensor:
        """One kernel call on the stored weight and scales; output in ``x``'s dtype."""
        return self.native(x, *self.kernel_inputs())

    def kernel_inputs(self, block: bool = False) -> tuple:
        """What the native kernel takes after ``x``: the stored weight and scales, then (as the
        kernel needs them) the group size, the static input scale and zero point, the smooth
        scale (``csrc/entry.cc`` gives the order). ``block=True``: what a block run as one
        operator takes instead, without an int4 kernel's group size (:attr:`kernel_group_size`)
        and a symmetric layer's zero points (:attr:`zero_points_implied`): its meta holds the
        one and says the other is zero, and each input or graph parameter left out is about
        1.6 µs less at every launch (bench/results/launch_inputs.md). Built without slicing
        or generators: this runs inside compiled graphs, where a generator over the inputs made
        compiling SmolLM2's decode step take 44 s instead of 9."""
        wq = self._weight_quantizer
        weight = (self.weight, wq.scale) if block and self.zero_points_implied else (self.weight, wq.scale, wq.zp_neg)
        if self.kernel == "w4_linear":
            return weight if block else weight + (self.group_size,)
        if self.kernel == "w8_linear":
            return weight
        smooth = self.smooth_scale if self.smooths_in_kernel else self.unit_scale
        iq = self._input_quantizer
        if self.kernel == "a8w8_static_linear":
            return weight + (iq.scale, iq.zp, smooth)
        if self.kernel == "a8w8_dynamic_linear":
            return weight + (smooth,)
        group = () if block else (self.group_size,)  # the int4 kernels below
        if self.kernel == "a8w4_static_linear":
            return weight + group + (iq.scale, iq.zp, smooth)
        return weight + group + (smooth,)

    def group_inputs(self, block: bool = False) -> tuple:
        """:meth:`kernel_inputs` (``block`` as there) followed by the bias when the layer has
        one: this layer's part of a :mod:`gscore.nn.linear_group` operator."""
        inputs = self.kernel_inputs(block)
        if self.has_bias:
            return inputs + (self.bias,)
        return inputs

    @property
    def zero_points_implied(self) -> bool:
        """Whether the weights are symmetric: zero points all zero, which the MindSpore path
        never adds (:meth:`WeightQuantizer.shifted`) and a block operator need not be given."""
        return self._weight_quantizer.symmetric

    @property
    def kernel_group_size(self) -> int:
        """The group size an int4 kernel takes as an input; 0 for the other kernels."""
        return int(self.group_size.asnumpy()[0]) if self.kernel in _INT4 else 0

    @property
    def groupable(self) -> bool:
        """Whether a linear group operator can compute this layer: a native kernel, float32
        compute and bias, no activation, any smooth scale applied inside the kernel."""
        smooth_outside = self.has_smooth and not self.smooths_in_kernel
        float_bias = not self.has_bias or self.bias.dtype == ms.float32
        return self.native is not None and self.compute_dtype == ms.float32 and self.activation is None and not smooth_outside and float_bias


_A8W8 = ("a8w8_static_linear", "a8w8_dynamic_linear")
_A8W4 = ("a8w4_static_linear", "a8w4_dynamic_linear")
_INT4 = ("w4_linear", *_A8W4)  # the kernels that take a group size after the zero points


def native_kernel(weight_quantizer: WeightQuantizer, input_quantizer: nn.Cell | None, transpose_b: bool) -> str | None:
    """The :mod:`gscore.kernels` kernel for a deployed layer with these quantizers, or None
    when native kernels are off or do not cover it (an ``[in, out]`` weight, int8 codes per
    group)."""
    if not transpose_b or not kernels.enabled():
        return None
    grouped = isinstance(weight_quantizer, GroupWeightQuantizer)
    if grouped and weight_quantizer.bits != 4:
        return None
    if input_quantizer is None:
        return "w4_linear" if grouped else "w8_linear"
    static, dynamic = _A8W4 if grouped else _A8W8
    if isinstance(input_quantizer, StaticInputQuantizer):
        return static
    if isinstance(input_quantizer, DynamicInputQuantizer):
        return dynamic
    return None


def view_of(cell: _QuantLinearBase) -> LinearView:
    """The :class:`LinearView` of a quantized linear cell (to rebuild it in another form)."""
    return LinearView(
        cell=cell,
        weight=cell.weight,
        bias=cell.bias if cell.has_bias else None,
        transpose_b=cell.transpose_b,
        compute_dtype=cell.compute_dtype,
        activation=cell.activation,
        in_channels=cell.in_channels,
        out_channels=cell.out_channels,
    )


def quantizers_of(cell: _QuantLinearBase) -> tuple[WeightQuantizer, nn.Cell | None, np.ndarray | None]:
    """The weight quantizer, input quantizer (or None) and smooth scale (or None) of a cell."""
    smooth = cell.smooth_scale.asnumpy() if cell.has_smooth else None
    return cell._weight_quantizer, cell._input_quantizer if cell.has_input_quantizer else None, smooth


def is_group_quantizer(quantizer: Any) -> bool:
    return isinstance(quantizer, GroupWeightQuantizer)
