"""The Mimi codec at run time: streaming latents -> audio, and voice-prompt audio -> latents.

`MimiDecoder` mirrors the reference's Mimi thread (`TTSModel._decode_audio_worker` +
`MimiModel.decode_from_latent`) in two graphs per call: `first_half` (denormalisation, the quantizer
projection, the x16 upsample, the first half of the decoder transformer's layers) and `second_half`
(its other layers, then the SEANet decoder), which a stream runs on two threads. Its state (conv
histories, transposed-conv partials, ring KV caches sized for the context window) is allocated once,
so memory does not grow with the audio length.

`MimiEncoder` mirrors `MimiModel.encode_to_latent` (the reference runs it without state over the whole
prompt). We run it in chunks of `ENCODER_CHUNK_FRAMES` frames with streaming state instead: the SEANet
convs carry their history, the transformer a ring KV cache over its causal window, and the downsample
the last 200 Hz steps. Every output step sees exactly the inputs it sees in the reference, so the result
is the same (up to summation order) while memory stays bounded for any prompt length: in one graph a
30 s prompt would need a 6000 x 6000 attention mask (72 MB at F16) and ~1.3 GB of activations. No
length cap is applied (the reference's optional 30 s `truncate` is off by default).
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass
from typing import Literal, overload

import numpy as np

from pocket_ggml.errors import AudioError, LatentError, VoiceCloningUnavailable
from pocket_ggml.format.config import PocketConfig
from pocket_ggml.format.ggml_types import K_QUANTS
from pocket_ggml.format.names import expected_tensors
from pocket_ggml.ggml_binding import (
    GGML_TYPE_F16,
    GGML_TYPE_F32,
    Tensor,
    as_f16,
    dequantize,
    ggml,
    has_llamafile,
)
from pocket_ggml.ggml_graphs.attention import AttentionPlan, attention_arrays, attention_inputs
from pocket_ggml.ggml_graphs.conv import (
    channel_fast_kernel,
    channel_fast_kernel_tr,
    conv1d_history,
    streaming_conv1d,
    time_slice,
)
from pocket_ggml.ggml_graphs.graph import Graph
from pocket_ggml.ggml_graphs.mimi_resample import (
    DOWNSAMPLE,
    conv_downsample,
    conv_tr_upsample,
    conv_tr_upsample_state_shapes,
    quantizer_output_proj,
)
from pocket_ggml.ggml_graphs.nn import gguf_name, weight
from pocket_ggml.ggml_graphs.seanet import (
    channel_fast_name,
    has_channel_fast_form,
    seanet_convs,
    seanet_decoder,
    seanet_decoder_plan,
    seanet_encoder,
    seanet_encoder_plan,
    seanet_state_shapes,
)
from pocket_ggml.ggml_graphs.transformer import TransformerShape, projected_transformer
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, RawTensor, StateStore, WeightStore
from pocket_ggml.runtime.kv_cache import KVCache, kv_cache_specs, layer_caches

DECODER_TRANSFORMER = "decoder_transformer"  # module names under MimiModel (weights and KV state)
ENCODER_TRANSFORMER = "encoder_transformer"
FADE_IN_MS = 5  # the first chunk of a stream fades in over its first 5 ms, as the reference's does
# Prompt frames per encoder graph: its activations add to the peak memory of a process that clones a
# voice, and longer chunks are hardly faster.
ENCODER_CHUNK_FRAMES = 2


def channel_fast_copies(
    weights: WeightStore, plan: tuple, *, from_quantized: bool
) -> dict[str, np.ndarray | RawTensor]:
    """Channel-fast copies of a SEANet plan's kernels (conv.py: no im2col, col2im or transposes) that
    `weights` lacks: F32/F16 convs and transposed convs of any type; with `from_quantized`, also convs
    in a block type, dequantized to F16 (a block's rows cannot be reordered in place)."""
    copies: dict[str, np.ndarray | RawTensor] = {}
    for conv in seanet_convs(plan):
        name, source = channel_fast_name(conv), gguf_name(conv.weight_names[0])
        if name in weights or not has_channel_fast_form(conv):
            continue
        shape, ggml_type = weights.shape(source), weights.ggml_type(source)
        if conv.transposed:
            kernel = channel_fast_kernel_tr(weights.get(source).reshape(shape[0], -1), conv.kernel)
            copies[name] = kernel if kernel.dtype != np.uint8 else RawTensor(ggml_type, shape, kernel)
        elif ggml_type in (GGML_TYPE_F32, GGML_TYPE_F16):
            copies[name] = channel_fast_kernel(weights.get(source), conv.kernel)
        elif from_quantized:
            values = as_f16(dequantize(weights.get(source), ggml_type, shape))
            copies[name] = channel_fast_kernel(values, conv.kernel)
    return copies


def prepare_decoder_weights(cfg: PocketConfig, weights: WeightStore, backend: CpuBackend) -> None:
    """Add the copies the decoder runs faster with (once per store; the originals stay, unread):

    - channel-fast SEANet kernels (`channel_fast_copies`);
    - with LLAMAFILE, F16 for K-quant matrices of the decoder transformer: it multiplies 16 rows per
      frame, where llamafile's F16 kernel beats ggml's K-quant one (llamafile has none for K-quants).
      F16 holds a K-quant's values to 2^-11: far below the quantization error.
    """
    copies = channel_fast_copies(weights, seanet_decoder_plan(cfg.mimi.decoder_seanet), from_quantized=False)
    if has_llamafile():
        for name in expected_tensors(cfg, with_encoder=False):
            gguf = gguf_name(name)
            ggml_type = weights.ggml_type(gguf)
            if name.startswith(f"mimi.{DECODER_TRANSFORMER}.") and ggml_type in K_QUANTS:
                copies[gguf] = as_f16(dequantize(weights.get(gguf), ggml_type, weights.shape(gguf)))
    weights.put(backend, copies)


@dataclass(frozen=True)
class MimiHidden:
    """What `MimiDecoder.first_half` hands to `second_half`: the decoder transformer's steps after its
    first layers, (steps, d_model) float32, and the attention plan the remaining layers use for them
    (made when the steps entered the transformer: a pipelined `first_half` may have moved on)."""

    steps: np.ndarray
    plan: AttentionPlan


class MimiDecoder:
    """Streaming Mimi decoder: FlowLM latents -> 24 kHz audio, up to `max_frames_per_call` frames a call.

    As in the reference, the first call of a stream (after construction or `reset()`) fades its first
    5 ms in linearly from 0: a fresh decoder state starts with a small click.
    """

    def __init__(
        self, cfg: PocketConfig, weights: WeightStore, backend: CpuBackend, max_frames_per_call: int = 1
    ) -> None:
        if max_frames_per_call < 1:
            raise ValueError(f"max_frames_per_call must be positive, got {max_frames_per_call}")
        m = cfg.mimi
        self.cfg = cfg
        self.max_frames_per_call = max_frames_per_call
        self.frame_size = m.frame_size
        prepare_decoder_weights(cfg, weights, backend)
        self._weights = weights
        shape = TransformerShape.for_mimi(m.decoder_transformer)
        context = m.decoder_transformer.context
        capacity = KVCache.ring_capacity(context, m.resample_stride * max_frames_per_call)
        self.state = StateStore(
            backend,
            {
                **conv_tr_upsample_state_shapes(m),
                **seanet_state_shapes(seanet_decoder_plan(m.decoder_seanet)),
                **kv_cache_specs(DECODER_TRANSFORMER, shape, capacity),
            },
        )
        self._caches = layer_caches(self.state, DECODER_TRANSFORMER, shape)
        self._kv = KVCache(capacity, context)
        self._width = shape.d_model
        # The decoder transformer's layers are split between the halves so that both cost about the
        # same beside a FlowLM step (the first half's thread also runs the FlowLM): first_half runs
        # ceil(n/2) layers (all of a 1-layer transformer), second_half the rest before the SEANet.
        split = shape.num_layers - shape.num_layers // 2
        self._first_layers, self._second_layers = range(split), range(split, shape.num_layers)
        # the first half runs on a backend of its own: it may run beside the second
        self._transformer_backend = CpuBackend(backend.n_threads)
        self._transformer_runner = GraphRunner(self._transformer_backend)
        self._seanet_runner = GraphRunner(backend)
        # torch.linspace(0, 1, n), as the reference's fade; 1 ulp from it at most
        self._fade_in = np.linspace(0.0, 1.0, m.sample_rate * FADE_IN_MS // 1000, dtype=np.float32)
        self._fade_pending = True

    def reset(self) -> None:
        """Back to the start of a stream: zero state, position 0, fade-in on the next call."""
        self.state.reset()
        self._kv.reset()
        self._fade_pending = True

    @overload
    def decode(self, latents: np.ndarray, stages: Literal[False] = False) -> np.ndarray: ...
    @overload
    def decode(self, latents: np.ndarray, stages: Literal[True]) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...

    def decode(
        self, latents: np.ndarray, stages: bool = False
    ) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Normalised latents (n_frames, latent_dim) -> n_frames * frame_size float32 samples:
        `first_half` then `second_half`.

        With `stages`, also the intermediates named as in the reference dump, each in the layout of one
        reference call without the batch axis: mimi_dec_latent_in (n, latent_dim), mimi_dec_quantizer_out
        (C, n), mimi_dec_upsample_out / mimi_dec_transformer_out (C, 16n), mimi_dec_seanet_out (samples,
        before the fade-in).
        """
        x = self._check(latents)
        if not stages:
            return self.second_half(self.first_half(x))
        first = self._run_first_half(x, stages=True)
        second = self._run_second_half(first["hidden"], stages=True)
        raw = second["audio"]
        audio = self._faded(raw.copy())
        n_frames, m = x.shape[0], self.cfg.mimi
        return audio, {
            "mimi_dec_latent_in": first["latent_in"].reshape(n_frames, m.latent_dim),
            "mimi_dec_quantizer_out": np.ascontiguousarray(first["quantizer_out"].reshape(n_frames, -1).T),
            "mimi_dec_upsample_out": np.ascontiguousarray(first["upsample_out"].T),
            "mimi_dec_transformer_out": np.ascontiguousarray(second["transformer_out"].T),
            "mimi_dec_seanet_out": raw,
        }

    def first_half(self, latents: np.ndarray) -> MimiHidden:
        """First half of `decode`: denormalisation, quantizer projection, upsample and the decoder
        transformer's first layers -> the input of `second_half`. The two halves keep separate state
        and graphs, so a stream can run them on two threads (each half in order)."""
        return self._run_first_half(self._check(latents), stages=False)["hidden"]

    def second_half(self, hidden: MimiHidden) -> np.ndarray:
        """Second half of `decode`: the decoder transformer's other layers and the SEANet decoder over
        `first_half`'s output -> audio samples."""
        return self._faded(self._run_second_half(hidden, stages=False)["audio"])

    def _run_first_half(self, x: np.ndarray, stages: bool) -> dict:
        m = self.cfg.mimi
        steps = m.resample_stride * x.shape[0]
        # Attention always reads the whole ring, so every call of n frames has the same graph.
        plan = self._kv.plan(steps, min_keys=self._kv.capacity)
        w = self._weights

        def build(g: Graph) -> dict[str, Tensor]:
            ctx = g.ctx
            std = weight(w, "flow_lm.emb_std", (m.latent_dim,))
            mean = weight(w, "flow_lm.emb_mean", (m.latent_dim,))
            z = ggml.ggml_add(ctx, ggml.ggml_mul(ctx, g.input("latents", x.shape), std), mean)
            q = quantizer_output_proj(g, w, m, z)
            up = conv_tr_upsample(g, w, m, q, self.state)
            attn = attention_inputs(g, plan, "attn", feed=False)
            (y,) = projected_transformer(
                g,
                w,
                f"mimi.{DECODER_TRANSFORMER}",
                up,
                m.decoder_transformer,
                attn,
                self._caches,
                layers=self._first_layers,
            )
            return {"steps": y, **({"latent_in": z, "quantizer_out": q, "upsample_out": up} if stages else {})}

        key = None if stages else x.shape[0]
        out = self._transformer_runner.run(build, {"latents": x, **attention_arrays(plan, "attn")}, key=key)
        self._kv.advance(steps)
        out["hidden"] = MimiHidden(out.pop("steps"), plan)
        return out

    def _run_second_half(self, hidden: MimiHidden, stages: bool) -> dict[str, np.ndarray]:
        m = self.cfg.mimi
        if not isinstance(hidden, MimiHidden):
            raise LatentError(f"second_half takes what first_half returns (a MimiHidden), got {type(hidden).__name__}")
        a, plan = np.asarray(hidden.steps), hidden.plan
        max_steps = m.resample_stride * self.max_frames_per_call
        if a.dtype.kind != "f" or a.ndim != 2 or a.shape[1] != self._width or not 1 <= a.shape[0] <= max_steps:
            raise LatentError(
                f"the decoder transformer's steps must be float (steps <= {max_steps}, {self._width}) as "
                f"`first_half` returns, got {a.dtype} {a.shape}"
            )
        if not np.isfinite(a).all():
            raise LatentError("the decoder transformer's steps hold NaN or infinite values")
        if not isinstance(plan, AttentionPlan) or plan.n_rows != a.shape[0] or plan.n_keys != self._kv.capacity:
            raise LatentError("the MimiHidden's attention plan does not fit its steps: pass first_half's result")
        steps = np.ascontiguousarray(a, dtype=np.float32)
        layers, inputs = self._second_layers, {"hidden": steps}
        if layers:
            inputs.update(attention_arrays(plan, "attn"))

        def build(g: Graph) -> dict[str, Tensor]:
            y = g.input("hidden", steps.shape)
            if layers:
                attn = attention_inputs(g, plan, "attn", feed=False)
                (y,) = projected_transformer(
                    g,
                    self._weights,
                    f"mimi.{DECODER_TRANSFORMER}",
                    y,
                    m.decoder_transformer,
                    attn,
                    self._caches,
                    layers,
                )
            audio = seanet_decoder(g, self._weights, m.decoder_seanet, y, self.state)
            return {"audio": audio, **({"transformer_out": y} if stages else {})}

        out = self._seanet_runner.run(build, inputs, key=None if stages else steps.shape[0])
        out["audio"] = out["audio"].reshape(-1)
        return out

    def _faded(self, audio: np.ndarray) -> np.ndarray:
        if self._fade_pending:
            n = min(self._fade_in.size, audio.size)
            audio[:n] *= self._fade_in[:n]
            self._fade_pending = False
        return audio

    def _check(self, latents: np.ndarray) -> np.ndarray:
        a = np.asarray(latents)
        dim = self.cfg.mimi.latent_dim
        if a.dtype.kind != "f" or a.ndim != 2 or a.shape[1] != dim:
            raise LatentError(f"latents must be a float array (n_frames, {dim}), got {a.dtype} {a.shape}")
        if not 1 <= a.shape[0] <= self.max_frames_per_call:
            raise LatentError(f"{a.shape[0]} frames given; this decoder takes 1 to {self.max_frames_per_call} a call")
        if not np.isfinite(a).all():
            raise LatentError("latents hold NaN or infinite values")
        return np.ascontiguousarray(a, dtype=np.float32)

    def close(self) -> None:
        self._transformer_runner.close()
        self._seanet_runner.close()
        self._transformer_backend.close()
        self.state.close()


class MimiEncoder:
    """Mimi encoder for voice prompts: prepared 24 kHz audio -> latents (T_latent, speaker_dim) at 12.5 Hz."""

    def __init__(
        self, cfg: PocketConfig, weights: WeightStore, backend: CpuBackend, source: str = "this model"
    ) -> None:
        encoder_tensors = set(expected_tensors(cfg, with_encoder=True)) - set(expected_tensors(cfg, with_encoder=False))
        if any(gguf_name(n) not in weights for n in encoder_tensors):
            raise VoiceCloningUnavailable(
                f"{source} has no Mimi encoder (made with --no-encoder): voice cloning needs a file with it"
            )
        m = cfg.mimi
        self.cfg = cfg
        self.frame_size = m.frame_size
        # channel-fast SEANet kernels, the quantized ones (Q8_0 in the quantized mixes) as F16: faster
        # encoding for a few MB. They live in a store of the encoder's own, so that
        # `close` gives them back: a process that clones a voice and then speaks has no use for them.
        plan = seanet_encoder_plan(m.encoder_seanet)
        self._copies = WeightStore.from_arrays(backend, channel_fast_copies(weights, plan, from_quantized=True))
        self._weights = ChainMap(self._copies, weights)
        self._base_weights = weights
        self._own_tensors = [gguf_name(n) for n in encoder_tensors]
        shape = TransformerShape.for_mimi(m.encoder_transformer)
        stride = m.resample_stride
        capacity = KVCache.ring_capacity(m.encoder_transformer.context, stride * ENCODER_CHUNK_FRAMES)
        self._downsample_state = f"{DOWNSAMPLE}.previous"
        self.state = StateStore(
            backend,
            {
                **seanet_state_shapes(plan),
                **kv_cache_specs(ENCODER_TRANSFORMER, shape, capacity),
                self._downsample_state: (conv1d_history(2 * stride, stride), m.encoder_seanet.dimension),
            },
        )
        self._caches = layer_caches(self.state, ENCODER_TRANSFORMER, shape)
        self._kv = KVCache(capacity, m.encoder_transformer.context)
        self._backend = backend

    @overload
    def encode(self, audio: np.ndarray, stages: Literal[False] = False) -> np.ndarray: ...
    @overload
    def encode(self, audio: np.ndarray, stages: Literal[True]) -> tuple[np.ndarray, dict[str, np.ndarray]]: ...

    def encode(self, audio: np.ndarray, stages: bool = False) -> np.ndarray | tuple[np.ndarray, dict[str, np.ndarray]]:
        """Prepared mono audio (a whole number of frames, e.g. from `prepare_voice_prompt`) -> latents.

        With `stages`, also voice_mimi_seanet_out / voice_mimi_transformer_out (C, steps at 200 Hz) and
        voice_mimi_latents (speaker_dim, T_latent), as in the reference dump without the batch axis.
        """
        wav = self._check(audio)
        self.state.reset()
        self._kv.reset()
        chunk = ENCODER_CHUNK_FRAMES * self.frame_size
        # a runner per prompt: its activation buffer is freed as soon as the prompt is encoded
        runner = GraphRunner(self._backend)
        try:
            outs = [
                self._encode_chunk(runner, wav[i : i + chunk], first=i == 0, stages=stages)
                for i in range(0, wav.size, chunk)
            ]
        finally:
            runner.close()
        latents = np.concatenate([o["latents"].reshape(-1, self.cfg.mimi.speaker_dim) for o in outs])
        if not stages:
            return latents
        return latents, {
            "voice_mimi_seanet_out": np.concatenate([o["seanet_out"] for o in outs]).T.copy(),
            "voice_mimi_transformer_out": np.concatenate([o["transformer_out"] for o in outs]).T.copy(),
            "voice_mimi_latents": latents.T.copy(),
        }

    def _encode_chunk(self, runner: GraphRunner, wav: np.ndarray, first: bool, stages: bool) -> dict[str, np.ndarray]:
        m = self.cfg.mimi
        w = self._weights
        steps = wav.size // m.encoder_seanet.hop_length
        plan = self._kv.plan(steps)
        stride = m.resample_stride
        previous = self.state[self._downsample_state]
        history = conv1d_history(2 * stride, stride)

        def build(g: Graph) -> dict[str, Tensor]:
            emb = seanet_encoder(g, w, m.encoder_seanet, g.input("audio", (wav.size, 1)), self.state)
            attn = attention_inputs(g, plan, "attn")
            (y,) = projected_transformer(
                g, w, f"mimi.{ENCODER_TRANSFORMER}", emb, m.encoder_transformer, attn, self._caches
            )
            if first:  # the reference pads the start by repeating the first step (pad_mode "replicate")
                latents = conv_downsample(g, w, m, y)
                g.expand(ggml.ggml_cpy(g.ctx, time_slice(g, y, steps - history, history), previous))
            else:
                kernel = weight(
                    w, f"mimi.{DOWNSAMPLE}.conv.weight", (m.speaker_dim, m.encoder_seanet.dimension * 2 * stride)
                )
                latents = streaming_conv1d(g, y, kernel, None, kernel_size=2 * stride, stride=stride, previous=previous)
            out = {"latents": latents}
            if stages:
                out |= {"seanet_out": emb, "transformer_out": y}
            return out

        out = runner.run(build, {"audio": wav[:, None]})
        self._kv.advance(steps)
        return out

    def _check(self, audio: np.ndarray) -> np.ndarray:
        a = np.asarray(audio)
        if a.dtype.kind != "f" or a.ndim != 1:
            raise AudioError(f"the encoder takes mono float audio (samples,), got {a.dtype} {a.shape}")
        if a.size == 0 or a.size % self.frame_size:
            raise AudioError(
                f"the encoder takes a whole, non-zero number of {self.frame_size}-sample frames, got {a.size} "
                "samples (prepare_voice_prompt pads to whole frames)"
            )
        if not np.isfinite(a).all():
            raise AudioError("the audio holds NaN or infinite samples")
        return np.ascontiguousarray(a, dtype=np.float32)

    def close(self) -> None:
        """Free the state and the kernel copies, and drop the pages of the encoder's weights that
        encoding read from the mapped file (the decoder never reads them)."""
        self.state.close()
        self._copies.close()
        self._base_weights.release_pages(self._own_tensors)
