"""Quality gate: how far to trust the refined mask over the detector's, per instance and per pixel.

The cascade is trained to fix blobby masks, so on a near-perfect input it can only lose. The gate
looks at both masks and the RGB crop (does the coarse edge sit on an image edge? is it a blob?),
estimates the coarse mask's IoU with the truth, and blends: out = g * refined + (1 - g) * coarse.
It is trained after the cascade with the cascade frozen (``refine_cli.train.gate``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .semantic_head import conv3x3_relu


class QualityGate(nn.Module):
    """A strided 3x3 conv to a quarter of the mask size, dilated 3x3 convs there, a per-pixel gate
    (up-sampled) and a pooled per-instance head. At a quarter size the gate's training step costs
    a tenth of what it does at half size on a CPU; it judges regions, the cascade draws the edge.

    in: coarse, refined (N, 1, S, S) in [0, 1]; rgb (N, 3, S, S) normalised crop; log_size (N, 2)
    log of the RoI's width and height in input pixels (how blocky a clean mask looks depends on it).
    out: gate (N, 1, S, S) in [0, 1], the weight of the refined mask; quality (N,) in [0, 1], the
    estimated IoU of the coarse mask with the truth.
    """

    def __init__(self, channels: int = 16, dilations: tuple[int, ...] = (1, 2, 4)):
        super().__init__()
        down = nn.Sequential(nn.Conv2d(6, channels, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.convs = nn.Sequential(down, *(conv3x3_relu(channels, channels, d) for d in dilations))
        self.pixel = nn.Conv2d(channels, 1, 1)
        self.instance = nn.Sequential(nn.Linear(2 * channels + 2, channels), nn.ReLU(inplace=True),
                                      nn.Linear(channels, 2))
        # Start by trusting the cascade (gate ~0.95), i.e. the model as it was before the gate.
        nn.init.zeros_(self.pixel.weight)
        nn.init.zeros_(self.pixel.bias)
        nn.init.constant_(self.instance[2].bias, 3.0)

    def forward(self, coarse: torch.Tensor, refined: torch.Tensor, rgb: torch.Tensor,
                log_size: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([coarse, refined, (refined - coarse).abs(), rgb], dim=1)
        x = self.convs(F.avg_pool2d(x, 2))
        pooled = torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3)), log_size], dim=1)
        quality_logit, instance_logit = self.instance(pooled).unbind(dim=1)
        pixel_logit = F.interpolate(self.pixel(x), size=coarse.shape[-2:], mode="bilinear", align_corners=False)
        gate = torch.sigmoid(pixel_logit + instance_logit[:, None, None, None])
        return gate, torch.sigmoid(quality_logit)


def roi_log_size(rois: torch.Tensor) -> torch.Tensor:
    """(N, 5) [batch, x0, y0, x1, y1] -> (N, 2) log of width and height (at least 1 px)."""
    return (rois[:, 3:5] - rois[:, 1:3]).clamp(min=1.0).log()
