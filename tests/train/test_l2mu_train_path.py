"""The L2MU's training forward (fewer autograd nodes) against the model as written (run()): the same class
scores and the same gradients, in float32 (snntorch's surrogate returns float32 spikes), where the two summation
orders differ by ~1e-7 and no spike of these inputs flips."""

import pytest
import torch

from edgebench.train.l2mu import L2MU


def _models():
    torch.manual_seed(0)
    return {
        "lif": L2MU(6, 4, hidden_size=12, memory_size=2, order=4, theta=20, input_size=8, neuron="lif",
                    memory_gain=0.5),
        "cuba": L2MU(6, 4, hidden_size=12, memory_size=2, order=4, theta=20, input_size=8, neuron="cuba"),
        "lif-count": L2MU(6, 4, hidden_size=12, memory_size=2, order=4, theta=20, input_size=8, neuron="lif",
                          readout="count"),
    }


def _scores_and_grads(model, x, y, train: bool):
    model.train(train)
    model.zero_grad()
    scores = model(x)
    torch.nn.functional.cross_entropy(scores, y).backward()
    return scores.detach().clone(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("name", ["lif", "cuba", "lif-count"])
def test_training_forward_matches_the_model_as_written(name):
    model = _models()[name]
    torch.manual_seed(1)
    x = 3 * torch.randn(5, 6, 40)
    y = torch.randint(0, 4, (5,))
    spikes = model.run(x, record=True)[1]  # a comparison of silent nets would prove little
    assert all(spikes[p].sum() > 0 for p in ("input", "u", "memory", "hidden")), \
        {p: float(s.sum()) for p, s in spikes.items()}
    ref_scores, ref_grads = _scores_and_grads(model, x, y, train=False)  # eval mode: the loop as written
    scores, grads = _scores_and_grads(model, x, y, train=True)  # train mode: the training forward
    tol = dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(scores, ref_scores, **tol)
    assert set(grads) == set(ref_grads) and len(grads) > 0
    for n in ref_grads:
        torch.testing.assert_close(grads[n], ref_grads[n], **tol, msg=lambda m: f"{n}: {m}")


def test_evaluation_and_no_grad_use_the_model_as_written():
    model = _models()["lif"]
    x = torch.randn(3, 6, 30)
    model.train()
    calls = []
    model._train_scores = lambda x: calls.append(x) or torch.zeros(3, 4)
    with torch.no_grad():
        out = model(x)
    assert not calls
    torch.testing.assert_close(out, model.run(x)[0], rtol=0, atol=0)
    model.eval()
    model(x)
    assert not calls


def test_pruned_fine_tuning_trains_the_masked_synapses():
    """torch's pruning computes weight = weight_orig x mask in a forward pre-hook: with hooks on its layers the
    L2MU trains through run(), so fine-tuning moves the synapses and keeps them pruned."""
    import numpy as np
    from torch.nn.utils import prune

    from edgebench.train.base import Dataset
    from edgebench.train.trainer import TrainConfig, fit

    model = _models()["lif"]
    assert not model._hooked()
    layers = [(m, "weight") for m in model.modules() if isinstance(m, torch.nn.Linear)]
    prune.global_unstructured(layers, pruning_method=prune.L1Unstructured, amount=0.5)
    assert model._hooked()
    before = model.W_h.weight_orig.detach().clone()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((20, 6, 30)).astype(np.float32)
    y = rng.integers(0, 4, 20)
    ds = Dataset(name="t", x_train=x, y_train=y, x_test=x, y_test=y, labels=("a", "b", "c", "d"), preprocessing="random")
    calls = []
    model._train_scores = lambda x: calls.append(1)  # must not be used
    fit(model, ds, TrainConfig(epochs=2, batch_size=10, lr=1e-2), progress=False)
    assert not calls
    mask = model.W_h.weight_mask.bool()
    moved = (model.W_h.weight_orig.detach() - before).abs()
    assert moved[mask].max() > 0  # kept synapses trained
    assert (model.W_h.weight.detach()[~mask] == 0).all()  # pruned ones stay zero
