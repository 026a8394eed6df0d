"""The estimator as a module: a layer is its conv plus a ``WhiteningEstimator`` child that owns the
statistics; its state dict keys are the same whatever the settings, and a layer saved by ndeconv 0.1
(buffers on the layer itself) still loads."""

import pytest
import torch

import ndeconv

OLD_NAMES = {"estimator.running_mean": "running_mean", "estimator.running_deconv": "running_deconv",
             "estimator.num_batches_tracked": "num_batches_tracked", "estimator.num_steps": "num_steps",
             "estimator.last_mean": "last_mean", "estimator.last_deconv": "last_deconv",
             "input_norm.running_mean": "running_input_mean", "input_norm.running_var": "running_input_var"}


def _trained(**settings):
    torch.manual_seed(0)
    layer = ndeconv.FastDeconv(6, 4, 3, padding=1, block=3, sampling_stride=1, **settings)
    for _ in range(3):
        layer(torch.randn(4, 6, 5, 5) * 2 + 1)
    return layer.eval()


def test_the_state_dict_keys_do_not_depend_on_the_update_policy():
    keys = {tuple(_trained(**s).state_dict()) for s in ({}, {"update_every": 4}, {"freeze_iter": 2},
                                                         {"stats_grad": False, "max_samples": 8})}
    assert len(keys) == 1
    assert "estimator.last_deconv" in next(iter(keys))


@pytest.mark.parametrize("settings", [{}, {"update_every": 2, "scale": "channel"}])
def test_a_layer_saved_by_version_0_1_loads_and_computes_the_same(settings):
    trained = _trained(**settings)
    old = {}
    for key, value in trained.state_dict().items():
        if key in ("estimator.last_mean", "estimator.last_deconv") and settings.get("update_every", 1) == 1:
            continue  # 0.1 kept the last update only for update_every > 1
        if key == "input_norm.num_batches_tracked":
            continue  # 0.1 had no BatchNorm module
        old[OLD_NAMES.get(key, key)] = value.clone()
    fresh = ndeconv.FastDeconv(6, 4, 3, padding=1, block=3, sampling_stride=1, **settings).eval()
    fresh.load_state_dict(old)
    x = torch.randn(2, 6, 5, 5)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), trained(x), rtol=0, atol=0)
    assert int(fresh.num_steps) == int(trained.num_steps) == 3
