"""ResNet-18 (He et al., 2015) in plain torch, with seeded weights.

torchvision does not import beside the CPU torch wheel used here, so the standard
architecture is written out: a 7x7 stem, four stages of two BasicBlocks each
(64/128/256/512 channels, stride 2 from the second stage), global average pooling and
a 1000-way linear head. Layer names follow torchvision's so a user's state_dict loads.
"""

from __future__ import annotations

import torch
from torch import nn

NUM_CLASSES = 1000
STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = (2, 2, 2, 2)


class BasicBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        in_channels = 64
        for index, (channels, blocks) in enumerate(zip(STAGE_CHANNELS, BLOCKS_PER_STAGE)):
            stride = 1 if index == 0 else 2
            layer = []
            for block in range(blocks):
                layer.append(BasicBlock(in_channels, channels, stride if block == 0 else 1))
                in_channels = channels
            setattr(self, f"layer{index + 1}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def build_resnet18(seed: int = 0, calibration: torch.Tensor | None = None) -> ResNet18:
    """A ResNet-18 in eval mode with seeded Kaiming weights.

    Random weights with BatchNorm's default statistics give activations that grow
    through the network; if ``calibration`` images are given, BatchNorm running
    statistics are estimated on them (a cumulative average, as after training) so the
    activations, and therefore quantization ranges, look like a trained model's.
    """
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = ResNet18()
        for module in model.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if calibration is not None:
            _estimate_batchnorm_statistics(model, calibration)
    finally:
        torch.random.set_rng_state(generator_state)
    return model.eval()


@torch.no_grad()
def _estimate_batchnorm_statistics(model: nn.Module, images: torch.Tensor, chunk: int = 16) -> None:
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative moving average over all chunks
    model.train()
    for start in range(0, len(images), chunk):
        model(images[start : start + chunk])
    model.eval()
