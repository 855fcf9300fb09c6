import pytest

from edgebench.train.prune import prunable, prune_and_finetune, weight_sparsity
from edgebench.types import EdgebenchError


def test_pruning_keeps_its_zeros_through_finetuning(trained_cnn):
    pruned = prune_and_finetune(trained_cnn, 0.6, finetune_epochs=2, progress=False)
    assert pruned.name == "digits_cnn-pruned60"
    assert pruned.metrics["weight_sparsity"] == pytest.approx(0.6, abs=0.001)
    assert weight_sparsity(pruned.module) == pytest.approx(0.6, abs=0.001)
    # the masks were made permanent: plain parameters, no pruning hooks left
    assert all(not hasattr(m, "weight_orig") for m, _ in prunable(pruned.module))
    assert pruned.metrics["test_accuracy"] > 0.85
    assert weight_sparsity(trained_cnn.module) < 0.01  # the original model is untouched
    assert pruned.config["prune"] == {"sparsity": 0.6, "finetune_epochs": 2, "from": "digits_cnn"}


def test_pruned_model_exports_with_its_zeros(trained_cnn, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgebench.export.onnx import export_and_validate

    pruned = prune_and_finetune(trained_cnn, 0.5, finetune_epochs=0, progress=False)
    a = export_and_validate(pruned, tmp_path)
    weights = [numpy_helper.to_array(t) for t in onnx.load(str(a.path)).graph.initializer if t.dims and len(t.dims) > 1]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.size for w in weights)
    assert zeros == pytest.approx(0.5, abs=0.01)


def test_bad_sparsity_is_refused(trained_cnn):
    with pytest.raises(EdgebenchError, match="between 0 and 1"):
        prune_and_finetune(trained_cnn, 1.0, progress=False)
