"""The kernel-level predictor's regressors and overhead fit (see search/predictor.py for the build).

Each kernel of a graph gets its measured figure when that exact kernel was measured, else a trend for its type
(and, for a convolution, its algorithm class: conv_class) linear in MACs, elements moved, inputs, GEMM tiles and
output-row tails, times a random forest's correction on log features; an operator never measured takes its
kind's trend (kind). A whole model adds what it costs beyond its kernels timed alone (KernelPredictor._fit_overhead).
"""
from __future__ import annotations

import numpy as np

from edgebench.search.kernels import FEATURES, Kernel
from edgebench.search.predictor_terms import is_nchwc, with_derived_terms
from edgebench.types import EdgebenchError

LINEAR = ("macs", "in_elems", "out_elems", "weight_elems", "spans", "n_inputs", "n_outputs")
TILES = ((1, 4), (1, 8), (1, 16), (4, 4), (4, 16), (8, 8))  # (rows, columns) of a GEMM microkernel's tile
GEMM_TERMS = 2 * len(TILES) + 6 + 10 + 5  # _lin's GEMM terms: tiles both ways, 6 more, 10 per output row, 5 im2col


def _up(x: float, m: int) -> float:
    return float(-(-x // m) * m)


def _gemm_dims(features: dict, head: str) -> tuple[float, float, float, float] | None:
    """A convolution's or matmul's GEMM: (groups, rows M, columns N, depth K), from the features."""
    f = features
    if head not in ("Conv", "Gemm", "MatMul") or not f.get("c_out") or not f.get("macs"):
        return None
    g = float(f.get("groups") or 1) if head == "Conv" else 1.0
    n = f["c_out"] / g
    m = float(f.get("hw") or 1) if head == "Conv" else max(f.get("out_elems", 0) / f["c_out"], 1.0)
    return g, m, n, f["macs"] / max(m * n * g, 1.0)


def _im2col_terms(f: dict) -> list:
    """What MLAS's im2col (MlasConvIm2Col) walks for a convolution: for each of the K = c_in x window rows of the
    column buffer, one segment per output row, copied in vectors of 4 plus a tail at stride 1 and element by
    element when strided: segments, their vectors, their tails, and the elements written strided and at stride
    1. 5-fold kernel CV on guest instructions (a pi4-emulated build of 2,573 kernels): within +-5% 90.0% ->
    93.0%; im2col convolutions 73.8% -> 92.2%, depthwise 3x3 66.5% -> 88.0%."""
    w, k = float(f.get("width") or 0), float(f.get("kernel") or 1)
    if not w or not f.get("c_in"):
        return [0.0] * 5
    depth = f["c_in"] * (k if f.get("spatial") == 1 else k * k)
    segments, elems = depth * f["hw"] / w, depth * f["hw"]
    if (f.get("stride") or 1) == 1:
        return [segments, segments * (w // 4), segments * (w % 4), 0.0, elems]
    return [segments, 0.0, 0.0, elems, 0.0]


GATES = {"LSTM": 4, "GRU": 3}


def _recurrent_terms(f: dict, gates: int) -> list:
    """An LSTM or GRU over T steps, hidden size H, input size I: per step a call and a GEMV of the hidden state
    against gates x H columns (padded to 16), the input GEMM once for all steps (rows padded to 4), the gates'
    activations, and the state update in vectors of 4. 5-fold kernel CV on guest instructions: LSTM within +-5%
    48.8% -> 92.7% of 41, GRU 43.6% -> 100% of 39."""
    h, i, t = float(f.get("c_out") or 0), float(f.get("c_in") or 1), float(f.get("hw") or 1)
    return [t, t * _up(gates * h, 16) * h, _up(t, 4) * _up(gates * h, 16) * i, t * gates * h, t * _up(h, 4)]


def _lin(features: dict, ktype: str = "") -> np.ndarray:
    """The linear trend's terms: a constant; MACs, elements in, out and of weights, broadcast spans and inputs;
    a convolution's unfolded input (output positions x input channels x window: what im2col writes); for a
    GEMM, its MACs with rows and columns padded to the tiles a microkernel computes (a 17-column GEMM costs
    what a 32-column one does), its output padded, and its groups (a call each, for a depthwise convolution)
    and group rows; a convolution's im2col walk (_im2col_terms); a recurrent cell's steps (_recurrent_terms).
    Non-negative least squares keeps the terms that fit. 5-fold kernel CV on guest instructions outside the
    interpreter (a pi4-emulated build of 2,693 kernels, 520 of them random configurations; trend x forest, conv
    classes): 93.6% within +-5%, median error 0.39%."""
    f = features
    im2col = f.get("macs", 0) * (f.get("groups") or 1) / f["c_out"] if f.get("kernel") and f.get("c_out") else 0.0
    gemm = _gemm_dims(f, ktype.split("+")[0])
    if gemm:
        g, m, n, k = gemm
        tiles = [g * _up(m, r) * _up(n, c) * k for r, c in TILES] + [g * _up(n, r) * _up(m, c) * k for r, c in TILES]
        tiles += [g * m * _up(n, 16), g * _up(m, 4) * n, g * k * _up(m, 16), g, g * m, g * np.sqrt(m)]
        w = float(f.get("width") or 0)
        if w:  # per output row of each group: vectors of 4 and the tail (1, 2 or 3), plain and per window tap
            rows = g * m / w
            per_row = [rows, rows * (w // 4), *(rows * float(w % 4 == t) for t in (1, 2, 3))]
            tiles += per_row + [x * (f.get("kernel") or 1) ** 2 for x in per_row]
        else:
            tiles += [0.0] * 10
        if ktype.split("+")[0] == "Conv":
            tiles += _im2col_terms(f)
    elif ktype.split("+")[0] in GATES:
        tiles = _recurrent_terms(f, GATES[ktype.split("+")[0]])
    else:
        out = float(f.get("out_elems", 0) or 0)
        # a Transpose copies its output in runs (kernels.transpose_run): a call per run
        tiles = [_up(out, 4), _up(out, 16), out / f["run"] if f.get("run") else 0.0]
    tiles += [0.0] * (GEMM_TERMS - len(tiles))  # one length for every kernel: the fits stack them
    return np.asarray([1.0, *(float(f.get(k, 0) or 0) for k in LINEAR), float(im2col), *tiles], dtype=np.float64)


def conv_class(ktype: str, features: dict) -> str:
    """The algorithm a runtime picks for a convolution, by its shape: depthwise 3x3 (a kernel of its own in
    MLAS), other depthwise (per group), pointwise stride 1 (a plain GEMM), pointwise strided, 1-D or 3-D,
    and the rest (im2col + GEMM); 1-D ones as depthwise, pointwise or the rest. Each class gets its own trend when
    the build has enough of it."""
    if ktype.split("+")[0] != "Conv":
        return ""
    f = features
    if f.get("spatial"):
        if f["spatial"] != 1:
            return "/nd"
        return "/1d-dw" if (f.get("groups") or 1) > 1 else "/1d-pw" if f.get("kernel") == 1 else "/1d"
    if (f.get("groups") or 1) > 1:
        return "/dw3" if f.get("kernel") == 3 else "/dw"
    if f.get("kernel") == 1:
        return "/pw" if (f.get("stride") or 1) == 1 else "/pw-strided"
    return "/im2col"


def kind(ktype: str, features: dict) -> str:
    """For an operator the build never measured: 'arith' (it does more multiply-adds than it writes
    elements: a recurrent cell, a matmul) or 'data' (elementwise and data movement)."""
    f = features
    return "arith" if (f.get("macs") or 0) > 1.5 * max(f.get("out_elems") or 0, f.get("in_elems") or 0) else "data"


def _groups(ktype: str, features: dict, machine: str | None = None) -> list[tuple[str, str]]:
    """The regressors that may answer for a kernel, most specific first, each with how its answer is labelled:
    on an x86 device (`machine`, None: this host) a convolution that onnxruntime runs in its NCHWc layout
    without padding its input channels (predictor_terms.is_nchwc) first among those of its type and class;
    then its type and convolution class, the class across activations (Conv, Conv+Relu, ...), its type, its
    kind, all kernels. A kernel is fitted into every one of them (once each). On this host onnxruntime 1.32
    runs every ungrouped convolution in NCHWc, in blocks of 16 channels, padding 16 or more input channels to
    the block (24 -> 32). With the padded ones fitted apart, three held-out CNNs' convolutions (3->32 5x5 at
    16x16, 16->8 3x3 at 8x8, 32->64 3x3 at 10x10) went from 12-18% above their time alone to 0-7%; the local
    build's held-out graphs of seeds 1-4 (measured earlier, refitted offline) from 73 to 75 of 84 within
    +-10%; the convolutions' 5-fold kernel CV from 89.3% to 89.5%."""
    cls = conv_class(ktype, features)
    names = [(ktype + cls, "regressed"), *((("Conv*" + cls, "regressed"), (ktype, "regressed")) if cls else ()),
             ("*" + kind(ktype, features), "fallback"), ("*", "fallback")]
    if cls and is_nchwc(features, machine):
        names.insert(0, (ktype + cls + "/nchwc", "regressed"))
    return names


def _x(features: dict) -> np.ndarray:
    """The forest's inputs: log features, and the channels' remainders modulo vector widths (a kernel's
    tail loop; guest-instruction CV within 5%: 81.3% -> 81.9%, latency within 10%: 77% -> 80%)."""
    logs = np.log1p(np.asarray([float(features.get(k, 0) or 0) for k in FEATURES], dtype=np.float64))
    rems = [(features.get(k) or 0) % m for k in ("c_in", "c_out") for m in (4, 8, 16)] + [(features.get("hw") or 0) % 4]
    return np.append(logs, np.asarray(rems, dtype=np.float64))


OUTSIDE = "instructions_outside_interpreter"


def stale_transpose(entry: dict) -> bool:
    """A Transpose measured before its key said which runs it copies (`run`, 2026-11-29): one entry stood for
    Transposes of the same size that cost up to 2x apart. It is left out of the fits; `predictor build` resumed
    measures the Transposes its models have again."""
    return entry.get("type", "").split("+")[0] == "Transpose" and "run" not in entry.get("features", {})


def _empty_times(doc: dict) -> list:
    """The empty model's p50 of every runner process that timed a kernel or whole model of the build."""
    return [v["empty_ms"] for v in [*doc.get("kernels", {}).values(), *doc.get("models", {}).values()]
            if v.get("empty_ms") and v.get("p50_ms") is not None]


def at_reference_speed(doc: dict) -> dict:
    """The build's timings as if the machine had kept one speed. A shared machine changes speed by up to 2x
    between runner processes (the floor of tiny kernels' p50 moved from 5.7 to 12.2 us between chunks of one
    build), and a sum of thousands of tiny kernels' timings (each mostly the runtime's per-call work) moves with
    it. Every process of the build also times an empty model (`empty_ms`); each timing is scaled by the median
    empty time over the build divided by its own process's. Figures without `empty_ms` (a build by an older
    edgebench, the store's records) are left as they are."""
    if "reference_empty_ms" in doc.get("meta", {}):  # scaled already
        return doc
    speeds = _empty_times(doc)
    if not speeds:
        return doc
    ref = float(np.median(speeds))

    def scaled(v: dict) -> dict:
        if v.get("empty_ms") and v.get("p50_ms") is not None:
            return {**v, "p50_ms": v["p50_ms"] * ref / v["empty_ms"]}
        return v

    kernels = {k: scaled(v) for k, v in doc["kernels"].items()}
    if "_empty" in kernels:  # the empty model at the reference speed: what the per-call prior holds k_n near
        kernels["_empty"] = {**kernels["_empty"], "p50_ms": ref}
    return {**doc, "kernels": kernels, "models": {n: scaled(m) for n, m in doc.get("models", {}).items()},
            "meta": {**doc.get("meta", {}), "reference_empty_ms": ref}}


SLOW = 1.25  # a runner process whose empty model ran this much over the build's fastest ran in a slow stretch


def speed_mix(doc: dict) -> str | None:
    """A warning when the build's runner processes ran at two speeds (between 10% and 90% of them in a slow
    stretch): the timings are scaled to one speed (predictor_fit.at_reference_speed), but a slow stretch slows
    the runtime's per-call work more than arithmetic (1.6x and 1.4x here), so such a build states a wider error."""
    speeds = _empty_times(doc)
    if not speeds:
        return None
    slow = sum(s > SLOW * min(speeds) for s in speeds)
    if not 0.1 <= slow / len(speeds) <= 0.9:
        return None
    return (f"{slow} of {len(speeds)} timings were taken while this machine ran {SLOW:g}x slower or more (an empty "
            f"model {1000 * min(speeds):.2f} to {1000 * max(speeds):.2f} us); they are scaled to one speed, roughly: "
            f"check `edgebench devices doctor {doc['meta'].get('device', 'NAME')} --stability 20` and build again "
            f"into another --out when it is steady")


class KernelPredictor:
    """Fitted from a predictor file; deterministic (fixed seeds), refitted on load."""

    MIN_PER_TYPE = 5  # fewer samples of a type: the all-types regressor answers
    MIN_DISTINCT = 4  # an overhead term is fitted only when the whole models show this many values of it
    # Leave-one-model-out over two builds' whole models: within +-10% 52% -> 58% and 61% -> 64%, the worst
    # error 868% -> 162% and 188% -> 90%, against the unregularized fit.
    PRIOR_WEIGHT = 1.0

    def __init__(self, doc: dict, target: str = "p50_ms"):
        from scipy.optimize import nnls
        from sklearn.ensemble import RandomForestRegressor

        if target == "p50_ms":
            doc = at_reference_speed(doc)
        self.doc, self.target = doc, target
        self.meta = doc.get("meta", {})
        self.machine = (self.meta.get("facts") or {}).get("machine")  # the device's: NCHWc only on x86
        # guest instructions: those run outside the Python interpreter when the build has them (insn_count.c
        # harness=), for kernels and whole models alike. The interpreter's share is the harness around
        # session.run: it depends on the interpreter's state (kernels timed alone) and on the harness (the
        # build's batch runner runs about 2,800 fewer than `bench`'s runner). It is added back once: the
        # deployed runner's, measured by the build (meta runner_harness_instructions).
        known = [v for v in doc["kernels"].values() if v.get(target) is not None]
        self.ktarget = OUTSIDE if target == "instructions" and known and all(
            v.get(OUTSIDE) is not None for v in known) else target
        ktarget = self.ktarget
        doc = {**doc, "kernels": {k: v for k, v in doc["kernels"].items() if not stale_transpose(v)}}
        rows = [v for k, v in doc["kernels"].items() if k != "_empty" and v.get(ktarget) is not None]
        if len(rows) < 3:
            raise EdgebenchError(f"the predictor has {len(rows)} measured kernels; build it first "
                                 f"(edgebench predictor build --device {self.meta.get('device', 'NAME')})")
        self.measured = {k: v[ktarget] for k, v in doc["kernels"].items() if v.get(ktarget) is not None}
        self.empty = doc["kernels"].get("_empty", {}).get(ktarget)
        self.empty_whole = doc["kernels"].get("_empty", {}).get(target)  # the empty model's full count
        # what handing back one more output costs a kernel timed alone (measured by the build: a Split with both
        # outputs returned against one); a whole model hands back none of its kernels' (extra_outputs)
        self.per_output = max(float((self.meta.get("per_output") or {}).get(ktarget) or 0.0), 0.0)
        self.harness = 0.0  # what the fitted figures leave out: the deployed runner's interpreter share
        if ktarget == OUTSIDE:
            self.harness = float(self.meta.get("runner_harness_instructions")
                                 or (self.empty_whole or 0) - (self.empty or 0))

        def forest(x, y):
            return RandomForestRegressor(n_estimators=100, random_state=0, min_samples_leaf=1).fit(x, y)

        def fit_type(subset, generic=False):
            """A trend linear in MACs and elements moved (non-negative least squares of relative error: it
            interpolates and extrapolates smoothly), times a forest's correction on log features (what is not
            linear: vector-width remainders, cache levels). 5-fold cross-validation on kernels measured under
            load: within +-10% 83% of kernels, against 72% for a forest alone; guest instructions: 91% (within
            +-5%: 81%) against 75%."""
            lin = np.stack([_lin(r["features"], "" if generic else r["type"]) for r in subset])
            y = np.asarray([max(r[ktarget], 1e-12) for r in subset])
            coef, _ = nnls(lin / y[:, None], np.ones(len(subset)))
            base = lin @ coef
            if np.any(base <= 0):
                return None, forest(np.stack([_x(r["features"]) for r in subset]), np.log(y))
            return coef, forest(np.stack([_x(r["features"]) for r in subset]), np.log(y / base))

        # one trend per type and convolution class (conv_class) where the build has enough of it, else per
        # type; an operator never measured is estimated from the measured ones of its kind (kind()), and
        # failing that from all kernels
        groups: dict = {}
        for r in rows:
            for name, _ in _groups(r["type"], r["features"], self.machine):
                groups.setdefault(name, []).append(r)
        self.by_type = {t: fit_type(sub, generic=t.startswith("*")) for t, sub in sorted(groups.items())
                        if len(sub) >= self.MIN_PER_TYPE}
        self.models = with_derived_terms(doc)["models"]
        self.terms = self.TERMS if all("model_extra_nodes" in m for m in self.models.values()) else self.LEGACY_TERMS
        self.fit = self._fit_overhead()
        if self.harness:
            self.fit["runner_harness_instructions"] = self.harness

    def kernel(self, k: Kernel) -> tuple[float, str]:
        if k.key in self.measured:
            return self.measured[k.key], "measured"
        for group, how in _groups(k.type, k.features, self.machine):
            if group in self.by_type:
                coef, reg = self.by_type[group]
                corr = float(np.exp(reg.predict(_x(k.features)[None, :])[0]))
                base = float(_lin(k.features, "" if group.startswith("*") else k.type) @ coef) \
                    if coef is not None else 1.0
                if base > 0:
                    return base * corr, how
        return float(np.median(list(self.measured.values()))), "fallback"

    def _sum(self, kernels) -> tuple[float, list]:
        parts = [(k, *self.kernel(k)) for k in kernels]
        return sum(p[1] for p in parts), parts

    TERMS = ("n_kernels", "alone_extra_nodes", "model_extra_nodes", "streamed_mb_beyond_cache", "dram_mb",
             "conv_io_melems", "kernel_inputs", "kernel_out_melems", "model_io")
    # before 2026-11-29 one signed term stood for both kinds of extra node (node_excess = alone - model extras);
    # a file whose kernels lack their node counts is still fitted that way
    LEGACY_TERMS = ("n_kernels", "node_excess", *TERMS[3:])

    def _fit_overhead(self) -> dict:
        """whole model = sum of its kernels timed alone + c + k_n * n_kernels + k_a * alone_extra_nodes
        + k_m * model_extra_nodes
        + k_s * streamed_MB_beyond_cache + k_d * dram_MB + k_c * conv_io_Melems + k_i * kernel_inputs
        + k_out * kernel_out_Melems + k_io * model_io, fitted on the whole models of the build whose
        kernels were all measured (relative errors, a robust loss: one model timed during a load spike does
        not drag the rest; for timings, a prior holds k_n near minus an empty model's time). Why each term: every kernel timed alone pays one runtime call (input binding,
        output copy), which a whole model pays once (k_n about minus an empty model's time, c about plus one);
        the nodes beyond one per kernel that the runtime runs for the kernels alone (alone_extra_nodes: a
        convolution alone gets its layout conversions) and for the whole model (model_extra_nodes: free input
        dimensions leave shape arithmetic in it), two terms because they are different work: one signed
        node_excess for both had every small transformer (51-102 shape nodes) 5-9% low in guest instructions,
        and split, the held-out graphs of seeds 9-19 went from 220 to 226 of 231 within +-5%; a
        kernel timed alone keeps its weights in a core's cache, a whole model's weights beyond it stream from
        the next level (k_s), and a model whose weights outgrow the last-level cache reads a share of them from
        memory on every inference (k_d, dram_mb: predictor_terms; with five stacks of feed-forward blocks of 4.7
        to 38 MB in the local build, cross-validated on its 38 whole models, within +-10% 63% -> 76% and the
        90th percentile error 45% -> 13%, MiniLM -41% -> -6%); a convolution alone converts its input and
        output to and from the runtime's blocked layout, which consecutive convolutions in a model do once (k_c,
        negative); every input a kernel alone is fed and every output it hands back (a copy) cost per input and
        per element (k_i, k_out), and so do the whole model's own inputs and outputs (k_io: a step model binds
        its whole state each call)."""
        from scipy.optimize import least_squares

        models = [m for m in self.models.values()
                  if m.get(self.ktarget) and all(k in self.measured for k in m["kernels"])]
        if len(models) < 2 * (len(self.terms) + 1):
            if self.target == "instructions":
                return {"method": "sum - (n - 1) x empty model (too few whole models to fit)", "n_models": len(models)}
            return {"method": "plain sum (too few whole models to fit)", "n_models": len(models),
                    **{t: 0.0 for t in ("c", *self.terms)}}
        # a term that hardly varies over the models (every one with one input and one output, say) cannot be
        # told apart from c: it would take any value, and extrapolate wildly. Such a term is left at 0.
        used = [t for t in self.terms if len({round(float(m[t]), 9) for m in models}) >= self.MIN_DISTINCT]
        a = np.asarray([[1.0, *(m[t] for t in used)] for m in models])
        sums = np.asarray([sum(self.measured[k] for k in m["kernels"]) - self.per_output * m.get("extra_outputs", 0)
                           for m in models])
        y = np.asarray([m[self.ktarget] for m in models])
        start = np.linalg.lstsq(a / y[:, None], (y - sums) / y, rcond=None)[0]
        n_at = 1 + used.index("n_kernels") if "n_kernels" in used else None
        prior = self.target != "instructions" and n_at is not None and bool(self.empty)

        def residuals(p):
            r = (sums + a @ p) / y - 1
            if prior:  # timings are noisy and the terms grow together: hold the per-kernel call near -empty
                r = np.append(r, self.PRIOR_WEIGHT * (p[n_at] + self.empty) / self.empty)
            return r

        res = least_squares(residuals, start, loss="soft_l1", f_scale=0.05)
        coef = dict(zip(["c", *used], res.x))
        fit = {"method": "sum of kernels + c + " + " + ".join(f"k_{t} * {t}" for t in used)
                         + ", robust least squares of relative error on whole models", "n_models": len(models),
               **{t: float(coef.get(t, 0.0)) for t in ("c", *self.terms)},
               "not_fitted": [t for t in self.terms if t not in used]}
        fit["train_median_abs_error"] = float(np.median(np.abs((sums + a @ res.x) / y - 1)))
        if prior:
            fit["prior"] = f"k_n_kernels near minus an empty model's time ({self.empty:.4g}), weight {self.PRIOR_WEIGHT:g}"
        return fit

    def _apply(self, total: float, terms: dict, fit: dict | None = None) -> float:
        f = fit or self.fit
        total -= self.per_output * terms.get("extra_outputs", 0)
        if "c" not in f:  # instructions without a fit: every kernel's count includes one runtime call
            return total - (terms["n_kernels"] - 1) * (self.empty or 0) + self.harness
        return total + f["c"] + sum(f[t] * terms[t] for t in self.terms) + self.harness

    def node_cache(self) -> dict:
        return {k: v.get("runtime_nodes") for k, v in self.doc["kernels"].items()}

    def predict_model(self, kernels: list[Kernel], terms: dict) -> dict:
        """`terms`: model_terms() of the graph (self.node_cache() spares recounting known kernels)."""
        total, parts = self._sum(kernels)
        value = self._apply(total, terms)
        value = max(value, self.empty_whole or 0.0)  # no model runs faster than an empty one
        by_type: dict = {}
        for k, v, how in parts:
            slot = by_type.setdefault(k.type, {"type": k.type, "count": 0, self.target: 0.0,
                                               "measured": 0, "regressed": 0, "fallback": 0})
            slot["count"] += 1
            slot[self.target] += v
            slot[how] += 1
        return {"value": float(value), "kernels": len(kernels), "sum_of_kernels": float(total), "terms": terms,
                "breakdown": sorted(by_type.values(), key=lambda r: -r[self.target]), "fit": self.fit}
