"""Small convolutional networks for 28x28 digits: LeNet5 and a residual network with BatchNorm.

Both are the real networks the QAT and pruning algorithms are trained and measured on. Inputs
are ``[n, 28, 28]`` or ``[n, 1, 28, 28]`` float32 images in 0..1; outputs ``[n, 10]`` logits.
"""

from __future__ import annotations

from mindspore import Tensor, nn, ops


def _as_nchw(x: Tensor) -> Tensor:
    return ops.expand_dims(x, 1) if x.ndim == 3 else x


class LeNet5(nn.Cell):
    """LeNet-5 on 28x28: conv5x5(6) - pool - conv5x5(16) - pool - 120 - 84 - 10, ReLU."""

    def __init__(self, classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 6, 5, pad_mode="valid", has_bias=True)
        self.conv2 = nn.Conv2d(6, 16, 5, pad_mode="valid", has_bias=True)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Dense(16 * 4 * 4, 120)
        self.fc2 = nn.Dense(120, 84)
        self.fc3 = nn.Dense(84, classes)

    def construct(self, x: Tensor) -> Tensor:
        x = self.pool(self.relu(self.conv1(_as_nchw(x))))
        x = self.pool(self.relu(self.conv2(x)))
        x = self.relu(self.fc1(self.flatten(x)))
        x = self.relu(self.fc2(x))
        return self.fc3(x)


class BasicBlock(nn.Cell):
    """Two 3x3 conv+BN with a residual; a 1x1 conv+BN shortcut when shape changes.

    ``conv1``'s output channels (``mid``) are internal to the block: pruning them only
    touches ``bn1`` and ``conv2``'s inputs, never the residual sum.
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, mid_channels, 3, stride=stride, pad_mode="same", has_bias=False)
        self.bn1 = nn.BatchNorm2d(mid_channels)
        self.conv2 = nn.Conv2d(mid_channels, out_channels, 3, pad_mode="same", has_bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.has_downsample = stride != 1 or in_channels != out_channels
        if self.has_downsample:
            self.downsample = nn.SequentialCell(
                [nn.Conv2d(in_channels, out_channels, 1, stride=stride, pad_mode="same", has_bias=False), nn.BatchNorm2d(out_channels)]
            )

    def construct(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = self.downsample(x) if self.has_downsample else x
        return self.relu(out + shortcut)


class DigitsResNet(nn.Cell):
    """A small ResNet for 28x28 digits: stem conv+BN, one BasicBlock per stage, pool, Dense.

    ``widths`` are the stage channel counts (stride 1, 2, 2), so 28 -> 28 -> 14 -> 7.
    """

    def __init__(self, widths: tuple[int, ...] = (16, 32, 64), classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, widths[0], 3, pad_mode="same", has_bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        blocks = []
        in_channels = widths[0]
        for i, width in enumerate(widths):
            blocks.append(BasicBlock(in_channels, width, width, stride=1 if i == 0 else 2))
            in_channels = width
        self.layers = nn.SequentialCell(blocks)
        self.pool = ops.ReduceMean(keep_dims=False)
        self.fc = nn.Dense(in_channels, classes)

    def construct(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(_as_nchw(x))))
        x = self.layers(x)
        return self.fc(self.pool(x, (2, 3)))
