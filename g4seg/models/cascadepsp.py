"""CascadePSP's refinement network (Cheng et al., CVPR 2020), written from its paper and code.

A ResNet-50 (first conv on 6 channels: RGB + 3 mask channels; layer3/layer4 dilated, output
stride 8) with a PSP head, run three times with cascaded inputs:
  1. (image, seg, seg, seg)                      -> 1/8 prediction
  2. (image, seg, tanh(1/8) x 2)                 -> 1/8 and 1/4 predictions
  3. (image, seg, tanh(1/8), tanh(1/4))          -> full resolution (and 1/8, 1/4 again)
Parameter names and shapes follow the official release, so its checkpoint loads with
`strict=True` (after stripping DataParallel's `module.` prefix). `base` scales every width
(64 = official; 8 = tiny model for tests and the offline demo).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import Bottleneck

from ..errors import ConfigError
from . import hub

CASCADEPSP_GET = ("the file 'model' of GitHub release v1.0 of hkchengrex/CascadePSP "
                  "(MD5 7478d4a9c42ab52beb6d7e9683402fe0)")


class Backbone(nn.Module):
    """ResNet-50 layout with CascadePSP's dilation: inside layer3 and layer4 only the blocks
    after the first are dilated (2 and 4), unlike torchvision's replace_stride_with_dilation."""

    def __init__(self, base: int = 64, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.inplanes = base
        self.conv1 = nn.Conv2d(6, base, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(base)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.layer1 = self._make_layer(base, layers[0])
        self.layer2 = self._make_layer(base * 2, layers[1], stride=2)
        self.layer3 = self._make_layer(base * 4, layers[2], dilation=2)
        self.layer4 = self._make_layer(base * 8, layers[3], dilation=4)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
        out = planes * Bottleneck.expansion
        downsample = None
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(out)
            )
        # torchvision's Bottleneck scales its inner width by base_width / 64; keep it = planes
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [Bottleneck(out, planes, dilation=dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x1 = self.conv1(x)  # 1/2
        x = self.maxpool(self.relu(self.bn1(x1)))
        x2 = self.layer1(x)  # 1/4
        x = self.layer4(self.layer3(self.layer2(x2)))  # 1/8
        return x, x1, x2


class PSPModule(nn.Module):
    def __init__(self, features: int, out_features: int, sizes=(1, 2, 3, 6)) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.AdaptiveAvgPool2d((s, s)), nn.Conv2d(features, features, 1, bias=False)) for s in sizes
        )
        self.bottleneck = nn.Conv2d(features * (len(sizes) + 1), out_features, kernel_size=1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        h, w = feats.shape[-2:]
        priors = [F.interpolate(stage(feats), size=(h, w), mode="bilinear", align_corners=False) for stage in self.stages]
        return F.relu(self.bottleneck(torch.cat([*priors, feats], 1)))


def _bn_relu_conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.BatchNorm2d(cin), nn.ReLU(inplace=True), nn.Conv2d(cin, cout, 3, padding=1)]


class PSPUpsample(nn.Module):
    def __init__(self, x_channels: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(*_bn_relu_conv(in_channels, out_channels), *_bn_relu_conv(out_channels, out_channels))
        self.conv2 = nn.Sequential(*_bn_relu_conv(out_channels, out_channels), *_bn_relu_conv(out_channels, out_channels))
        self.shortcut = nn.Conv2d(x_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        p = self.conv(torch.cat([x, up], 1)) + self.shortcut(x)
        return p + self.conv2(p)


def _head(cin: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, hidden, kernel_size=1), nn.ReLU(inplace=True), nn.Conv2d(hidden, 1, kernel_size=1))


class RefinementNetwork(nn.Module):
    """Inputs: image normalised with ImageNet statistics, seg in [-1, 1]; sides multiple of 8."""

    def __init__(self, base: int = 64, layers: tuple[int, ...] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.base, self.layers = base, tuple(layers)
        deep, psp = base * 32, base * 16  # 2048 and 1024 at base 64
        hidden = base // 2
        self.feats = Backbone(base, layers)
        self.psp = PSPModule(deep, psp)
        self.up_1 = PSPUpsample(psp, psp + base * 4, base * 8)
        self.up_2 = PSPUpsample(base * 8, base * 8 + base, base * 4)
        self.up_3 = PSPUpsample(base * 4, base * 4 + 3, hidden)
        self.final_28 = _head(psp, hidden)
        self.final_56 = _head(base * 8, hidden)
        self.final_11 = nn.Conv2d(hidden + 3, hidden, kernel_size=1)
        self.final_21 = nn.Conv2d(hidden, 1, kernel_size=1)

    @staticmethod
    def _up(x: torch.Tensor, factor: int) -> torch.Tensor:
        return F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)

    def forward(self, x, seg, inter_s8=None, inter_s4=None) -> dict[str, torch.Tensor]:
        """Logits ("out_*") and probabilities ("pred_*") at full size for every stage.

        Given `inter_s8` and `inter_s4` (tanh-range maps from an earlier pass, as in the
        local step), the first two passes are skipped.
        """
        out: dict[str, torch.Tensor] = {}
        if inter_s8 is None:
            f, _, _ = self.feats(torch.cat((x, seg, seg, seg), 1))
            out["out_28"] = self._up(self.final_28(self.psp(f)), 8)
            inter_s8 = torch.tanh(out["out_28"])
        if inter_s4 is None:
            f, _, f_2 = self.feats(torch.cat((x, seg, inter_s8, inter_s8), 1))
            p = self.psp(f)
            out["out_28_2"] = self._up(self.final_28(p), 8)
            out["out_56"] = self._up(self.final_56(self.up_1(p, f_2)), 4)
            inter_s8, inter_s4 = torch.tanh(out["out_28_2"]), torch.tanh(out["out_56"])
        f, f_1, f_2 = self.feats(torch.cat((x, seg, inter_s8, inter_s4), 1))
        p = self.psp(f)
        out["out_28_3"] = self._up(self.final_28(p), 8)
        p = self.up_1(p, f_2)
        out["out_56_2"] = self._up(self.final_56(p), 4)
        p = self.up_3(self.up_2(p, f_1), x)
        out["out_224"] = self.final_21(F.relu(self.final_11(torch.cat([p, x], 1))))
        out.update({k.replace("out_", "pred_"): torch.sigmoid(v) for k, v in list(out.items())})
        return out


def load_official(network: RefinementNetwork, path: str) -> None:
    """The released checkpoint (GitHub release v1.0 of hkchengrex/CascadePSP, file "model"), strictly."""
    load_official_state(network, torch.load(path, map_location="cpu", weights_only=True))


def load_official_state(network: RefinementNetwork, state: dict) -> None:
    """The release's state dict, saved from nn.DataParallel ("module." prefixes), strictly."""
    network.load_state_dict({k.removeprefix("module."): v for k, v in state.items()}, strict=True)


def shared_network(weights: str, base: int = 64, layers: tuple[int, ...] = (3, 4, 6, 3)) -> RefinementNetwork:
    """One network per checkpoint in a process (CascadePSP alone and chained after G4Seg share it)."""

    def load() -> RefinementNetwork:
        if weights == "tiny":
            from .tiny import tiny_cascadepsp

            return tiny_cascadepsp().eval().requires_grad_(False)
        hub.require_local(weights, "file", "the CascadePSP checkpoint", CASCADEPSP_GET, "weights")
        net = RefinementNetwork(base, layers)
        load_checkpoint(net, str(weights))
        return net.eval().requires_grad_(False)

    return hub.shared("cascadepsp", (weights,), load, *(() if weights == "tiny" else (base, tuple(layers))))


def load_checkpoint(net: RefinementNetwork, path: str) -> None:
    """Official file, or a training checkpoint of scripts/train_cascadepsp.py ("net." keys)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # a user file: tensors and plain data only
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        raise hub.missing(path, f"not a readable CascadePSP checkpoint ({hub.why(e)})", "the official checkpoint", CASCADEPSP_GET, "weights") from None
    try:
        if isinstance(state, dict) and "state_dict" in state:
            state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
            net.load_state_dict(state, strict=True)
        elif isinstance(state, dict):
            load_official_state(net, state)
        else:
            raise RuntimeError(f"holds a {type(state).__name__}, not a state dict")
    except RuntimeError as e:
        raise ConfigError(
            f"{path}: does not fit a CascadePSP network of base {net.base}, layers {list(net.layers)} ({hub.mismatch_line(e)}); "
            "set base/layers to the checkpoint's (official: 64, [3, 4, 6, 3]; tiny: 8, [1, 1, 1, 1])"
        ) from None
