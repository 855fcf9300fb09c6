"""Window models for onnxruntime: the unrolled L2MU with populations of different time steps merged into one
product per level (WavefrontL2MU), the LMU with one product per step (FusedLMU).

Within one time step the L2MU's populations form a chain (input -> u -> memory -> hidden -> readout), but only
u -> memory -> hidden -> u (through e_h and e_m, one step late) is a cycle. The input population depends only on
x and itself, the readout only on hidden. So at tick k three products suffice (a wavefront):

    level A:  u(k), readout(k-1), input(k+1)     one product
    level B:  memory(k)                          one product
    level C:  hidden(k)                          one product

Each level is one Concat of the tensors it reads, one Gemm whose weight holds every population's block (leak,
reset and synapses as in _LeanL2MU), and one HardSigmoid for the spikes of all its columns (membranes are kept
minus their thresholds, see __init__): 9 nodes a tick instead of 20, an Add and a Squeeze. Columns that are
not spiking neurons (CuBa's synaptic currents) get an unreachable threshold and zero rows where they are read.
The class score (the mean readout membrane) is one Concat of level A's outputs and one product at the end, not
an Add per step: summed inside each tick's product, the growing score took rounding at its own scale from every
term (1e-4 off on a trained HAPT LIF). The samples are split once into 2-D per-step tensors (Transpose, Flatten,
Split) instead of one Squeeze per step.

Same equations and the same weights as the step model; the sums run in another order (float32: 3.8e-5 on the
scores of a trained HAPT LIF, whose step-by-step window is 4.6e-5 off), so the exporters validate against L2MU
itself. tests/train/test_onnx_window.py checks both forms against the lean window in float64 and through
onnxruntime. onnxruntime only: LiteRT runs the zero blocks as real work (CuBa 1.4x slower there).
"""
from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

NEVER = 3.0e38  # the threshold of a column that is not a spiking neuron: Greater is never true


class _Heaviside(torch.autograd.Function):
    """1 where x > 0, else 0; exported as one HardSigmoid: min(1, max(0, alpha x)) with alpha the largest
    float32, so every positive float32 from 2.9e-39 up gives 1 (a membrane minus its threshold is 0 or at
    least one rounding step of its terms away from it)."""

    @staticmethod
    def forward(ctx, x):
        return (x > 0).to(x.dtype)

    @staticmethod
    def symbolic(g, x):
        return g.op("HardSigmoid", x, alpha_f=float(torch.finfo(torch.float32).max), beta_f=0.0)


class WavefrontL2MU(nn.Module):
    """The window model of a _LeanL2MU (fold_state=True, membrane readout) as three products per tick."""

    LEVELS = {"A": ("u", "readout", "input"), "B": ("memory",), "C": ("hidden",)}

    def __init__(self, lean: nn.Module):
        super().__init__()
        if not lean.fold_state or lean.readout_mode != "membrane":
            raise ValueError("the wavefront window needs the folded state and the membrane readout")
        self.in_channels, self.classes = lean.in_channels, lean.sizes["readout"]
        cuba = lean.neuron == "cuba"
        self.kinds = ("syn", "mem") if cuba else ("mem",)
        # column layout of each level's output: (population, kind) blocks
        self.cols: dict[str, dict] = {}
        for lvl, pops in self.LEVELS.items():
            off, layout = 0, {}
            for pop in pops:
                for kind in self.kinds:
                    layout[(pop, kind)] = (off, off + lean.sizes[pop])
                    off += lean.sizes[pop]
            self.cols[lvl] = {"layout": layout, "width": off}
        self.level_of = {pop: lvl for lvl, pops in self.LEVELS.items() for pop in pops}
        self.lean = lean  # its weights, and the window of fewer than two steps
        # the tensors each level reads at tick k, in Concat order: (name, width); "cur:X" is level X of this tick
        wa, wb, wc = (self.cols[x]["width"] for x in "ABC")
        # The level's own membranes come last, as in _LeanL2MU ([sources, mem, spk]): the small synaptic terms are
        # summed before the large membrane joins (first, it took rounding at its scale: 1e-4 on a trained LIF).
        self.reads = {
            "A": [("x", self.in_channels), ("spk:A", wa), ("spk:B", wb), ("spk:C", wc), ("out:A", wa)],
            "B": [("cur:spk:A", wa), ("spk:B", wb), ("out:B", wb)],
            "C": [("spk:A", wa), ("cur:spk:B", wb), ("spk:C", wc), ("out:C", wc)],
        }
        levels = {lvl: self._level_weights(lvl) for lvl in "ABC"}  # (w, b, thr) in float64
        # Every level keeps its membranes minus their thresholds (out' = out - thr; columns that never spike:
        # as they are), so a spike is out' > 0: one HardSigmoid with the largest float32 slope (min(1, max(0,
        # 3.4e38 x))), 0.18 us in onnxruntime against 0.40 for Greater + Cast. A product that reads a level's
        # own membranes gets their thresholds back through its bias.
        shift = {lvl: torch.where(thr < NEVER, thr, torch.zeros_like(thr)) for lvl, (_, _, thr) in levels.items()}
        # HardSigmoid's spikes are those of Greater only if a column that never spikes is never above 0 where its
        # spikes are read: true when every threshold is positive (the silent columns then hold -thr <= 0, the
        # synaptic currents' spikes are read by zero rows); else Greater + Cast
        self.heaviside = all(bool((t[t < NEVER] > 0).all()) for _, _, t in levels.values())
        for lvl, (w, b, thr) in levels.items():
            b = self._shifted(lvl, w, b, shift)
            self.register_buffer(f"w{lvl}", w.to(torch.float32).contiguous())
            self.register_buffer(f"b{lvl}", b.to(torch.float32).contiguous())
            self.register_buffer(f"thr{lvl}", (thr - shift[lvl]).to(torch.float32).contiguous())
        wa_, ba_, thra_ = levels["A"]
        # boundary ticks: at tick 0 there is no readout(-1); at the last tick the input population runs on zeros
        # (its input(T) is read by nothing)
        wa0, ba0, thra0 = wa_.clone(), ba_.clone(), thra_.clone()
        for kind in self.kinds:
            lo, hi = self.cols["A"]["layout"][("readout", kind)]
            wa0[:, lo:hi], ba0[lo:hi], thra0[lo:hi] = 0, 0, NEVER
        self.register_buffer("wA_first", wa0.to(torch.float32).contiguous())
        self.register_buffer("bA_first", self._shifted("A", wa0, ba0, shift).to(torch.float32).contiguous())
        self.register_buffer("thrA_first", (thra0 - shift["A"]).to(torch.float32).contiguous())
        # prologue: input(0) from x_0 alone (level A's columns, everything else zero and silent)
        w0 = torch.zeros(self.in_channels, wa, dtype=torch.float64)
        b0 = torch.zeros(wa, dtype=torch.float64)
        thr0 = torch.full((wa,), NEVER, dtype=torch.float64)
        w0[:, :] = wa_[: self.in_channels]
        for (pop, kind), (lo, hi) in self.cols["A"]["layout"].items():
            if pop == "input":
                b0[lo:hi] = ba_[lo:hi]
                if kind == "mem":
                    thr0[lo:hi] = thra_[lo:hi]
            else:
                w0[:, lo:hi] = 0
        self.register_buffer("w_pro", w0.to(torch.float32).contiguous())
        self.register_buffer("b_pro", (b0 - shift["A"]).to(torch.float32).contiguous())  # reads x only
        self.register_buffer("thr_pro", (thr0 - shift["A"]).to(torch.float32).contiguous())
        # before tick 0 levels B and C rest: membranes 0 (stored as -thr) and no spikes. They start from zeros,
        # and their first products' biases take the -thr (no Add of the rest state)
        for lvl in "BC":
            w, b, _ = levels[lvl]
            rows, _ = self._rows(lvl)
            lo = rows[f"out:{lvl}"]
            first = self._shifted(lvl, w, b, shift) - shift[lvl] @ w[lo:lo + len(shift[lvl])]
            self.register_buffer(f"b{lvl}_first", first.to(torch.float32).contiguous())
        # epilogue: the last readout membrane (level A's readout columns at a tick T), shifted as level A's
        lo, hi = self.cols["A"]["layout"][("readout", "mem")]
        self.register_buffer("w_epi", self.wA[self.in_channels:, lo:hi].clone().contiguous())
        self.register_buffer("b_epi", self.bA[lo:hi].clone().contiguous())
        pick = torch.zeros(self.classes, wa)
        pick[:, lo:hi] = torch.eye(self.classes)
        self.register_buffer("pick_readout", pick)
        self.register_buffer("eye_readout", torch.eye(self.classes))
        self.register_buffer("readout_thr", shift["A"][lo:hi].to(torch.float32).contiguous())  # the score's shift

    def _shifted(self, lvl: str, w: torch.Tensor, b: torch.Tensor, shift: dict) -> torch.Tensor:
        """The bias of a product of level lvl (weight w, bias b) whose output and own-membrane input are both
        stored minus their thresholds: b - thr + thr_in @ W[own membrane rows] (float64)."""
        rows, _ = self._rows(lvl)
        lo = rows[f"out:{lvl}"]
        own = shift[lvl]
        return b - own + own @ w[lo:lo + len(own)]

    def _rows(self, lvl: str) -> tuple[dict, int]:
        """(tensor name, column offset in the Concat) of every read tensor of level lvl."""
        off, rows = 0, {}
        for name, width in self.reads[lvl]:
            rows[name] = off
            off += width
        return rows, off

    def _level_weights(self, lvl: str) -> tuple:
        """(weight read rows x output columns, bias, thresholds) of level lvl, in float64."""
        lean, f64 = self.lean, torch.float64
        rows, height = self._rows(lvl)
        layout, width = self.cols[lvl]["layout"], self.cols[lvl]["width"]
        w = torch.zeros(height, width, dtype=f64)
        b = torch.zeros(width, dtype=f64)
        thr = torch.full((width,), NEVER, dtype=f64)
        cuba = lean.neuron == "cuba"

        def spike_row(src: str) -> int:
            """Concat row of population src's spikes as level lvl needs them at this tick."""
            if src == "x":
                return rows["x"]
            home = self.level_of[src]
            cur = f"cur:spk:{home}"
            # a population read within its own tick (u by memory, memory by hidden) comes from this tick's
            # level; every other read is of the previous tick's tensor (see the module docstring)
            name = cur if cur in rows else f"spk:{home}"
            return rows[name] + self.cols[home]["layout"][(src, "mem")][0]

        for pop in self.LEVELS[lvl]:
            n = lean.sizes[pop]
            pw, pb = getattr(lean, f"{pop}_w").to(f64), getattr(lean, f"{pop}_b").to(f64)  # out x in
            own_state = ("syn", "mem", "spk") if cuba else ("mem", "spk")
            srcs = lean.sources[pop] + [f"own:{s}" for s in own_state
                                        if not (s == "spk" and pop in lean.sources[pop])]
            # _LeanL2MU's input order: sources (each its width), then the own state not already a source
            widths = {"x": lean.in_channels, **lean.sizes}
            col = 0
            blocks = []
            for s in srcs:
                width_s = n if s.startswith("own:") else widths[s]
                blocks.append((s, col, col + width_s))
                col += width_s
            for s, lo_in, hi_in in blocks:
                if s.startswith("own:"):
                    kind = s[4:]
                    if kind == "spk":
                        r = rows[f"spk:{lvl}"] + layout[(pop, "mem")][0]
                    else:
                        r = rows[f"out:{lvl}"] + layout[(pop, kind)][0]
                else:
                    r = spike_row(s)
                for k_out, kind in enumerate(self.kinds):
                    lo, hi = layout[(pop, kind)]
                    w[r:r + hi_in - lo_in, lo:hi] += pw[k_out * n:(k_out + 1) * n, lo_in:hi_in].t()
            for k_out, kind in enumerate(self.kinds):
                lo, hi = layout[(pop, kind)]
                b[lo:hi] = pb[k_out * n:(k_out + 1) * n]
            lo, hi = layout[(pop, "mem")]
            thr[lo:hi] = getattr(lean, f"{pop}_thr").to(f64)
        return w, b, thr

    def _read(self, lvl: str, tensors: dict) -> list:
        """The tensors level lvl reads, in its Concat order, without x."""
        return [tensors[name] for name, _ in self.reads[lvl] if name != "x"]

    def _spikes(self, out: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
        if self.heaviside:
            return _Heaviside.apply(out)
        return (out > thr).to(out.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = int(x.shape[-1])  # a constant in the traced graph (the window length is fixed)
        if steps < 2:
            return self.lean(x)
        xs = torch.split(torch.flatten(x.transpose(1, 2), 1), self.in_channels, dim=1)  # T tensors, batch x C
        out_a = F.linear(xs[0], self.w_pro.t(), self.b_pro)
        spk_a = self._spikes(out_a, self.thr_pro)
        zeros_b = torch.zeros_like(out_a[:, :1]).expand(-1, self.cols["B"]["width"])
        zeros_c = torch.zeros_like(out_a[:, :1]).expand(-1, self.cols["C"]["width"])
        out_b, spk_b, out_c, spk_c = zeros_b, zeros_b, zeros_c, zeros_c
        outs = []
        for k in range(steps):
            prev = {"spk:A": spk_a, "spk:B": spk_b, "spk:C": spk_c, "out:A": out_a, "out:B": out_b, "out:C": out_c}
            w, b, thr = (self.wA_first, self.bA_first, self.thrA_first) if k == 0 else (self.wA, self.bA, self.thrA)
            x_next = xs[k + 1] if k < steps - 1 else torch.zeros_like(xs[0])
            out_a = F.linear(torch.cat([x_next] + self._read("A", prev), dim=1), w.t(), b)
            prev["cur:spk:A"] = self._spikes(out_a, thr)
            b_b, b_c = (self.bB_first, self.bC_first) if k == 0 else (self.bB, self.bC)
            out_b = F.linear(torch.cat(self._read("B", prev), dim=1), self.wB.t(), b_b)
            prev["cur:spk:B"] = self._spikes(out_b, self.thrB)
            out_c = F.linear(torch.cat(self._read("C", prev), dim=1), self.wC.t(), b_c)
            spk_a, spk_b, spk_c = prev["cur:spk:A"], prev["cur:spk:B"], self._spikes(out_c, self.thrC)
            if k > 0:
                outs.append(out_a)
        last = F.linear(torch.cat(self._read("A", {"spk:A": spk_a, "spk:B": spk_b, "spk:C": spk_c, "out:A": out_a}),
                                  dim=1), self.w_epi.t(), self.b_epi)
        # the class score is the mean readout membrane: level A's outputs of ticks 1..T-1 hold readout(0..T-2),
        # read by one product whose weight selects their readout columns (a constant once traced)
        readout = torch.cat([self.pick_readout.repeat(1, steps - 1), self.eye_readout], dim=1) / steps
        return F.linear(torch.cat(outs + [last], dim=1), readout, self.readout_thr)


class FusedLMU(nn.Module):
    """The unrolled LMU window of a _LeanLMU (fold_state=True) as one product and one Tanh per step, which
    onnxruntime fuses into one node (FusedGemm).

    The memory update is linear, so the hidden pre-activation can read it through the product instead of after it:

        G = [m' | pre_h'] = [x, h, m] @ [Wm | Wh_xh + Wm Wh_m] + [bm | bm Wh_m + bh]        h' = tanh(pre_h')

    A step's state is S = tanh(G) = [tanh(eps m') | h' | tanh(eps_a a')] with eps = 2**-16: the memory rides
    through Tanh where Tanh is the identity in float32. |eps m| stays below 2**-12 for |m| < 16 (the shipped
    BasicMotions LMU's largest |m| on its test split: 2.3; with those inputs scaled 100x its scores still agree
    within 1.5e-5), and there tanh(y) = y (1 - y^2/3) is y to within float32's own rounding: onnxruntime's Tanh
    returns it within 1.7e-7 relative (measured from 1e-30 to 2**-12). The memory's columns are scaled by
    eps and the rows that read it by 1/eps, both powers of two, so every product is the one of the unscaled
    weights. Then a step reads only S:

        S_k = tanh(S_{k-1} @ W_s + (x_k @ W_x + b))

    and x_k @ W_x + b of every step is one product before the loop (the step's Gemm takes it as its C input).
    Without the scaling, a step read [x, G, tanh(G)] through a Concat (three nodes, half the rows zero: 1.8 us a
    step against 0.68 here).

    The class score rides along the same way: a' = a + h @ R^T / T (the hidden state of the step before, so
    the last step's term and the bias join at the end, in one small product), scaled by eps_a, a power of two
    that keeps |eps_a a| <= 2**-13 (|h| <= 1, so |a| is at most a readout row's absolute sum). Its rows come
    last in the product, so each step adds the running score once, after the step's own terms, as the step
    model does. Collecting the T states instead (a Concat of T inputs and a product T x (d+h) wide) took 16 of
    the window's 92 us in onnxruntime (BasicMotions LMU, 100 steps, one thread)."""

    EPS = 2.0 ** -16

    def __init__(self, lean: nn.Module):
        super().__init__()
        if not lean.fold_state:
            raise ValueError("the fused LMU window needs the folded memory update")
        f64 = torch.float64
        self.d, self.hidden = lean.d, lean.hidden_size
        mem_w, mem_b = lean.mem_w.to(f64).t(), lean.mem_b.to(f64)              # in x d
        hid_w, hid_b = lean.hid_w.to(f64).t(), lean.hid_b.to(f64)              # in x hidden
        self.in_channels = hid_w.shape[0] - self.hidden - self.d
        c, h, d, eps = self.in_channels, self.hidden, self.d, self.EPS
        r_w = lean.r_w.detach().to(f64)                                         # classes x hidden
        k = r_w.shape[0]
        # |a| <= max row sum of |R| (|h| <= 1, averaged over T): eps_a keeps eps_a |a| <= 2**-13
        bound = max(float(r_w.abs().sum(1).max()), 2.0 ** -60)
        eps_a = 2.0 ** (-13 - math.ceil(math.log2(bound)))
        wh_m = hid_w[c + h:]                                                    # d x hidden
        g_w = torch.cat([mem_w, hid_w.clone().index_fill_(0, torch.arange(c + h, c + h + d), 0) + mem_w @ wh_m], 1)
        g_b = torch.cat([mem_b, mem_b @ wh_m + hid_b])
        col_scale = torch.cat([torch.full((d,), eps, dtype=f64), torch.ones(h, dtype=f64)])  # G's memory: x eps
        # rows of [eps m, h] (S without the score): the memory's rows read eps m, so they are divided by eps
        w_core = torch.cat([g_w[c + h:] / eps, g_w[c:c + h]], 0) * col_scale
        self.register_buffer("w_core", w_core.to(torch.float32).contiguous())
        self.register_buffer("w_x", (g_w[:c] * col_scale).to(torch.float32).contiguous())
        self.register_buffer("b", (g_b * col_scale).to(torch.float32).contiguous())
        self.register_buffer("r_t", (r_w.t() * eps_a).to(torch.float32).contiguous())  # hidden x classes, x eps_a
        self.register_buffer("r_w", r_w.to(torch.float32).contiguous())
        self.register_buffer("r_b", lean.r_b.detach().to(torch.float32).contiguous())
        self.eps_a, self.classes = eps_a, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        steps = int(x.shape[-1])  # the window length is a constant in the traced graph
        d, h, k = self.d, self.hidden, self.classes
        z = functools.partial(torch.zeros, dtype=self.w_core.dtype, device=self.w_core.device)
        # the step's weight (constant once traced): [eps m, h, eps_a a] -> [eps m', pre_h', eps_a a'], where
        # a' = a + h @ R^T / T reads the score's own rows last (identity)
        w_s = torch.cat([torch.cat([self.w_core, z(k, d + h)], 0),
                         torch.cat([z(d, k), self.r_t / steps, torch.eye(k, dtype=self.w_core.dtype)], 0)], 1)
        # every step's x_k @ W_x + b in one product (batch x T x (d+h)), the score's columns zero, then T blocks
        xw = torch.matmul(x.transpose(1, 2), torch.cat([self.w_x, z(self.in_channels, k)], 1))
        xws = torch.split(torch.flatten(xw + torch.cat([self.b, z(k)]), 1), d + h + k, dim=1)
        s = torch.tanh(xws[0])  # the first step reads the zero state
        for step in range(1, steps):
            s = torch.tanh(torch.addmm(xws[step], s, w_s))
        # score = a / eps_a + h_{T-1} @ R^T / T + r_b: one product of the last state
        readout = torch.cat([z(k, d), self.r_w / steps, torch.eye(k, dtype=self.w_core.dtype) / self.eps_a], 1)
        return F.linear(s, readout, self.r_b)
