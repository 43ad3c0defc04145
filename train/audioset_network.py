"""The mn04_as network in torch: EfficientAT's MobileNetV3 for log-mel spectrograms, width 0.4, 527 AudioSet classes.

Our own implementation of the architecture of EfficientAT (Florian Schmid, https://github.com/fschmid56/EfficientAT,
MIT licence, read at commit a425fdce9257: models/mn/model.py, block_types.py, utils.py), itself an adaptation of
torchvision's MobileNetV3. It imports torch at the top, so it is imported only through
`instrument_ai.train.audioset_tagger`, which turns a missing torch into one line.

What must match the pinned state dict, and why each choice is what it is:

* **Module names and order** are EfficientAT's (``features.N.block.M.0.weight``, ``conc_se_layers.0.fc1``,
  ``classifier.2``/``classifier.5``), so ``load_state_dict(strict=True)`` proves every tensor found its place.
* **BatchNorm eps 0.001** (torch's default is 1e-5): eps is not in the state dict, and in eval mode it changes
  every normalised activation, so a wrong eps loads silently and answers wrongly.
* **The default pretrained configuration** of ``get_model``: MobileNetV3-Large block table, strides (2, 2, 2, 2),
  no dilation or reduced tail, the ``mlp`` head, squeeze-excitation over channels only (``se_dims='c'``,
  bottleneck ``channels // 4`` rounded to 8) with max-aggregation, which over a single SE layer is the identity.
* **Channels scaled by 0.4** and rounded to multiples of 8 (`make_divisible`), as TensorFlow's MobileNet does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

WIDTH = 0.4
NUM_CLASSES = 527
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
SE_REDUCTION = 4
HEAD_WIDTH = 1280  # MobileNetV3-Large's penultimate width at width 1.0 (scaled like the blocks)
LAST_CONV_EXPANSION = 6  # the last 1x1 convolution widens the last block's output six times
DROPOUT = 0.2  # inactive in eval mode; kept so a training copy behaves like the original


@dataclass(frozen=True)
class BlockSpec:
    """One inverted-residual block of MobileNetV3 (Howard et al. 2019, Table 1), channels at width 1.0."""

    in_channels: int
    kernel: int
    expanded: int
    out_channels: int
    squeeze_excite: bool
    hardswish: bool
    stride: int


# MobileNetV3-Large: in, kernel, expanded, out, SE, hard-swish (else ReLU), stride.
MOBILENET_V3_LARGE = (
    BlockSpec(16, 3, 16, 16, False, False, 1),
    BlockSpec(16, 3, 64, 24, False, False, 2),
    BlockSpec(24, 3, 72, 24, False, False, 1),
    BlockSpec(24, 5, 72, 40, True, False, 2),
    BlockSpec(40, 5, 120, 40, True, False, 1),
    BlockSpec(40, 5, 120, 40, True, False, 1),
    BlockSpec(40, 3, 240, 80, False, True, 2),
    BlockSpec(80, 3, 200, 80, False, True, 1),
    BlockSpec(80, 3, 184, 80, False, True, 1),
    BlockSpec(80, 3, 184, 80, False, True, 1),
    BlockSpec(80, 3, 480, 112, True, True, 1),
    BlockSpec(112, 3, 672, 112, True, True, 1),
    BlockSpec(112, 5, 672, 160, True, True, 2),
    BlockSpec(160, 5, 960, 160, True, True, 1),
    BlockSpec(160, 5, 960, 160, True, True, 1),
)


def make_divisible(value: float, divisor: int = 8) -> int:
    """`value` rounded to the nearest multiple of `divisor` (at least `divisor`), never more than 10 % below it."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


def scaled(spec: BlockSpec, width: float) -> BlockSpec:
    """The block with its channel counts scaled by `width`."""
    return BlockSpec(
        make_divisible(spec.in_channels * width),
        spec.kernel,
        make_divisible(spec.expanded * width),
        make_divisible(spec.out_channels * width),
        spec.squeeze_excite,
        spec.hardswish,
        spec.stride,
    )


def conv_bn(
    in_channels: int,
    out_channels: int,
    kernel: int,
    *,
    stride: int = 1,
    groups: int = 1,
    activation: type[nn.Module] | None = None,
) -> nn.Sequential:
    """Convolution (no bias, 'same' padding), BatchNorm, then the activation if any: keys ``.0`` and ``.1``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels, eps=BN_EPS, momentum=BN_MOMENTUM),
    ]
    if activation is not None:
        layers.append(activation())
    return nn.Sequential(*layers)


class ChannelSqueezeExcite(nn.Module):
    """Squeeze-and-excitation over channels: each channel is scaled by a gate computed from all channels' means."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        squeezed = make_divisible(channels // SE_REDUCTION)
        self.fc1 = nn.Linear(channels, squeezed)
        self.fc2 = nn.Linear(squeezed, channels)

    def forward(self, x: Tensor) -> Tensor:
        gate = torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean(dim=(2, 3))))))
        return x * gate[:, :, None, None]


class ConcurrentSqueezeExcite(nn.Module):
    """EfficientAT's container for SE layers over several axes; mn04_as has one (channels), so it is that layer.

    The container exists only so the state-dict keys read ``conc_se_layers.0.fc1.weight`` as in the file.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conc_se_layers = nn.ModuleList([ChannelSqueezeExcite(channels)])

    def forward(self, x: Tensor) -> Tensor:
        return self.conc_se_layers[0](x)


class InvertedResidual(nn.Module):
    """Expand (1x1, skipped when the width is unchanged), depthwise k x k, optional SE, project (1x1, linear).

    The input is added back when the block keeps both shape and resolution.
    """

    def __init__(self, spec: BlockSpec) -> None:
        super().__init__()
        activation: type[nn.Module] = nn.Hardswish if spec.hardswish else nn.ReLU
        layers: list[nn.Module] = []
        if spec.expanded != spec.in_channels:
            layers.append(conv_bn(spec.in_channels, spec.expanded, 1, activation=activation))
        depthwise = conv_bn(
            spec.expanded, spec.expanded, spec.kernel, stride=spec.stride, groups=spec.expanded, activation=activation
        )
        layers.append(depthwise)
        if spec.squeeze_excite:
            layers.append(ConcurrentSqueezeExcite(spec.expanded))
        layers.append(conv_bn(spec.expanded, spec.out_channels, 1))
        self.block = nn.Sequential(*layers)
        self.residual = spec.stride == 1 and spec.in_channels == spec.out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        return out + x if self.residual else out


class AudioMobileNet(nn.Module):
    """Log-mel ``(batch, 1, 128, frames)`` in; 527 logits and the 384 pooled features (the embedding) out.

    Any number of frames works: the head averages over frequency and time before its two linear layers.
    """

    def __init__(self, width: float = WIDTH, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        blocks = [scaled(spec, width) for spec in MOBILENET_V3_LARGE]
        last_in = blocks[-1].out_channels
        self.embedding_size = LAST_CONV_EXPANSION * last_in
        self.features = nn.Sequential(
            conv_bn(1, blocks[0].in_channels, 3, stride=2, activation=nn.Hardswish),
            *(InvertedResidual(spec) for spec in blocks),
            conv_bn(last_in, self.embedding_size, 1, activation=nn.Hardswish),
        )
        hidden = make_divisible(HEAD_WIDTH * width)
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(start_dim=1),
            nn.Linear(self.embedding_size, hidden),
            nn.Hardswish(),
            nn.Dropout(p=DROPOUT),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, mel: Tensor) -> tuple[Tensor, Tensor]:
        """Logits ``(batch, classes)`` and pooled features ``(batch, embedding_size)``."""
        maps = self.features(mel)
        return self.classifier(maps), maps.mean(dim=(2, 3))


__all__ = ["AudioMobileNet", "BlockSpec", "MOBILENET_V3_LARGE", "make_divisible", "scaled"]
