"""Legendre Memory Unit (Voelker, Kajic, Eliasmith, NeurIPS 2019): the memory and a non-spiking LMU classifier.

The memory m is a linear time-invariant system that keeps a sliding window of length theta (in time steps)
of its input u, projected onto the first `order` Legendre polynomials:

    continuous:  theta * dm/dt = A m + B u,   A_ij = (2i+1) * (-1 if i < j else (-1)^(i-j+1)),
                                              B_i  = (2i+1) * (-1)^i
    discrete:    m_t = Abar m_{t-1} + Bbar u_t      (zero-order hold, dt = 1 step)

Abar and Bbar are computed once at build time (matrix exponential) and stored as non-trainable buffers.
A cell step (the same equations the spiking L2MU uses, with f = tanh here):

    u_t = e_x x_t + e_h h_{t-1} + e_m m_{t-1}          (u has `memory_size` dimensions)
    m_t = Abar m_{t-1} + Bbar u_t                       (one Legendre memory of `order` per u dimension)
    h_t = f(W_x x_t + W_h h_{t-1} + W_m m_t)

Inputs are batch x channels x time; the time loop is a plain Python loop, unrolled when traced for export.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy.linalg import expm
from torch import nn


def legendre_ab(order: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Continuous-time (A, B) of the Legendre delay system for window `theta` (float64, order x order, order x 1)."""
    q = np.arange(order, dtype=np.float64)
    r = (2 * q + 1)[:, None] / theta
    i, j = np.meshgrid(q, q, indexing="ij")
    a = np.where(i < j, -1.0, (-1.0) ** (i - j + 1)) * r
    b = ((-1.0) ** q)[:, None] * r
    return a, b


def zoh(a: np.ndarray, b: np.ndarray, dt: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Zero-order-hold discretisation: expm([[A, B], [0, 0]] dt) = [[Abar, Bbar], [0, I]]."""
    n, k = a.shape[0], b.shape[1]
    block = np.zeros((n + k, n + k), dtype=np.float64)
    block[:n, :n] = a
    block[:n, n:] = b
    e = expm(block * dt)
    return e[:n, :n], e[:n, n:]


def discrete_legendre_ab(order: int, theta: float, dt: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(Abar, Bbar) as float32 tensors, shapes (order, order) and (order,)."""
    a, b = zoh(*legendre_ab(order, theta), dt)
    return torch.from_numpy(a.astype(np.float32)), torch.from_numpy(b[:, 0].astype(np.float32))


class LegendreMemory(nn.Module):
    """The fixed linear memory: m_t = Abar m_{t-1} + Bbar u_t, one memory per u dimension.

    m is kept flat (batch x memory_size*order); the per-dimension memories are applied as block-diagonal
    matrices kron(I, Abar) and kron(I, Bbar), two plain MatMuls per step in an exported graph.
    """

    def __init__(self, memory_size: int, order: int, theta: float):
        super().__init__()
        self.memory_size, self.order, self.theta = memory_size, order, float(theta)
        a, b = discrete_legendre_ab(order, theta)
        self.register_buffer("A", a)  # buffers: saved in checkpoints, never trained
        self.register_buffer("B", b)
        eye = torch.eye(memory_size)
        self.register_buffer("A_block", torch.kron(eye, a).t().contiguous(), persistent=False)  # (d, d), transposed
        self.register_buffer("B_block", torch.kron(eye, b.unsqueeze(0)), persistent=False)      # (memory_size, d)

    def forward(self, m_prev: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return torch.matmul(m_prev, self.A_block) + torch.matmul(u, self.B_block)

    @property
    def size(self) -> int:
        return self.memory_size * self.order


def lecun_uniform_(w: torch.Tensor) -> torch.Tensor:
    bound = math.sqrt(3.0 / w.shape[1])
    with torch.no_grad():
        return w.uniform_(-bound, bound)


class LMU(nn.Module):
    """Non-spiking LMU classifier: one LMU layer (f = tanh), a linear readout of the time-averaged hidden state
    (the same readout the L2MU uses on its readout membrane)."""

    def __init__(self, in_channels: int, num_classes: int, hidden_size: int = 64, memory_size: int = 4,
                 order: int = 8, theta: float = 100.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.memory = LegendreMemory(memory_size, order, theta)
        d = self.memory.size
        # encoders (-> u) and kernels (-> h); the Voelker et al. initialisation: LeCun-uniform e_x, zero e_h,
        # e_m, Xavier kernels
        self.e_x = nn.Linear(in_channels, memory_size)
        self.e_h = nn.Linear(hidden_size, memory_size, bias=False)
        self.e_m = nn.Linear(d, memory_size, bias=False)
        self.W_x = nn.Linear(in_channels, hidden_size)
        self.W_h = nn.Linear(hidden_size, hidden_size, bias=False)
        self.W_m = nn.Linear(d, hidden_size, bias=False)
        self.readout = nn.Linear(hidden_size, num_classes)
        lecun_uniform_(self.e_x.weight)
        nn.init.zeros_(self.e_h.weight)
        nn.init.zeros_(self.e_m.weight)
        for lin in (self.W_x, self.W_h, self.W_m):
            nn.init.xavier_normal_(lin.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, steps = x.shape
        h = x.new_zeros(batch, self.hidden_size)
        m = x.new_zeros(batch, self.memory.size)
        h_sum = x.new_zeros(batch, self.hidden_size)
        for t in range(steps):
            xt = x[:, :, t]
            u = self.e_x(xt) + self.e_h(h) + self.e_m(m)
            m = self.memory(m, u)
            h = torch.tanh(self.W_x(xt) + self.W_h(h) + self.W_m(m))
            h_sum = h_sum + h
        return self.readout(h_sum / steps)

    def export_module(self, fold_state: bool = True, runtime: str | None = None) -> nn.Module:
        """Inference twin with the fewest graph nodes (see _LeanLMU); exporters validate against this module.
        fold_state=False: u, Abar and Bbar as separate products (the source of INT8 files). For onnxruntime
        the window is one product per step (train/onnx_window.py: 1.3x faster there; slower under LiteRT)."""
        lean = _LeanLMU(self, fold_state).eval()
        if runtime == "onnx" and fold_state:
            from edgebench.train.onnx_window import FusedLMU

            return FusedLMU(lean).eval()
        return lean

    # Dynamic-range INT8 of the TFLite step model comes from the folded step (export.step.export_step): its one
    # folded product, the memory update (Abar's ~1 diagonal beside the encoders), is the first, which stays
    # float32 there (export.tflite_model.end_matmuls), so only the hidden update's weights are int8 and the file
    # has the fp32 file's 7 ops. From the unfolded step (10 ops): invoke 1.06x the fp32 file's, against 0.93x
    # (BasicMotions, one thread, 3 x 300 streamed windows interleaved); the same 40 windows right either way.
    int8_dynamic_tflite_step_folded = True

    def step_module(self, fold_state: bool = True) -> nn.Module:
        """The streaming step model (see _LMUStep); fold_state=False: u, Abar, Bbar as separate products."""
        return _LMUStep(_LeanLMU(self, fold_state)).eval()

    def dense_macs(self, steps: int) -> int:
        """Multiply-accumulates of all weight matrices (incl. Abar, Bbar) for one sample of `steps` steps."""
        per_step = sum(lin.weight.numel() for lin in (self.e_x, self.e_h, self.e_m, self.W_x, self.W_h, self.W_m))
        per_step += self.memory.memory_size * (self.memory.order ** 2 + self.memory.order)
        return per_step * steps + self.readout.weight.numel()


class _LeanLMU(nn.Module):
    """LMU.forward for export with two matrix products per step (frozen copy; LMU.export_module).

    u is linear, so it folds into the memory update, and the hidden update reads one concatenation:

        m' = [x, h, m] @ [e_x^T Bbar; e_h^T Bbar; e_m^T Bbar + Abar] + b_x Bbar
        h' = tanh([x, h, m'] @ [W_x; W_h; W_m]^T + b)

    (computed in float64, stored as float32). The sums run in another order than LMU.forward (~1e-7); the
    exporters validate against LMU itself. `step` is also the streaming step model's (LMU.step_module).
    """

    def __init__(self, m: LMU, fold_state: bool = True):
        super().__init__()
        self.hidden_size, self.d = m.hidden_size, m.memory.size
        self.fold_state = fold_state
        if not fold_state:  # for INT8 weights: u, Abar and Bbar as separate products (see step)
            e_w = torch.cat([lin.weight.detach() for lin in (m.e_x, m.e_h, m.e_m)], dim=1)
            for name, t in (("e_w", e_w), ("e_b", m.e_x.bias), ("A", m.memory.A_block), ("B", m.memory.B_block)):
                self.register_buffer(name, t.detach().to(torch.float32).contiguous())
        f64 = torch.float64
        a, b = m.memory.A_block.to(f64), m.memory.B_block.to(f64)           # m @ a, u @ b
        ex, eh, em = (lin.weight.detach().to(f64) for lin in (m.e_x, m.e_h, m.e_m))
        mem_w = torch.cat([ex.t() @ b, eh.t() @ b, em.t() @ b + a], dim=0).t()   # out d x in
        mem_b = m.e_x.bias.detach().to(f64) @ b
        hid_w = torch.cat([lin.weight.detach() for lin in (m.W_x, m.W_h, m.W_m)], dim=1)
        for name, t in (("mem_w", mem_w), ("mem_b", mem_b), ("hid_w", hid_w), ("hid_b", m.W_x.bias),
                        ("r_w", m.readout.weight), ("r_b", m.readout.bias)):
            self.register_buffer(name, t.detach().to(torch.float32).contiguous())

    def state_names(self) -> list:
        return ["h", "m"]

    def state_sizes(self) -> list:
        return [self.hidden_size, self.d]

    def step(self, x_t: torch.Tensor, h: torch.Tensor, m: torch.Tensor) -> tuple:
        if self.fold_state:
            m = F.linear(torch.cat([x_t, h, m], dim=1), self.mem_w, self.mem_b)
        else:
            # Quantized per output channel, the folded memory matrix (Abar's ~1 diagonal beside the encoders)
            # lost the Legendre memory over 100 steps (67 % top-1 agreement, INT8 dynamic, measured); Abar
            # and Bbar (0.01-0.11) keep their own scales here.
            u = F.linear(torch.cat([x_t, h, m], dim=1), self.e_w, self.e_b)
            m = torch.matmul(m, self.A) + torch.matmul(u, self.B)
        h = torch.tanh(F.linear(torch.cat([x_t, h, m], dim=1), self.hid_w, self.hid_b))
        return h, m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, steps = x.shape
        h = x.new_zeros(batch, self.hidden_size)
        m = x.new_zeros(batch, self.d)
        h_sum = None
        for t in range(steps):
            h, m = self.step(x[:, :, t], h, m)
            h_sum = h if h_sum is None else h_sum + h
        return F.linear(h_sum / steps, self.r_w, self.r_b)


class _LMUStep(nn.Module):
    """Streaming step model: forward(x_t, h, m, scores) -> (scores + readout(h'), h', m').

    The readout is linear, so after T steps from zero state and scores, scores/T is the window output."""

    def __init__(self, lean: _LeanLMU):
        super().__init__()
        self.lean = lean

    def input_names(self) -> list:
        return ["input", "h", "m", "scores"]

    def output_names(self) -> list:
        return ["output", "h_out", "m_out"]

    def state_sizes(self) -> list:
        return self.lean.state_sizes() + [self.lean.r_w.shape[0]]

    def forward(self, x_t, h, m, scores):
        h, m = self.lean.step(x_t, h, m)
        return scores + F.linear(h, self.lean.r_w, self.lean.r_b), h, m


def build_lmu(cfg: dict, dataset) -> LMU:
    """Registry entry: model config keys hidden_size, memory_size, order, theta."""
    channels = dataset.input_shape[0]
    return LMU(in_channels=channels, num_classes=len(dataset.labels),
               hidden_size=int(cfg.get("hidden_size", 64)), memory_size=int(cfg.get("memory_size", 4)),
               order=int(cfg.get("order", 8)), theta=float(cfg.get("theta", dataset.input_shape[-1])))
