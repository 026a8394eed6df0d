"""torch.compile on deconvolved models: no graph breaks, same outputs and gradients as eager."""

import copy

import pytest
import timm
import torch

import ndeconv


def _model():
    torch.manual_seed(0)
    return ndeconv.deconvolve(timm.create_model("convnet3", num_classes=10, in_chans=1))


@pytest.mark.parametrize("mode", ["train", "eval", "eval_no_grad"])
def test_no_graph_breaks(mode):
    model = _model().train(mode == "train")
    x = torch.randn(16, 1, 8, 8)
    with torch.set_grad_enabled(mode != "eval_no_grad"):
        explained = torch._dynamo.explain(model)(x)
    assert explained.graph_break_count == 0, [str(b.reason)[:200] for b in explained.break_reasons]
    assert explained.graph_count == 1


def test_compiled_training_step_matches_eager():
    eager = _model()
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, backend="aot_eager", fullgraph=True)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    for model in (eager, compiled):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    for (name, p), q in zip(eager.named_parameters(), compiled_model.parameters()):
        torch.testing.assert_close(q.grad, p.grad, rtol=1e-4, atol=1e-6, msg=name)
    for (name, b), c in zip(eager.named_buffers(), compiled_model.buffers()):
        torch.testing.assert_close(c, b, msg=name)  # running estimates updated alike
    eager.eval(), compiled_model.eval()
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), eager(x), rtol=1e-5, atol=1e-6)
