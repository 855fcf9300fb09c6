"""The L2MU (train/l2mu.py) for export: the lean window model (the fewest graph nodes; L2MU.export_module) and
the streaming step model (L2MU.step_module). Same equations and weights as L2MU; inference only."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgebench.train.l2mu import L2MU, POPULATIONS


class _LeanL2MU(nn.Module):
    """L2MU.forward for export: same equations, the fewest graph nodes (frozen copy; L2MU.export_module).

    Per population and time step ONE matrix product computes the new membrane (CuBa: synaptic current and
    membrane) from everything it depends on, concatenated:

        LIF    mem' = [sources, mem, spk] @ [W; diag(beta); -diag(thr)] + b          spk' = mem' > thr
        CuBa   [syn' | mem'] = [sources, syn, mem, spk] @ [[W, W]; [diag(alpha), diag(alpha)];
                                                          [0, diag(beta)]; [0, -diag(thr)]] + [b, b]

    (the reset by subtraction and the leak are linear in the previous state, so they fold into the product;
    where a population's own spikes are already a source, as the memory's and the hidden's are, -diag(thr)
    is added to that block). A step is then Concat, Gemm, (Split), Greater, Where per population: the
    unrolled 100-step LIF window has about 2.2x fewer nodes after onnxruntime's optimizations than the
    per-term form (benchmarks/lean_graphs.py). Sums run in a different order than in L2MU.run (~1e-7): the
    exporters validate against L2MU itself, and the tests check the spikes.

    The same `step` is the streaming step model's (L2MU.step_module): window and stream are one function.
    """

    def __init__(self, m: "L2MU", fold_state: bool = True, spikes: str = "compare"):
        super().__init__()
        if spikes not in ("compare", "relu6"):
            raise ValueError(f"spikes: 'compare' or 'relu6', got {spikes!r}")
        self.readout_mode = m.readout_mode
        self.fold_state = fold_state
        self.spikes = spikes
        self.neuron = m.pop["input"].neuron
        self.sizes = {name: p.size for name, p in m.pop.items()}
        self.in_channels = m.P.weight.shape[1]
        f64 = torch.float64
        cell = {name: p.cell for name, p in m.pop.items()}

        def neuron_param(name, attr):
            return getattr(cell[name], attr).detach().clamp(0, 1).to(f64).expand(self.sizes[name]) \
                if attr != "threshold" else cell[name].threshold.detach().to(f64).expand(self.sizes[name])

        w = {k: getattr(m, k).weight.detach().to(f64) for k in ("P", "e_x", "e_h", "e_m", "W_x", "W_h", "W_m", "R")}
        a_w = m.memory.A_block.detach().t().to(f64)                                        # out d x in d
        b_w = (m.memory.B_block * m.memory_gain).detach().t().to(f64)                      # out d x in memory_size
        # (population, [(source, weight out x in)], bias); a source named like the population is its own spikes
        wiring = [
            ("input", [("x", w["P"])], m.P.bias),
            ("u", [("input", w["e_x"]), ("hidden", w["e_h"]), ("memory", w["e_m"])], m.e_x.bias),
            ("memory", [("memory", a_w), ("u", b_w)], None),
            ("hidden", [("input", w["W_x"]), ("hidden", w["W_h"]), ("memory", w["W_m"])], m.W_x.bias),
            ("readout", [("hidden", w["R"])], m.R.bias),
        ]
        self.sources = {}
        for name, srcs, bias in wiring:
            n = self.sizes[name]
            thr, beta = neuron_param(name, "threshold"), neuron_param(name, "beta")
            raw = [wt for _, wt in srcs]
            # the reset by subtraction, folded into the own-spike block (membrane rows only)
            blocks = [wt - torch.diag(thr) if src == name else wt for src, wt in srcs]
            state_blocks = [torch.diag(beta)]                                              # mem -> mem'
            if name not in [s for s, _ in srcs]:
                state_blocks.append(-torch.diag(thr))                                     # spk -> mem'
            b = torch.zeros(n, dtype=f64) if bias is None else bias.detach().to(f64)
            if not fold_state:  # synapses only; leak and reset stay elementwise float ops (for INT8 weights)
                weight = torch.cat(raw, dim=1)
                self.register_buffer(f"{name}_beta", beta.to(torch.float32).contiguous())
                if self.neuron == "cuba":
                    self.register_buffer(f"{name}_alpha", neuron_param(name, "alpha").to(torch.float32).contiguous())
            elif self.neuron == "lif":
                weight = torch.cat(blocks + state_blocks, dim=1)
            else:
                alpha = torch.diag(neuron_param(name, "alpha"))
                zero = torch.zeros(n, n, dtype=f64)
                syn_rows = torch.cat(raw + [alpha, zero] + ([zero] if len(state_blocks) > 1 else []), dim=1)
                mem_rows = torch.cat(blocks + [alpha] + state_blocks, dim=1)
                weight, b = torch.cat([syn_rows, mem_rows], dim=0), torch.cat([b, b])
            self.register_buffer(f"{name}_w", weight.to(torch.float32).contiguous())
            self.register_buffer(f"{name}_b", b.to(torch.float32).contiguous())
            self.register_buffer(f"{name}_thr", thr.to(torch.float32).contiguous())
            self.sources[name] = [s for s, _ in srcs]

    def state_names(self) -> list:
        """The step model's state tensors, in input (and output) order."""
        per = ("mem", "spk") if self.neuron == "lif" else ("syn", "mem", "spk")
        return [f"{pop}_{v}" for pop in POPULATIONS for v in per]

    def state_sizes(self) -> list:
        per = 2 if self.neuron == "lif" else 3
        return [self.sizes[pop] for pop in POPULATIONS for _ in range(per)]

    def zero_state(self, x: torch.Tensor) -> list:
        return [x.new_zeros(x.shape[0], n) for n in self.state_sizes()]

    def step(self, x_t: torch.Tensor, state: list) -> tuple:
        """One time step: (readout term for the class scores, new state, spikes by population)."""
        per = 2 if self.neuron == "lif" else 3
        st = {pop: state[k * per:(k + 1) * per] for k, pop in enumerate(POPULATIONS)}
        spikes = {"x": x_t}
        # the previous spikes of the recurrent sources (u reads hidden and memory of step t-1)
        prev = {pop: st[pop][-1] for pop in POPULATIONS}
        new_state = []
        for pop in POPULATIONS:
            srcs = [spikes[s] if s in spikes else prev[s] for s in self.sources[pop]]
            if not self.fold_state:
                spk, new = self._unfolded(pop, F.linear(torch.cat(srcs, dim=1), getattr(self, f"{pop}_w"),
                                                        getattr(self, f"{pop}_b")), st[pop])
                spikes[pop] = spk
                new_state += new + [spk]
                continue
            own = list(st[pop][:-1]) + ([] if pop in self.sources[pop] else [st[pop][-1]])
            out = F.linear(torch.cat(srcs + own, dim=1), getattr(self, f"{pop}_w"), getattr(self, f"{pop}_b"))
            if self.neuron == "lif":
                mem, new = out, [out]
            else:
                syn, mem = torch.split(out, self.sizes[pop], dim=1)
                new = [syn, mem]
            spk = self._spike(mem, getattr(self, f"{pop}_thr"))
            spikes[pop] = spk
            new_state += new + [spk]
        term = new_state[-2] if self.readout_mode == "membrane" else new_state[-1]
        del spikes["x"]
        return term, new_state, spikes

    def _spike(self, mem: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
        """snntorch's heaviside(mem - thr): 1 where mem > thr, else 0.

        "compare": Greater and Cast (onnxruntime: two nodes, no constants). "relu6" (for LiteRT):
        relu6((mem - thr) * 2**126) / 6, the same 0 or 1 (the scaling is exact; from a difference of 2**-126 on
        it is >= 6, and inf, which relu6 clamps, beyond 4): XNNPACK runs it (SUB, MUL with RELU6, MUL), so a
        LIF step is one delegate partition instead of one per population between GREATER and CAST, which
        XNNPACK does not run (BasicMotions LIF, one thread: the window's invoke 0.223 -> 0.188 ms, the
        dynamic-range INT8 step's 1.78 -> 1.68 us; the same scores). Which models get it: L2MU._spikes_for.
        Not for static INT8, whose observers would see the scaled differences."""
        if self.spikes == "relu6":
            return F.relu6((mem - thr) * 2.0 ** 126) / 6.0
        return (mem > thr).to(mem.dtype)

    def _unfolded(self, pop: str, current, state) -> tuple:
        """snntorch's update as elementwise ops (the INT8-friendly step: only synapses are matrix products)."""
        thr, beta = getattr(self, f"{pop}_thr"), getattr(self, f"{pop}_beta")
        if self.neuron == "lif":
            mem, spk = state
            mem = beta * mem + current - spk * thr
            return self._spike(mem, thr), [mem]
        syn, mem, spk = state
        syn = getattr(self, f"{pop}_alpha") * syn + current
        mem = beta * mem + syn - spk * thr
        return self._spike(mem, thr), [syn, mem]

    def run(self, x: torch.Tensor, record: bool = False) -> tuple:
        steps = x.shape[-1]
        state = self.zero_state(x)
        score, rec = None, {pop: [] for pop in POPULATIONS}
        for t in range(steps):
            term, state, spikes = self.step(x[:, :, t], state)
            score = term if score is None else score + term
            if record:
                for pop in POPULATIONS:
                    rec[pop].append(spikes[pop])
        score = score / steps if self.readout_mode == "membrane" else score
        return score, ({k: torch.stack(v, 1) for k, v in rec.items()} if record else {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[0]


class _L2MUStep(nn.Module):
    """The streaming step model: one sample and the state in, the running class scores and the new state out.

        forward(x_t [batch x channels], *state, scores) -> (scores', *state')

    scores' = scores + the readout membrane (or spikes) of this step: after the T steps of a window, starting
    from zero state and zero scores, scores'/T is the window model's output (argmax unchanged at any step).
    """

    def __init__(self, lean: _LeanL2MU):
        super().__init__()
        self.lean = lean

    def input_names(self) -> list:
        return ["input"] + self.lean.state_names() + ["scores"]

    def output_names(self) -> list:
        return ["output"] + [f"{n}_out" for n in self.lean.state_names()]

    def state_sizes(self) -> list:
        return self.lean.state_sizes() + [self.lean.sizes["readout"]]

    def forward(self, x_t: torch.Tensor, *state_and_scores: torch.Tensor) -> tuple:
        state, scores = list(state_and_scores[:-1]), state_and_scores[-1]
        term, new_state, _ = self.lean.step(x_t, state)
        return (scores + term, *new_state)
