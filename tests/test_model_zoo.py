"""deconvolve() on timm and torchvision models of many families: every conv and norm converted, a
training step, and fuse() giving the same eval output with no ndeconv module left."""

from functools import partial

import pytest
import timm
import torch
import torchvision
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

import ndeconv
from ndeconv.rules import is_depthwise
from ndeconv.layers import ChannelDeconv, Delinear, FastDeconv, FastDeconv1d, FastDeconv3d, FastDeconvTranspose2d

_DECONV = (FastDeconv, FastDeconv1d, FastDeconv3d, FastDeconvTranspose2d, Delinear, ChannelDeconv)
_tv = torchvision.models
_seg = torchvision.models.segmentation

TIMM = ["resnet18", "resnet50", "efficientnet_b0", "tf_efficientnet_b0", "mobilenetv3_small_100", "regnetx_002",
        "regnety_002", "densenet121", "mixnet_s", "ghostnet_100", "dla34", "rexnet_100", "cspresnet50", "repvgg_a0",
        "dpn68", "hrnet_w18_small", "resnext26ts", "legacy_seresnet18", "skresnet18", "mnasnet_100", "lcnet_050", "selecsls42b",
        "gernet_s", "hardcorenas_a"]
TORCHVISION = {
    "tv_resnet18": partial(_tv.resnet18, num_classes=5),
    "tv_mobilenet_v3_small": partial(_tv.mobilenet_v3_small, num_classes=5),
    "tv_efficientnet_b0": partial(_tv.efficientnet_b0, num_classes=5),
    "tv_shufflenet_v2_x0_5": partial(_tv.shufflenet_v2_x0_5, num_classes=5),
    "tv_regnet_y_400mf": partial(_tv.regnet_y_400mf, num_classes=5),
    "tv_fcn_resnet50": partial(_seg.fcn_resnet50, weights=None, weights_backbone=None, num_classes=5),
    "tv_deeplabv3_mobilenet_v3_large": partial(_seg.deeplabv3_mobilenet_v3_large, weights=None,
                                               weights_backbone=None, num_classes=5),
    "tv_lraspp_mobilenet_v3_large": partial(_seg.lraspp_mobilenet_v3_large, weights=None, weights_backbone=None,
                                            num_classes=5),
}


def _build(name: str) -> nn.Module:
    return TORCHVISION[name]() if name in TORCHVISION else timm.create_model(name, num_classes=5)


def _logits(out):
    return out["out"] if isinstance(out, dict) else out


@pytest.mark.parametrize("name", TIMM + list(TORCHVISION))
def test_model_converts_trains_a_step_and_fuses_to_the_same_eval_output(name):
    torch.manual_seed(0)
    model = _build(name).train()
    convs = sum(isinstance(m, nn.modules.conv._ConvNd) and not is_depthwise(m) for m in model.modules())
    ndeconv.deconvolve(model)
    assert not any(isinstance(m, _NormBase) or "BatchNorm" in type(m).__name__ for m in model.modules())
    assert sum(isinstance(m, _DECONV[:4]) for m in model.modules()) == convs
    x = torch.randn(2, 3, 64, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    before = [p.detach().clone() for p in model.parameters()]
    loss = _logits(model(x)).square().mean()
    loss.backward()  # in-place activations after a removed norm would fail here
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    # Two images give degenerate deep statistics (a few samples per covariance) and huge gradients: clip.
    nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    model.eval()
    fused = ndeconv.fuse(model)
    assert not any(isinstance(m, _DECONV) for m in fused.modules())
    with torch.no_grad():
        expected, got = _logits(model(x)), _logits(fused(x))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4 * float(expected.abs().max()))
