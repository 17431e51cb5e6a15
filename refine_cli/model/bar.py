"""Boundary-aware refinement (BAR): boundary bands, inference fusion and the band-limited loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def boundary_band(mask: torch.Tensor, d: int) -> torch.Tensor:
    """Pixels within Chebyshev distance ``d`` of the mask edge, inside or outside.

    Equals the paper's (2d+1)x(2d+1) Laplacian-kernel band: a pixel is in the band when its
    window holds both values. Outside the RoI counts as background, so foreground touching
    the RoI border is band and background there is not.

    mask: (N, 1, S, S) binary (bool or 0/1 float). Returns (N, 1, S, S) float 0/1.
    """
    m = mask.float()
    k = 2 * d + 1
    dilated = F.max_pool2d(m, k, stride=1, padding=d)
    eroded = -F.max_pool2d(-F.pad(m, (d, d, d, d), value=0.0), k, stride=1)
    return dilated - eroded


def upsample_band(band: torch.Tensor) -> torch.Tensor:
    """(N, 1, S, S) -> (N, 1, 2S, 2S) nearest: each band pixel covers its four children."""
    return F.interpolate(band, scale_factor=2, mode="nearest")


def bar_fuse(prev_prob: torch.Tensor, prob: torch.Tensor, d: int) -> torch.Tensor:
    """Inference fusion M'k = up(Bk-1) * Mk + (1 - up(Bk-1)) * up(M'k-1).

    prev_prob: (N, 1, S, S) fused probabilities of stage k-1; prob: (N, 1, 2S, 2S) of stage k.
    Bk-1 is the band of the binarised previous output.
    """
    band = upsample_band(boundary_band(prev_prob >= 0.5, d))
    up_prev = F.interpolate(prev_prob, scale_factor=2, mode="bilinear", align_corners=False)
    return band * prob + (1.0 - band) * up_prev


def bar_region(prev_logit: torch.Tensor, prev_target: torch.Tensor, d: int) -> torch.Tensor:
    """Training region of stage k: up(B_gt ∪ B_pred) of stage k-1.

    prev_logit, prev_target: (N, 1, S, S). Returns (N, 1, 2S, 2S) float 0/1 (no gradient).
    """
    with torch.no_grad():
        band = torch.maximum(boundary_band(prev_target >= 0.5, d), boundary_band(prev_logit >= 0, d))
        return upsample_band(band)


def band_bce(logit: torch.Tensor, target: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """BCE over ``region`` only, normalised by its pixel count (all (N, 1, S, S))."""
    loss = F.binary_cross_entropy_with_logits(logit, target, reduction="none")
    return (loss * region).sum() / region.sum().clamp(min=1.0)
