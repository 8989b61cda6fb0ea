"""A multilayer perceptron for 28x28 digits: the smallest real network with Dense layers."""

from __future__ import annotations

from mindspore import Tensor, nn, ops


class DigitsMLP(nn.Cell):
    """``[n, 28, 28]`` images -> ``[n, 10]`` logits through Dense/ReLU layers of ``hidden`` widths."""

    def __init__(self, hidden: tuple[int, ...] = (256, 128), in_features: int = 784, classes: int = 10) -> None:
        super().__init__()
        widths = (in_features, *hidden)
        layers: list[nn.Cell] = []
        for fan_in, fan_out in zip(widths[:-1], widths[1:]):
            layers += [nn.Dense(fan_in, fan_out), nn.ReLU()]
        self.body = nn.SequentialCell(layers)
        self.head = nn.Dense(widths[-1], classes)

    def construct(self, x: Tensor) -> Tensor:
        return self.head(self.body(ops.reshape(x, (x.shape[0], -1))))
