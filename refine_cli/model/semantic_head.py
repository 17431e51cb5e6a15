"""Semantic branch on P2 (stride 4): a foreground logit map and a feature map for the SFM stages."""

from __future__ import annotations

import torch
from torch import nn


def conv3x3_relu(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True))


class SemanticHead(nn.Module):
    """``num_convs`` x (3x3 conv, ReLU) on P2, then a 1x1 conv to one foreground logit.

    (B, C_fpn, H/4, W/4) -> feature (B, C_sem, H/4, W/4), logit (B, 1, H/4, W/4).
    Target of the logit: union of all instance masks of the image.
    """

    def __init__(self, in_channels: int, channels: int, num_convs: int):
        super().__init__()
        layers = [conv3x3_relu(in_channels if i == 0 else channels, channels) for i in range(num_convs)]
        self.convs = nn.Sequential(*layers)
        self.logit = nn.Conv2d(channels, 1, 1)

    def forward(self, p2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = self.convs(p2)
        return feat, self.logit(feat)
