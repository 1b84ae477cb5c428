"""Flow heads (SimpleMLPAdaLN + sampler) against pocket-tts 4.0.1: LSD (english), pointwise (2m),
drifting (7m) and an OT flow-matching head, at temp 0 and on injected noise, several rows at once."""

from __future__ import annotations

import dataclasses
from functools import partial

import pytest
from _ggml_parity import REL_TOL, rel_err, weights_from_torch
from _reference import reference_model, require_reference

from pocket_ggml.format.config import load_released_config
from pocket_ggml.ggml_graphs.flow_lm import flow_head_sample
from pocket_ggml.ggml_graphs.mlp import simple_mlp_adaln
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner

ROWS = 3
CASES = [  # (config, decode steps)
    ("english", 1),
    ("english", 4),
    ("english_2m_2026-10", 1),
    ("english_7m_2026-10", 1),
]


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def _reference_decode(flow_type: str):
    from pocket_tts.models import flow_lm

    return {
        "lsd": flow_lm.lsd_decode,
        "flow_matching": flow_lm.ot_decode,
        "pointwise": flow_lm.pointwise_decode,
        "drifting": flow_lm.drifting_decode,
    }[flow_type]


def _check_sampler(backend, cfg, latent_dim: int, flow_net, w, steps: int, seed: int) -> None:
    torch = require_reference()
    gen = torch.Generator().manual_seed(seed)
    c = torch.randn(ROWS, cfg.cond_dim, generator=gen)
    runner = GraphRunner(backend)
    noises = (torch.zeros(ROWS, latent_dim), 0.3**0.5 * torch.randn(ROWS, latent_dim, generator=gen))
    for noise in noises:
        with torch.no_grad():
            ref = _reference_decode(cfg.flow_type)(partial(flow_net, c), noise, steps).numpy()

        def build(g):
            h, x = g.input("c", (ROWS, cfg.cond_dim)), g.input("noise", (ROWS, latent_dim))
            return {"x": flow_head_sample(g, w, cfg, h, x, steps)}

        out = runner.run(build, {"c": c.numpy(), "noise": noise.numpy()})["x"]
        assert rel_err(out, ref) <= REL_TOL, (cfg.flow_type, steps, float(noise.abs().max()))


@pytest.mark.parametrize(("config", "steps"), CASES)
def test_flow_head_sample_matches_reference(config, steps, backend):
    require_reference()
    pcfg = load_released_config(config)
    model = reference_model(config)
    w = weights_from_torch(backend, model, "flow_lm.flow_net.")
    _check_sampler(backend, pcfg.flow_lm, pcfg.mimi.latent_dim, model.flow_lm.flow_net, w, steps, seed=5)


def test_lsd_flow_net_velocity_matches_reference(backend):
    """One SimpleMLPAdaLN call with distinct s and t per embedder (the unbiased-variance RMSNorm)."""
    torch = require_reference()
    pcfg = load_released_config("english")
    cfg, latent_dim = pcfg.flow_lm, pcfg.mimi.latent_dim
    model = reference_model("english")
    w = weights_from_torch(backend, model, "flow_lm.flow_net.")
    gen = torch.Generator().manual_seed(6)
    c, x = torch.randn(ROWS, cfg.cond_dim, generator=gen), torch.randn(ROWS, latent_dim, generator=gen)
    s, t = 0.25, 0.625
    with torch.no_grad():
        ref = model.flow_lm.flow_net(c, torch.full((ROWS, 1), s), torch.full((ROWS, 1), t), x).numpy()

    def build(g):
        h, xi = g.input("c", (ROWS, cfg.cond_dim)), g.input("x", (ROWS, latent_dim))
        return {"v": simple_mlp_adaln(g, w, cfg, latent_dim, h, (s, t), xi)}

    out = GraphRunner(backend).run(build, {"c": c.numpy(), "x": x.numpy()})["v"]
    assert rel_err(out, ref) <= REL_TOL


@pytest.mark.parametrize("steps", [1, 3])
def test_flow_matching_head_matches_reference(steps, backend):
    """No released config uses type flow_matching (one time condition, Euler steps): build one."""
    torch = require_reference()
    from pocket_tts.modules.mlp import SimpleMLPAdaLN

    pcfg = load_released_config("english_2m_2026-10")
    cfg = dataclasses.replace(pcfg.flow_lm, flow_type="flow_matching")
    latent_dim = pcfg.mimi.latent_dim
    torch.manual_seed(7)
    net = SimpleMLPAdaLN(latent_dim, cfg.flow_dim, latent_dim, cfg.cond_dim, cfg.flow_depth, num_time_conds=1)
    with torch.no_grad():
        for p in net.parameters():  # perturb the default init (unit norms, zero biases)
            p.add_(0.05 * torch.randn_like(p))
    net.eval()
    holder = torch.nn.Module()
    holder.flow_lm = torch.nn.Module()
    holder.flow_lm.flow_net = net
    w = weights_from_torch(backend, holder, "flow_lm.flow_net.")
    _check_sampler(backend, cfg, latent_dim, net, w, steps, seed=8)
