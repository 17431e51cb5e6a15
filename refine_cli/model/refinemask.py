"""RefineMask (Zhang et al., CVPR 2021) adapted to refine another detector's masks after the fact.

Paper: a Mask R-CNN head that predicts masks from RoI features; the cascade 14 -> 28 -> 56 -> 112
fuses a semantic branch on P2 (SFM) and, from stage 2 on, updates only a boundary band (BAR).

What the post-hoc use changes (paper value -> ours):
- input: box only -> box + the detector's coarse mask, resampled into the box at stage 0
  (and, by config, at every SFM stage together with the RGB crop, so a stage can keep detail
  that the 14x14 stage-0 input cannot hold); every stage's logit is a learned residual on
  the coarse mask's logit, so keeping a good mask is the default;
- classes: 80 class-specific mask logits -> one class-agnostic logit (any detector's labels);
- box: the detector's box -> the box scaled by ``box_expand`` about its centre, so the
  refined mask can grow past a tight or clipped box;
- backbone: ResNet-50-FPN, 256 ch -> EfficientNet-Lite0-FPN, 64 ch (CPU budget; ResNet
  selectable); head channels (256, 128, 64, 32) -> (96, 48, 24, 16), semantic 256 -> 32.
Loss weights (0.25, 0.5, 0.75, 1.0) + semantic 1.0, BAR widths 2 (train) / 1 (test) follow the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops.poolers import LevelMapper

from .backbone import BackboneWithFPN, EfficientNetLite
from .bar import band_bce, bar_fuse, bar_region
from .config import RefineMaskConfig
from .quality_gate import QualityGate, roi_log_size
from .refine_head import RefineHead, roi_crop
from .semantic_head import SemanticHead

_IMAGENET_MEAN = (123.675, 116.28, 103.53)
_IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class ImageFeatures:
    """Per-image tensors shared by all of its RoIs (B images)."""

    image: torch.Tensor  # (B, 3, H, W) normalised input
    fpn: list[torch.Tensor]  # P2..P5, (B, C, H/s, W/s)
    sem_logit: torch.Tensor  # (B, 1, H/4, W/4)
    sem_prob: torch.Tensor  # (B, 1, H/4, W/4)
    sem_maps: list[torch.Tensor]  # per SFM stage, (B, C_sem, H/4, W/4)


class RefineMask(nn.Module):
    def __init__(self, cfg: RefineMaskConfig):
        super().__init__()
        self.cfg = cfg
        self.backbone = BackboneWithFPN(cfg.backbone, cfg.fpn_channels)
        self.semantic = SemanticHead(cfg.fpn_channels, cfg.semantic_channels, cfg.semantic_num_convs)
        self.head = RefineHead(cfg)
        self.gate = QualityGate(cfg.gate_channels) if cfg.quality_gate else None
        self.level_mapper = LevelMapper(k_min=2, k_max=5)  # canonical FPN: 224 px -> P4
        efficientnet = isinstance(self.backbone.body, EfficientNetLite)
        mean, std = ((127.0,) * 3, (128.0,) * 3) if efficientnet else (_IMAGENET_MEAN, _IMAGENET_STD)
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def extract(self, images: torch.Tensor) -> ImageFeatures:
        """(B, 3, H, W) RGB float in [0, 255], H and W multiples of 32 -> per-image features."""
        x = (images - self.mean) / self.std
        fpn = self.backbone(x)
        sem_feat, sem_logit = self.semantic(fpn[0])
        return ImageFeatures(x, fpn, sem_logit, sem_logit.sigmoid(), self.head.prepare(sem_feat))

    def roi_features(self, fpn: list[torch.Tensor], rois: torch.Tensor) -> torch.Tensor:
        """Instance feature from the FPN level picked by box size: (N, 5) -> (N, C, 14, 14)."""
        size = self.cfg.stage_sizes[0]
        out = fpn[0].new_zeros((rois.shape[0], fpn[0].shape[1], size, size))
        if rois.shape[0] == 0:
            return out
        levels = self.level_mapper([rois[:, 1:]])
        for level, (feat, stride) in enumerate(zip(fpn, self.backbone.strides)):
            # scatter (not a guarded index_put) so that an ONNX trace keeps every level for any N
            idx = torch.nonzero(levels == level).squeeze(1)
            crop = roi_crop(feat, rois[idx], size, 1.0 / stride, self.cfg.roi_sampling_ratio).to(out.dtype)
            out = out.scatter(0, idx.view(-1, 1, 1, 1).expand_as(crop), crop)
        return out

    def stage_logits(self, feats: ImageFeatures, rois: torch.Tensor, coarse: torch.Tensor) -> list[torch.Tensor]:
        """rois (N, 5) [batch, x0, y0, x1, y1] in input pixels, coarse (N, 1, 112, 112) in [0, 1]
        -> [(N, 1, 14, 14), (N, 1, 28, 28), (N, 1, 56, 56), (N, 1, 112, 112)] logits."""
        inst = self.roi_features(feats.fpn, rois)
        return self.head(inst, coarse, rois, feats.sem_maps, feats.sem_prob, feats.image)

    def forward(self, images: torch.Tensor, rois: torch.Tensor, coarse: torch.Tensor) -> dict:
        """Training forward: every stage's logits and the semantic logit."""
        feats = self.extract(images)
        return {"stage_logits": self.stage_logits(feats, rois, coarse), "semantic_logit": feats.sem_logit}

    @torch.no_grad()
    def refine(self, feats: ImageFeatures, rois: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """Inference: final (N, 1, 112, 112) probabilities (see :meth:`refine_with_quality`)."""
        return self.refine_with_quality(feats, rois, coarse)[0]

    @torch.no_grad()
    def refine_with_quality(self, feats: ImageFeatures, rois: torch.Tensor, coarse: torch.Tensor
                            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> final (N, 1, 112, 112) probabilities and the gate's (N,) coarse-quality estimate
        (None without a gate). With a gate, the cascade's output is blended with the coarse mask."""
        fused = self.cascade_probs(feats, rois, coarse)
        if self.gate is None:
            return fused, None
        gate, quality = self.gate(coarse, fused, self.rgb_crop(feats, rois), roi_log_size(rois))
        return gate * fused + (1.0 - gate) * coarse, quality

    def cascade_probs(self, feats: ImageFeatures, rois: torch.Tensor, coarse: torch.Tensor) -> torch.Tensor:
        """The cascade's (N, 1, 112, 112) probabilities with BAR fusion on the band stages."""
        logits = [logit.float() for logit in self.stage_logits(feats, rois, coarse)]  # fp32 under autocast too
        fused = logits[0].sigmoid()
        for k in range(1, len(logits)):
            prob = logits[k].sigmoid()
            fused = bar_fuse(fused, prob, self.cfg.bar_infer_width) if k in self.cfg.bar_stages else prob
        return fused

    def rgb_crop(self, feats: ImageFeatures, rois: torch.Tensor) -> torch.Tensor:
        """(N, 3, 112, 112) crop of the normalised input over each RoI (the gate's image evidence)."""
        return roi_crop(feats.image, rois, self.cfg.stage_sizes[-1], 1.0, self.cfg.roi_sampling_ratio).float()

def refinemask_loss(cfg: RefineMaskConfig, outputs: dict, gt: torch.Tensor,
                    sem_target: torch.Tensor, sem_weight: torch.Tensor) -> dict[str, torch.Tensor]:
    """Weighted stage losses plus the semantic loss.

    outputs: from ``RefineMask.forward``; gt: (N, 1, 112, 112) GT mask crops in [0, 1];
    sem_target: (B, 1, H/4, W/4) union of instance masks; sem_weight: (B,) 0 for images whose
    annotation is incomplete (unlabelled objects must not count as background).
    Stages in ``cfg.bar_stages`` are trained only in up(B_gt ∪ B_pred) of the previous stage.
    """
    logits = outputs["stage_logits"]
    targets = [(F.adaptive_avg_pool2d(gt, s) >= 0.5).float() for s in cfg.stage_sizes]
    losses = {}
    for k, (logit, target, w) in enumerate(zip(logits, targets, cfg.stage_loss_weights)):
        if logit.shape[0] == 0:
            losses[f"stage{k}"] = logit.sum()
        elif k in cfg.bar_stages:
            region = bar_region(logits[k - 1], targets[k - 1], cfg.bar_train_width)
            losses[f"stage{k}"] = w * band_bce(logit, target, region)
        else:
            losses[f"stage{k}"] = w * F.binary_cross_entropy_with_logits(logit, target)
    sem = F.binary_cross_entropy_with_logits(outputs["semantic_logit"], sem_target, reduction="none")
    per_image = sem.mean(dim=(1, 2, 3))
    losses["semantic"] = cfg.semantic_loss_weight * (per_image * sem_weight).sum() / sem_weight.sum().clamp(min=1)
    return losses
