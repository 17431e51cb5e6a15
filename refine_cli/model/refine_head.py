"""RefineMask head: stage 0 on the RoI feature and coarse mask, then SFM stages that double the size.

Stage k >= 1 runs at the previous size S (14, 28, 56) and outputs features and a logit at 2S.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from .config import RefineMaskConfig
from .semantic_head import conv3x3_relu


def roi_crop(maps: torch.Tensor, rois: torch.Tensor, size: int, scale: float, sampling_ratio: int) -> torch.Tensor:
    """(B, C, H, W) maps, (N, 5) rois [batch, x0, y0, x1, y1] -> (N, C, size, size)."""
    return roi_align(maps, rois, size, spatial_scale=scale, sampling_ratio=sampling_ratio, aligned=True)


class MultiBranchFusion(nn.Module):
    """Parallel 3x3 convs (+ReLU) at several dilations, summed, then a 1x1 merge conv without activation."""

    def __init__(self, channels: int, dilations: tuple[int, ...]):
        super().__init__()
        self.branches = nn.ModuleList(conv3x3_relu(channels, channels, d) for d in dilations)
        self.merge = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.merge(sum(branch(x) for branch in self.branches))


class SFMStage(nn.Module):
    """Semantic fusion module: fuse instance and semantic evidence at S, up-sample to 2S.

    in: instance feature (N, C_in, S, S), previous mask (N, 1, S, S), semantic feature
    (N, C_sem, S, S), semantic mask (N, 1, S, S), extra guides [(N, e, S, S), ...].
    out: (N, C_out, 2S, 2S) = [fused feature (C_out - 2), up(instance mask), up(semantic mask)].
    """

    def __init__(self, cin: int, cout: int, sem_channels: int, extra: int, dilations: tuple[int, ...]):
        super().__init__()
        self.fuse_in = nn.Conv2d(cin + sem_channels + 2 + extra, cin, 1)
        self.mbf = MultiBranchFusion(cin, dilations)
        self.fuse_out = nn.Conv2d(cin, cout - 2, 1)

    def forward(self, feat, mask, sem_feat, sem_mask, extra: list[torch.Tensor]):
        x = torch.cat([feat, sem_feat, mask, sem_mask, *extra], dim=1)
        x = F.relu(self.mbf(F.relu(self.fuse_in(x))))
        x = F.relu(self.fuse_out(x))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        masks = F.interpolate(torch.cat([mask, sem_mask], 1), scale_factor=2, mode="bilinear", align_corners=False)
        return torch.cat([x, masks], dim=1)


class RefineHead(nn.Module):
    """Cascade 14 -> 28 -> 56 -> 112 producing one mask logit per stage."""

    def __init__(self, cfg: RefineMaskConfig):
        super().__init__()
        self.cfg = cfg
        ch, sem = cfg.stage_channels, cfg.semantic_channels
        self.extra = int(cfg.coarse_at_every_stage) + 3 * int(cfg.rgb_at_every_stage)
        convs = [conv3x3_relu(cfg.fpn_channels + 1 if i == 0 else ch[0], ch[0])
                 for i in range(cfg.instance_num_convs)]
        self.stage0 = nn.Sequential(*convs)
        self.sem_in = nn.ModuleList(nn.Conv2d(sem, sem, 1) for _ in ch[1:])
        self.sem_out = nn.ModuleList(nn.Conv2d(sem, sem, 1) for _ in ch[1:])
        self.stages = nn.ModuleList(
            SFMStage(ch[k - 1], ch[k], sem, self.extra, cfg.dilations) for k in range(1, len(ch)))
        self.logits = nn.ModuleList(nn.Conv2d(c, 1, 1) for c in ch)
        # Each stage predicts a residual on the coarse mask's logit, so "keep the detector's mask"
        # is the zero-residual default and good masks are not "fixed" into worse ones.
        self.prior_scale = nn.Parameter(torch.full((len(ch),), cfg.coarse_prior_logit))
        for conv in self.logits:  # zero residual at init: the untrained head returns the coarse mask
            nn.init.zeros_(conv.weight)
            nn.init.zeros_(conv.bias)

    def prepare(self, sem_feat: torch.Tensor) -> list[torch.Tensor]:
        """Per-image work shared by all RoIs: the semantic 1x1 transform of each SFM stage.

        (B, C_sem, H/4, W/4) -> list of (B, C_sem, H/4, W/4), one per SFM stage.
        """
        return [F.relu(conv(sem_feat)) for conv in self.sem_in]

    def forward(self, inst_feat, coarse, rois, sem_maps, sem_prob, image) -> list[torch.Tensor]:
        """Stage logits [(N, 1, 14, 14), (N, 1, 28, 28), (N, 1, 56, 56), (N, 1, 112, 112)].

        inst_feat: (N, C_fpn, 14, 14) RoI feature; coarse: (N, 1, 112, 112) coarse-mask crop in [0, 1];
        rois: (N, 5) in input-image pixels; sem_maps: from ``prepare``; sem_prob: (B, 1, H/4, W/4)
        sigmoid of the semantic logit; image: (B, 3, H, W) normalised input (RGB guide).
        """
        sizes, sr = self.cfg.stage_sizes, self.cfg.roi_sampling_ratio
        coarse_at = {s: F.adaptive_avg_pool2d(coarse, s) for s in sizes}
        x = self.stage0(torch.cat([inst_feat, coarse_at[sizes[0]]], dim=1))
        logits = [self._logit(0, x, coarse_at[sizes[0]])]
        for k, stage in enumerate(self.stages):
            s = sizes[k]
            sem_feat = F.relu(self.sem_out[k](roi_crop(sem_maps[k], rois, s, 0.25, sr)))
            sem_mask = roi_crop(sem_prob, rois, s, 0.25, sr)
            extra = []
            if self.cfg.coarse_at_every_stage:
                extra.append(coarse_at[s])
            if self.cfg.rgb_at_every_stage:
                extra.append(roi_crop(image, rois, s, 1.0, sr))
            x = stage(x, logits[-1].sigmoid(), sem_feat, sem_mask, extra)
            logits.append(self._logit(k + 1, x, coarse_at[sizes[k + 1]]))
        return logits

    def _logit(self, k: int, x: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Stage k's mask logit: learned residual + prior_scale[k] * (2 * coarse - 1)."""
        return self.logits[k](x) + self.prior_scale[k] * (2.0 * coarse - 1.0)
