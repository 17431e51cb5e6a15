"""One dataclass holds every hyperparameter of the refiner; it is saved inside the checkpoint."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

# Numeric precisions of the network (see refiner.uses_bf16); here so the CLI can list them without torch.
PRECISIONS = ("auto", "fp32", "bf16")
# The shipped checkpoint (here, not in checkpoint.py, so the CLI can name it without importing torch).
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "refinemask_effl0.pt"


@dataclass
class RefineMaskConfig:
    """Hyperparameters of :class:`~refine_cli.model.refinemask.RefineMask`.

    Paper values (RefineMask, CVPR 2021, R-50-FPN) are given in comments where ours differ;
    ours are chosen so that inference and training fit two CPU cores.
    """

    backbone: str = "efficientnet_lite0"  # | "efficientnet_lite2" | "resnet18" | "resnet50"  (paper: ResNet-50)
    fpn_channels: int = 64  # paper 256; P2 at stride 4 dominates CPU time (see README)
    semantic_channels: int = 32  # paper 256
    semantic_num_convs: int = 4
    stage_sizes: tuple[int, ...] = (14, 28, 56, 112)
    stage_channels: tuple[int, ...] = (96, 48, 24, 16)  # paper (256, 128, 64, 32)
    instance_num_convs: int = 2
    dilations: tuple[int, ...] = (1, 3, 5)
    # Post-hoc additions (not in the paper): the detector's coarse mask and the RGB crop are
    # fed to every stage, so a stage can keep a detail the 14x14 stage-0 input cannot hold.
    coarse_at_every_stage: bool = True
    rgb_at_every_stage: bool = True
    coarse_prior_logit: float = 2.0  # initial weight of the coarse mask in every stage's logit
    box_expand: float = 1.2  # boxes are scaled about their centre before crop and paste
    # Samples per RoI bin when cropping feature maps (torchvision MultiScaleRoIAlign's 2); 0 is
    # adaptive, which for large boxes made roi_align's backward the slowest op of a CPU step.
    roi_sampling_ratio: int = 2
    # Quality gate (post-hoc addition, model/quality_gate.py): blends refined and coarse masks by
    # the estimated quality of the coarse one, so near-perfect input comes back nearly unchanged.
    quality_gate: bool = False
    gate_channels: int = 16
    # An instance whose estimated coarse IoU is above this keeps its input mask untouched: the soft
    # blend alone still moved clean masks (train-gate sets it just below the lowest estimate any
    # clean training simulation got; 1.0 keeps nothing).
    gate_keep_above: float = 1.0
    bar_train_width: int = 2
    bar_infer_width: int = 1
    bar_stages: tuple[int, ...] = (2, 3)  # stages whose loss / fusion is limited to the band
    stage_loss_weights: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    semantic_loss_weight: float = 1.0
    # Input scaling: shorter side resized to `short_side`, longer side capped at `max_size`,
    # padded to a multiple of `size_divisibility` (the FPN's coarsest stride).
    short_side: int = 480
    max_size: int = 800
    size_divisibility: int = 32

    def __post_init__(self) -> None:
        n = len(self.stage_sizes)
        if len(self.stage_channels) != n or len(self.stage_loss_weights) != n:
            raise ValueError("stage_sizes, stage_channels and stage_loss_weights differ in length")
        for a, b in zip(self.stage_sizes, self.stage_sizes[1:]):
            if b != 2 * a:
                raise ValueError(f"each stage must double the size: {self.stage_sizes}")
        if self.box_expand < 1.0:
            raise ValueError(f"box_expand must be >= 1, got {self.box_expand}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RefineMaskConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        tuples = {f.name for f in dataclasses.fields(cls) if "tuple" in str(f.type)}
        return cls(**{k: tuple(v) if k in tuples else v for k, v in d.items()})


def tiny_config(**overrides) -> RefineMaskConfig:
    """A few-channel, small-input config for fast tests (random init, resnet-free)."""
    base = dict(
        backbone="efficientnet_lite0",
        fpn_channels=16,
        semantic_channels=8,
        semantic_num_convs=2,
        stage_channels=(16, 8, 8, 8),
        short_side=128,
        max_size=192,
    )
    base.update(overrides)
    return RefineMaskConfig(**base)


__all__ = ["RefineMaskConfig", "tiny_config"]
