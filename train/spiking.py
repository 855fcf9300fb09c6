"""Neuromorphic metrics as NeuroBench defines them (Yik et al., "NeuroBench", 2023/2025).

- activation sparsity: fraction of zero spikes over all spiking neurons and all time steps;
- synaptic operations (SynOps): accumulates triggered by spikes; each spike of a neuron costs one accumulate
  per outgoing (non-zero) synapse, i.e. spikes x fan-out of the weight layer it feeds; averaged per sample;
- effective MACs: the same count for connections whose input is real-valued (the raw-sample input layer):
  non-zero inputs x fan-out, multiply-accumulates rather than accumulates;
- dense MACs: every weight of every layer once per time step (what the same network costs as a dense RNN).

The model provides `spike_record(x) -> {population: batch x time x neurons}` and `synapses() -> [(source,
weight out x in)]`, where source is a population name or 'x' for the raw input (batch x channels x time).
"""
from __future__ import annotations

import numpy as np
import torch

SPIKING_METRICS_DEFINITION = (
    "NeuroBench: activation_sparsity = zero spikes / (spiking neurons x time steps); synops_per_sample = "
    "sum over spikes of the fan-out (non-zero outgoing weights) of the spiking neuron (accumulates); "
    "effective_macs_per_sample = the same for real-valued inputs (non-zero inputs x fan-out); "
    "dense_macs_per_sample = all weights x time steps (dense equivalent)"
)


@torch.no_grad()
def spiking_metrics(module: torch.nn.Module, x, batch_size: int = 256) -> dict:
    """Sparsity, SynOps, effective and dense MACs per sample on inputs x (N x channels x time)."""
    if not hasattr(module, "spike_record") or not hasattr(module, "synapses"):
        raise TypeError(f"{type(module).__name__} has no spike_record()/synapses(): not a spiking model")
    module.eval()
    x = np.asarray(x, dtype=np.float32)
    synapses = [(src, w.detach()) for src, w in module.synapses()]
    fanout = {i: (w != 0).sum(dim=0).to(torch.float64) for i, (_, w) in enumerate(synapses)}  # per input neuron
    steps = x.shape[-1]
    zeros = total = 0
    synops = eff_macs = 0.0
    spikes_by_pop: dict = {}
    neurons_by_pop: dict = {}
    for i in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[i:i + batch_size])
        rec = module.spike_record(xb)
        rec["x"] = xb.transpose(1, 2)  # batch x time x channels, like the populations
        for name, s in rec.items():
            if name == "x":
                continue
            zeros += int((s == 0).sum())
            total += s.numel()
            spikes_by_pop[name] = spikes_by_pop.get(name, 0.0) + float(s.sum())
            neurons_by_pop[name] = s.shape[-1]
        for k, (src, _) in enumerate(synapses):
            active = (rec[src] != 0).to(torch.float64).sum(dim=(0, 1))  # events per input neuron
            ops = float((active * fanout[k]).sum())
            if src == "x":
                eff_macs += ops
            else:
                synops += ops
    n = len(x)
    dense = float(sum(w.numel() for _, w in synapses)) * steps
    return {
        "activation_sparsity": zeros / max(total, 1),
        "synops_per_sample": synops / max(n, 1),
        "effective_macs_per_sample": eff_macs / max(n, 1),
        "dense_macs_per_sample": dense,
        "spike_rate_by_population": {p: spikes_by_pop[p] / (n * steps * neurons_by_pop[p]) for p in spikes_by_pop},
        "spikes_per_sample": sum(spikes_by_pop.values()) / max(n, 1),
        "neurons": int(sum(neurons_by_pop.values())),
        "time_steps": int(steps),
        "samples": int(n),
        "definition": SPIKING_METRICS_DEFINITION,
    }
