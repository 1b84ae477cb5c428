"""SEANet decoder (streaming) and encoder graphs against pocket-tts 4.0.1, teacher-forced: the
reference's StreamingConv1d / StreamingConvTranspose1d modules and ours get the same inputs."""

from __future__ import annotations

import ctypes

import ggml
import numpy as np
import pytest
from _ggml_parity import REL_TOL, rel_err, weights_from_torch
from _reference import reference_model, require_reference

from pocket_ggml.format.config import load_released_config
from pocket_ggml.format.names import from_released, to_stored_layout
from pocket_ggml.ggml_binding import quantize_rows
from pocket_ggml.ggml_graphs.seanet import (
    elu,
    seanet_decoder,
    seanet_decoder_plan,
    seanet_encoder,
    seanet_encoder_plan,
    seanet_state_shapes,
)
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, RawTensor, StateStore, WeightStore

CONFIGS = ["english", "english_2m_2026-10"]  # 512-d / 64 filters / k7 and 128-d / 24 filters / k3
N_FRAMES = 6
MIN_SNR_DB = 60.0  # F32 audio over all frames (measured ~118 dB english, ~128 dB 2m)
# Non-F32 kernels (english), measured 58.5 dB for F16 and 29.3 dB for Q8_0, in line with
# quantization-study.md (F16 60 dB, SEANet Q8_0 ~31 dB on the whole pipeline): the types run through
# the same graphs, with the precision the type allows.
MIN_SNR_DB_F16 = 50.0
MIN_SNR_DB_Q8_0 = 25.0


@pytest.fixture(scope="module")
def backend():
    be = CpuBackend(n_threads=1)
    yield be
    be.close()


def snr_db(ours: np.ndarray, ref: np.ndarray) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(10 * np.log10(np.sum(ref**2) / np.sum((np.asarray(ours, dtype=np.float64) - ref) ** 2)))


def _torch_state(ref_state, name: str) -> np.ndarray:
    """A reference state tensor (1, C, steps) in our layout (steps, C)."""
    module, key = name.rsplit(".", 1)
    return ref_state[module][key][0].numpy().T


def _decode(backend, config: str, weights: WeightStore):
    """N_FRAMES streaming calls of our SEANet decoder and of the reference's: (ours, refs, states)."""
    torch = require_reference()
    from pocket_tts.modules.stateful_module import init_states

    cfg = load_released_config(config).mimi
    model = reference_model(config)
    shapes = seanet_state_shapes(seanet_decoder_plan(cfg.decoder_seanet))
    state = StateStore(backend, shapes)
    ref_state = init_states(model.mimi, batch_size=1, sequence_length=N_FRAMES * cfg.resample_stride)
    runner = GraphRunner(backend)
    gen = torch.Generator().manual_seed(0)
    ours, refs = [], []
    for _ in range(N_FRAMES):
        x = torch.randn(1, cfg.decoder_seanet.dimension, cfg.resample_stride, generator=gen)
        with torch.no_grad():
            refs.append(model.mimi.decoder(x, ref_state)[0, 0].numpy())

        def build(g):
            xi = g.input("x", (cfg.resample_stride, cfg.decoder_seanet.dimension))
            return {"audio": seanet_decoder(g, weights, cfg.decoder_seanet, xi, state)}

        ours.append(runner.run(build, {"x": x[0].numpy().T})["audio"].reshape(-1))
    return ours, refs, {n: (state.get(n), _torch_state(ref_state, n)) for n in shapes}


@pytest.mark.parametrize("config", CONFIGS)
def test_seanet_decoder_streams_like_reference_f32(backend, config):
    weights = weights_from_torch(backend, reference_model(config), "mimi.decoder.")
    ours, refs, states = _decode(backend, config, weights)
    frame = load_released_config(config).mimi.frame_size
    for i, (o, r) in enumerate(zip(ours, refs)):
        assert o.shape == r.shape == (frame,)
        assert rel_err(o, r) <= REL_TOL, f"frame {i}: {rel_err(o, r):.2e}"
    assert snr_db(np.concatenate(ours), np.concatenate(refs)) >= MIN_SNR_DB
    for name, (o, r) in states.items():  # conv histories and transposed-conv partials after the last frame
        assert rel_err(o, r) <= REL_TOL, f"{name}: {rel_err(o, r):.2e}"


def _kernels_as(model, qtype: str) -> dict[str, np.ndarray | RawTensor]:
    """Decoder tensors with every conv kernel (a matrix as stored) in F16 or Q8_0, the rest F32."""
    from gguf import GGMLQuantizationType

    arrays: dict[str, np.ndarray | RawTensor] = {}
    for name, t in model.state_dict().items():
        if not name.startswith("mimi.decoder."):
            continue
        row = from_released(name)
        a = np.ascontiguousarray(to_stored_layout(t.float().numpy(), row.rule.layout))
        if a.ndim == 2 and qtype == "F16":
            arrays[row.gguf] = a.astype(np.float16)
        elif a.ndim == 2:
            q = GGMLQuantizationType.Q8_0
            arrays[row.gguf] = RawTensor(int(q), a.shape, quantize_rows(a, q).reshape(-1))
        else:
            arrays[row.gguf] = a
    return arrays


@pytest.mark.parametrize(("qtype", "min_snr"), [("F16", MIN_SNR_DB_F16), ("Q8_0", MIN_SNR_DB_Q8_0)])
def test_seanet_decoder_runs_f16_and_quantized_kernels(backend, qtype, min_snr):
    config = "english"  # the 2m decoder has rows of 48*3, not a whole number of Q8_0 blocks
    weights = WeightStore.from_arrays(backend, _kernels_as(reference_model(config), qtype))
    ours, refs, _ = _decode(backend, config, weights)
    assert snr_db(np.concatenate(ours), np.concatenate(refs)) >= min_snr


def _addr(t) -> int:
    return ctypes.addressof(t.contents)


def test_state_writes_run_after_every_read_of_the_old_state(backend):
    """ggml runs nodes in graph order: each state's write must come after every node reading it."""
    cfg = load_released_config("english_2m_2026-10").mimi
    weights = weights_from_torch(backend, reference_model("english_2m_2026-10"), "mimi.decoder.")
    state = StateStore(backend, seanet_state_shapes(seanet_decoder_plan(cfg.decoder_seanet)))
    states = {_addr(state[n]): n for n in state}
    found: dict[str, tuple[list[int], list[int]]] = {n: ([], []) for n in state}

    def build(g):
        y = seanet_decoder(g, weights, cfg.decoder_seanet, g.input("x", (16, cfg.decoder_seanet.dimension)), state)
        g.expand(y)
        for i in range(ggml.ggml_graph_n_nodes(g.cgraph)):
            node = ggml.ggml_graph_node(g.cgraph, i).contents
            if node.op == ggml.GGML_OP_CPY and node.view_src and _addr(node.view_src) in states:
                found[states[_addr(node.view_src)]][1].append(i)
                continue
            for src in node.src:
                if src and _addr(src) in states:
                    found[states[_addr(src)]][0].append(i)
        return {"y": y}

    GraphRunner(backend).run(build, {"x": np.zeros((16, cfg.decoder_seanet.dimension), np.float32)})
    for name, (reads, writes) in found.items():
        assert len(writes) == 1 and reads, (name, reads, writes)
        assert max(reads) < writes[0], (name, reads, writes)


def _audio(seconds_frames: int, frame: int) -> np.ndarray:
    """A deterministic speech-sized test signal: a chirp, a few harmonics and noise."""
    t = np.arange(seconds_frames * frame) / 24000.0
    rng = np.random.default_rng(7)
    x = 0.2 * np.sin(2 * np.pi * (110 + 400 * t) * t) + 0.05 * np.sin(2 * np.pi * 1700 * t)
    return (x + 0.02 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.mark.parametrize("config", CONFIGS)
def test_seanet_encoder_matches_reference_f32(backend, config):
    torch = require_reference()
    cfg = load_released_config(config).mimi
    model = reference_model(config)
    weights = weights_from_torch(backend, model, "mimi.encoder.")
    audio = _audio(12, cfg.frame_size)  # 0.96 s
    with torch.no_grad():
        ref = model.mimi.encoder(torch.from_numpy(audio)[None, None], model_state=None)[0].numpy().T

    def build(g):
        return {"emb": seanet_encoder(g, weights, cfg.encoder_seanet, g.input("audio", (audio.size, 1)))}

    ours = GraphRunner(backend).run(build, {"audio": audio[:, None]})["emb"]
    assert ours.shape == ref.shape == (audio.size // cfg.encoder_seanet.hop_length, cfg.encoder_seanet.dimension)
    assert rel_err(ours, ref) <= REL_TOL


def test_seanet_encoder_in_chunks_equals_whole_clip(backend):
    """With state, consecutive chunks give the non-streaming result (zero history at the start)."""
    config = "english_2m_2026-10"
    cfg = load_released_config(config).mimi
    weights = weights_from_torch(backend, reference_model(config), "mimi.encoder.")
    audio = _audio(4, cfg.frame_size)
    runner = GraphRunner(backend)
    state = StateStore(backend, seanet_state_shapes(seanet_encoder_plan(cfg.encoder_seanet)))

    def encode(chunk: np.ndarray, st) -> np.ndarray:
        def build(g):
            return {"emb": seanet_encoder(g, weights, cfg.encoder_seanet, g.input("a", (chunk.size, 1)), st)}

        return runner.run(build, {"a": chunk[:, None]})["emb"]

    whole = encode(audio, None)
    half = audio.size // 2
    chunks = np.concatenate([encode(audio[:half], state), encode(audio[half:], state)])
    assert rel_err(chunks, whole) <= 1e-6


def test_misshaped_inputs_are_rejected_before_ggml(backend):
    cfg = load_released_config("english_2m_2026-10").mimi
    weights = weights_from_torch(backend, reference_model("english_2m_2026-10"), "mimi.")
    state = StateStore(backend, seanet_state_shapes(seanet_decoder_plan(cfg.decoder_seanet)))
    runner = GraphRunner(backend)
    wrong_width = np.zeros((16, cfg.decoder_seanet.dimension + 1), np.float32)
    with pytest.raises(ValueError, match="C="):
        runner.run(
            lambda g: {"y": seanet_decoder(g, weights, cfg.decoder_seanet, g.input("x", wrong_width.shape), state)},
            {"x": wrong_width},
        )
    odd_length = np.zeros((cfg.frame_size + 1, 1), np.float32)
    with pytest.raises(ValueError, match="hop length"):
        runner.run(
            lambda g: {"y": seanet_encoder(g, weights, cfg.encoder_seanet, g.input("a", odd_length.shape))},
            {"a": odd_length},
        )


def test_elu_matches_expm1(backend):
    """`elu` (the exponential from ggml's SiLU) against float64 ELU, over the values SEANet sees and
    the edges: underflow of e^x, zero and the tiny negatives the -1e-30 guard clamps."""
    x = np.concatenate(
        [np.linspace(-30, 10, 40001), [-1e-30, -1e-38, -0.0, 0.0, 1e-38, -88.0, -104.0, -1e30, 1e30]]
    ).astype(np.float32)

    def build(g):
        return {"y": elu(g, g.input("x", (1, x.size)))}

    y = GraphRunner(backend).run(build, {"x": x.reshape(1, -1)})["y"].ravel()
    x64 = x.astype(np.float64)
    exact = np.where(x64 > 0, x64, np.expm1(np.minimum(x64, 0)))
    assert np.all(np.isfinite(y))
    # error relative to max(1, |ELU|): absolute where |ELU| <= 1 (measured 3.0e-7; libm's expm1f 6e-8)
    assert np.max(np.abs(y - exact) / np.maximum(1.0, np.abs(exact))) <= 5e-7
