"""L2MU: the LMU rebuilt from populations of spiking neurons (Fra, Leto, Pignata, Macii, Urgese, ICANN 2024,
"Natively neuromorphic LMU architecture for encoding-free SNN-based HAR on commercial edge devices").

Every constituent of the LMU cell (lmu.py) is a population of snntorch neurons, LIF (`snntorch.Leaky`,
neuron="lif") or current-based LIF (`snntorch.Synaptic`, neuron="cuba"); populations talk only through spikes:

    input   s_in  = N_in (P x_t)                                   raw samples -> spikes (encoding-free)
    u       s_u   = N_u (e_x s_in + e_h s_h[t-1] + e_m s_m[t-1])
    memory  s_m   = N_m (Abar s_m[t-1] + Bbar s_u)                  Abar, Bbar: fixed Legendre buffers
    hidden  s_h   = N_h (W_x s_in + W_h s_h[t-1] + W_m s_m)
    readout s_out = N_out (R s_h)

Class scores: the readout population's membrane potential averaged over all time steps (trains with plain
cross-entropy; `readout="count"` gives summed output spikes instead). Decays (beta, and alpha for CuBa) and
thresholds can be learned per neuron (`learn_beta`, `learn_threshold`); surrogate gradients (fast sigmoid)
only shape the backward pass, the forward is a hard threshold.

Export: states are explicit tensors (init_hidden=False), the time loop is a Python loop unrolled when traced,
and nothing depends on data-dependent control flow, so the legacy ONNX exporter and litert-torch reproduce the
PyTorch spikes exactly.
"""
from __future__ import annotations

import torch
from torch import nn

from edgebench.train.lmu import LegendreMemory, lecun_uniform_

POPULATIONS = ("input", "u", "memory", "hidden", "readout")


def _lean_neuron_classes():
    """snntorch.Leaky / snntorch.Synaptic with a lean, functional step for export.

    The step is snntorch's own update with its defaults (reset by subtraction, reset_delay=True), written with
    the previous spike as an explicit state instead of recomputing it from the previous membrane (snntorch's
    `mem_reset(mem)` is exactly that spike, detached). It keeps snntorch's parameters (beta, alpha, threshold,
    learnable or not, clamped to [0, 1]) and surrogate gradient, and halves the traced graph (about 7 instead of
    17 ONNX nodes per population and step), which makes the legacy ONNX export several times faster.
    tests/train/test_l2mu.py checks the step against snntorch's forward, spike for spike.
    """
    import snntorch

    class LeakyStep(snntorch.Leaky):
        def step(self, current, mem, spk):
            return leaky_update(self.beta.clamp(0, 1), self.threshold, self.spike_grad, current, mem, spk)

    class SynapticStep(snntorch.Synaptic):
        def step(self, current, syn, mem, spk):
            return synaptic_update(self.alpha.clamp(0, 1), self.beta.clamp(0, 1), self.threshold, self.spike_grad,
                                   current, syn, mem, spk)

    return LeakyStep, SynapticStep


def leaky_update(beta, thr, surrogate, current, mem, spk) -> tuple:
    """snntorch.Leaky's step (reset by subtraction, previous spike explicit): (spike, mem); beta clamped."""
    mem = beta * mem + current - spk.detach() * thr
    return surrogate(mem - thr), mem


def synaptic_update(alpha, beta, thr, surrogate, current, syn, mem, spk) -> tuple:
    """snntorch.Synaptic's step, as leaky_update: (spike, syn, mem); alpha and beta clamped."""
    syn = alpha * syn + current
    mem = beta * mem + syn - spk.detach() * thr
    return surrogate(mem - thr), syn, mem


class _Population(nn.Module):
    """A population of `size` LIF or CuBa-LIF neurons; state is an explicit tuple ending in (mem, spk)."""

    def __init__(self, size: int, neuron: str, beta: float, alpha: float, threshold: float,
                 learn_beta: bool, learn_threshold: bool, slope: float):
        super().__init__()
        from snntorch import surrogate

        leaky, synaptic = _lean_neuron_classes()
        self.size, self.neuron = size, neuron
        grad = surrogate.fast_sigmoid(slope=slope)
        beta_t = torch.full((size,), float(beta))
        thr_t = torch.full((size,), float(threshold))
        if neuron == "lif":
            self.cell = leaky(beta=beta_t, threshold=thr_t, learn_beta=learn_beta,
                              learn_threshold=learn_threshold, spike_grad=grad, init_hidden=False)
        elif neuron == "cuba":
            self.cell = synaptic(alpha=torch.full((size,), float(alpha)), beta=beta_t, threshold=thr_t,
                                 learn_alpha=learn_beta, learn_beta=learn_beta,
                                 learn_threshold=learn_threshold, spike_grad=grad, init_hidden=False)
        else:
            raise ValueError(f"neuron must be 'lif' or 'cuba', not {neuron!r}")

    def init_state(self, like: torch.Tensor) -> tuple:
        zeros = like.new_zeros(like.shape[0], self.size)
        return (zeros, zeros) if self.neuron == "lif" else (zeros, zeros, zeros)

    def forward(self, current: torch.Tensor, state: tuple) -> tuple[torch.Tensor, tuple]:
        if self.neuron == "lif":
            spk, mem = self.cell.step(current, state[0], state[1])
            return spk, (mem, spk)
        spk, syn, mem = self.cell.step(current, state[0], state[1], state[2])
        return spk, (syn, mem, spk)

    @staticmethod
    def membrane(state: tuple) -> torch.Tensor:
        return state[-2]

    def train_constants(self) -> tuple:
        """(beta, alpha or None, threshold, surrogate) as the cell's step reads them, clamped once."""
        c = self.cell
        alpha = c.alpha.clamp(0, 1) if self.neuron == "cuba" else None
        return c.beta.clamp(0, 1), alpha, c.threshold, c.spike_grad

    @staticmethod
    def fast_step(constants: tuple, current: torch.Tensor, states: dict, name: str) -> torch.Tensor:
        """The cell's update (leaky_update / synaptic_update) on train_constants(); updates states[name], returns
        spikes."""
        beta, alpha, thr, surrogate = constants
        if alpha is None:
            spk, mem = leaky_update(beta, thr, surrogate, current, *states[name])
            states[name] = (mem, spk)
            return spk
        spk, syn, mem = synaptic_update(alpha, beta, thr, surrogate, current, *states[name])
        states[name] = (syn, mem, spk)
        return spk


class L2MU(nn.Module):
    """One spiking LMU layer plus a spiking readout; input batch x channels x time, output batch x classes."""

    spiking = True  # discontinuous: exporters allow a few windows with a spike flipped by rounding (export/onnx.py)

    def __init__(self, in_channels: int, num_classes: int, hidden_size: int = 64, memory_size: int = 4,
                 order: int = 8, theta: float = 100.0, input_size: int = 32, neuron: str = "lif",
                 beta: float = 0.9, alpha: float = 0.8, threshold: float = 1.0, learn_beta: bool = True,
                 learn_threshold: bool = True, slope: float = 10.0, readout: str = "membrane",
                 memory_gain: float | None = None, learn_memory_gain: bool = True):
        super().__init__()
        if readout not in ("membrane", "count"):
            raise ValueError(f"readout must be 'membrane' or 'count', not {readout!r}")
        self.readout_mode = readout
        self.memory = LegendreMemory(memory_size, order, theta)
        d = self.memory.size
        # weight layers (synapses), named after the LMU equations
        self.P = nn.Linear(in_channels, input_size)              # raw samples -> input population current
        self.e_x = nn.Linear(input_size, memory_size)
        self.e_h = nn.Linear(hidden_size, memory_size, bias=False)
        self.e_m = nn.Linear(d, memory_size, bias=False)
        self.W_x = nn.Linear(input_size, hidden_size)
        self.W_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.W_m = nn.Linear(d, hidden_size, bias=False)
        self.R = nn.Linear(hidden_size, num_classes)
        for lin in (self.P, self.e_x, self.e_h, self.e_m):
            lecun_uniform_(lin.weight)
        for lin in (self.W_x, self.W_h, self.W_m, self.R):
            nn.init.xavier_normal_(lin.weight)

        # Memory input gain. Every population's input current passes through learnable weights, except the
        # memory's: Abar and Bbar are fixed Legendre buffers, and Bbar = O((2i+1)/theta) is sized for a
        # continuous u integrated over theta steps (|Bbar_i| = 0.01 .. 0.11 at order 8, theta 100). Fed with
        # binary u spikes, a memory neuron then needs ~theta/(2i+1) u spikes in a row (against the leak) to
        # reach threshold 1: at theta = 100 the trained LIF memory never fired and the classifier ignored it.
        # A per-neuron gain g on the u -> memory current (g_i Bbar_i s_u) fixes the scale: initialised to
        # memory_gain * threshold / |Bbar_i|, one u spike moves memory neuron i by memory_gain thresholds, with
        # Bbar's sign (Legendre polarity) kept; learned with the rest. Only the Bbar term is scaled: Abar's
        # diagonal (~1 - (2i+1)/theta) is each neuron's self-excitation through its own spike, and with a gain
        # above ~1 there a memory neuron would fire at every step once it had fired once.
        # memory_gain=None keeps the plain Bbar (gain 1, not learned): right for CuBa, whose synaptic current
        # already integrates u spikes over ~1/(1-alpha) steps (its memory fires at 15-25 % with plain Bbar, and
        # a gain of 0.5 cost it accuracy); BASICMOTIONS_CONFIG sets memory_gain=0.5 for LIF.
        if memory_gain is None:
            self.register_buffer("memory_gain", torch.ones(d))
        else:
            init = float(memory_gain) * float(threshold) / self.memory.B.abs().clamp_min(1e-6)
            gain = init.repeat(memory_size)  # m is flat: u dimension major, order minor
            if learn_memory_gain:
                self.memory_gain = nn.Parameter(gain)
            else:
                self.register_buffer("memory_gain", gain)

        def pop(size: int) -> _Population:
            return _Population(size, neuron, beta, alpha, threshold, learn_beta, learn_threshold, slope)

        self.pop = nn.ModuleDict({"input": pop(input_size), "u": pop(memory_size), "memory": pop(d),
                                  "hidden": pop(hidden_size), "readout": pop(num_classes)})

    def run(self, x: torch.Tensor, record: bool = False) -> tuple[torch.Tensor, dict]:
        """Class scores, and (with record=True) every population's spikes as batch x time x neurons."""
        steps = x.shape[-1]
        state = {name: p.init_state(x) for name, p in self.pop.items()}
        s_h = x.new_zeros(x.shape[0], self.pop["hidden"].size)
        s_m = x.new_zeros(x.shape[0], self.memory.size)
        score = x.new_zeros(x.shape[0], self.pop["readout"].size)
        rec: dict = {name: [] for name in POPULATIONS}
        for t in range(steps):
            s_in, state["input"] = self.pop["input"](self.P(x[:, :, t]), state["input"])
            s_u, state["u"] = self.pop["u"](self.e_x(s_in) + self.e_h(s_h) + self.e_m(s_m), state["u"])
            s_m, state["memory"] = self.pop["memory"](self._memory_current(s_m, s_u), state["memory"])
            s_h, state["hidden"] = self.pop["hidden"](self.W_x(s_in) + self.W_h(s_h) + self.W_m(s_m), state["hidden"])
            s_out, state["readout"] = self.pop["readout"](self.R(s_h), state["readout"])
            if self.readout_mode == "membrane":
                score = score + _Population.membrane(state["readout"])
            else:
                score = score + s_out
            if record:
                for name, s in zip(POPULATIONS, (s_in, s_u, s_m, s_h, s_out)):
                    rec[name].append(s)
        if self.readout_mode == "membrane":
            score = score / steps
        spikes = {name: torch.stack(v, dim=1) for name, v in rec.items()} if record else {}
        return score, spikes

    def _memory_current(self, s_m: torch.Tensor, s_u: torch.Tensor) -> torch.Tensor:
        """Abar s_m[t-1] + g * (Bbar s_u): the Legendre memory with the u -> memory gain (see __init__)."""
        return torch.matmul(s_m, self.memory.A_block) + torch.matmul(s_u, self.memory.B_block * self.memory_gain)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # training: the same equations with fewer autograd nodes (_train_scores); evaluation, every exporter's
        # reference, and layers with hooks (torch's pruning computes a masked weight in one): run(), which calls them
        if self.training and torch.is_grad_enabled() and not self._hooked():
            return self._train_scores(x)
        return self.run(x)[0]

    def _hooked(self) -> bool:
        """True when a layer has hooks: _train_scores reads weights without calling the layers, so a weight that
        a forward pre-hook computes (torch.nn.utils.prune: weight_orig x mask) would be stale there."""
        return any(m._forward_pre_hooks or m._forward_hooks for m in self.modules() if isinstance(m, nn.Linear))

    def _train_scores(self, x: torch.Tensor) -> torch.Tensor:
        """run(x)[0] with about 1.5x fewer operations per time step, for training, where the graph is walked
        backwards too: the input population's current for all steps in one product, each population's synapses
        as one product over the concatenated spikes, the Legendre memory's Abar and gain x Bbar as one, the
        clamped decays once per window, and the score summed once. The sums run in another order (float32
        rounding, ~1e-7). tests/train/test_l2mu_train_path.py checks scores and gradients against run()."""
        steps, batch = x.shape[-1], x.shape[0]
        cur_in = torch.nn.functional.linear(x.transpose(1, 2), self.P.weight, self.P.bias)  # batch x T x input
        w_u = torch.cat([self.e_x.weight, self.e_h.weight, self.e_m.weight], 1)
        w_h = torch.cat([self.W_x.weight, self.W_h.weight, self.W_m.weight], 1)
        w_m = torch.cat([self.memory.A_block, self.memory.B_block * self.memory_gain], 0)
        pops = {name: p.train_constants() for name, p in self.pop.items()}
        state = {name: p.init_state(x) for name, p in self.pop.items()}
        s_h = x.new_zeros(batch, self.pop["hidden"].size)
        s_m = x.new_zeros(batch, self.memory.size)
        scores = []
        for t in range(steps):
            s_in = _Population.fast_step(pops["input"], cur_in[:, t], state, "input")
            s_u = _Population.fast_step(pops["u"], torch.addmm(self.e_x.bias, torch.cat([s_in, s_h, s_m], 1), w_u.t()),
                                        state, "u")
            s_m = _Population.fast_step(pops["memory"], torch.cat([s_m, s_u], 1) @ w_m, state, "memory")
            s_h = _Population.fast_step(pops["hidden"], torch.addmm(self.W_x.bias, torch.cat([s_in, s_h, s_m], 1),
                                                                    w_h.t()), state, "hidden")
            s_out = _Population.fast_step(pops["readout"], torch.nn.functional.linear(s_h, self.R.weight, self.R.bias),
                                          state, "readout")
            scores.append(_Population.membrane(state["readout"]) if self.readout_mode == "membrane" else s_out)
        score = torch.stack(scores).sum(0)
        return score / steps if self.readout_mode == "membrane" else score

    def export_module(self, fold_state: bool = True, runtime: str | None = None) -> nn.Module:
        """An inference-only twin with the same forward and the fewest graph nodes (see _LeanL2MU);
        fold_state=False keeps leak and reset out of the products (the source of INT8 files). For onnxruntime
        the window is the wavefront form (train/onnx_window.py: 1.8x faster there; slower under LiteRT); for
        LiteRT (runtime="tflite") the LIF's spikes are ops XNNPACK runs (_LeanL2MU._spike)."""
        from edgebench.train.l2mu_lean import _LeanL2MU

        lean = _LeanL2MU(self, fold_state, spikes=self._spikes_for(runtime)).eval()
        if runtime == "onnx" and fold_state and self.readout_mode == "membrane":
            from edgebench.train.onnx_window import WavefrontL2MU

            return WavefrontL2MU(lean).eval()
        return lean

    def step_module(self, fold_state: bool = True, runtime: str | None = None) -> nn.Module:
        """The streaming step model (see _L2MUStep): explicit state in and out, one time step per call.
        fold_state=False keeps leak and reset out of the weight matrices (elementwise float ops), so INT8
        weights quantize only synapses and the decays stay exact. runtime="tflite": spikes as in export_module."""
        from edgebench.train.l2mu_lean import _L2MUStep, _LeanL2MU

        return _L2MUStep(_LeanL2MU(self, fold_state, spikes=self._spikes_for(runtime))).eval()

    def _spikes_for(self, runtime: str | None) -> str:
        """The spike ops of the exported graph (_LeanL2MU._spike). LiteRT's LIF: "relu6", which makes the whole
        window one XNNPACK partition (BasicMotions, one thread: invoke 0.223 -> 0.188 ms). Not the CuBa's: its
        window stayed ~one partition a step and ran slower (0.65 -> 0.94 ms, measured), so Greater and Cast."""
        return "relu6" if runtime == "tflite" and self.pop["input"].neuron == "lif" else "compare"

    @torch.no_grad()
    def spike_record(self, x: torch.Tensor) -> dict:
        """Spikes of every population (batch x time x neurons), for neuromorphic metrics."""
        return self.run(x, record=True)[1]

    def synapses(self) -> list[tuple[str, torch.Tensor]]:
        """(source population, weight out x in) for every weight matrix; 'x' is the raw, non-spiking input.

        The memory's Abar and Bbar act per u dimension, so they appear as block-diagonal matrices.
        """
        a_full, b_full = self.memory.A_block.t(), self.memory.B_block.t()  # (d, d), (d, memory_size)
        return [
            ("x", self.P.weight),
            ("input", self.e_x.weight), ("input", self.W_x.weight),
            ("u", b_full * self.memory_gain.detach()[:, None]),
            ("memory", a_full), ("memory", self.e_m.weight), ("memory", self.W_m.weight),
            ("hidden", self.e_h.weight), ("hidden", self.W_h.weight), ("hidden", self.R.weight),
        ]


def build_l2mu(cfg: dict, dataset) -> L2MU:
    """Registry entry; model config keys are L2MU's keyword arguments."""
    from edgebench.train.registry import MODEL_KEYS

    kwargs = {k: cfg[k] for k in MODEL_KEYS["l2mu"] if k in cfg}
    kwargs.setdefault("theta", float(dataset.input_shape[-1]))
    return L2MU(in_channels=dataset.input_shape[0], num_classes=len(dataset.labels), **kwargs)


# Configs for BasicMotions (6 x 100, 40 train / 40 test), tuned to train in seconds on 2 CPU cores.
# theta = 100 steps: the Legendre memory spans the whole 10 s series; order 8 per u dimension.
_SIZES = {"hidden_size": 64, "memory_size": 4, "order": 8, "theta": 100.0}
_TRAIN = {"epochs": 20, "batch_size": 10, "lr": 1e-2, "seed": 0}
# LIF: memory_gain 0.5 (see L2MU.__init__) so the memory population fires (it stayed silent with the plain Bbar),
# and a gentler schedule (lr 5e-3, 30 epochs): at lr 1e-2 / 20 epochs the LIF net reached 0.55-1.0 test accuracy
# depending on the seed, with or without the gain.
BASICMOTIONS_CONFIG = {
    "lif": {"kind": "l2mu", "model": {**_SIZES, "input_size": 32, "neuron": "lif", "memory_gain": 0.5},
            "train": {**_TRAIN, "epochs": 30, "lr": 5e-3}},
    "cuba": {"kind": "l2mu", "model": {**_SIZES, "input_size": 32, "neuron": "cuba"}, "train": dict(_TRAIN)},
    "lmu": {"kind": "lmu", "model": dict(_SIZES), "train": dict(_TRAIN)},
}
