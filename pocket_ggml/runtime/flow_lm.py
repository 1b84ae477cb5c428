"""The FlowLM at run time: weights, one persistent KV cache, and the three kinds of call.

Order of the sequence in the cache (one KV cache, continuous positions, RoPE offset = absolute
index): `[bos_before_voice | voice latents | text tokens | BOS latent, latent_1, latent_2, ...]`.
A voice state is the cache after the voice prompt (`snapshot()`); each text chunk starts from a
fresh copy of it (`restore()`), as the reference does.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from pocket_ggml.errors import GenerationError
from pocket_ggml.format.config import PocketConfig
from pocket_ggml.ggml_binding import GGML_TYPE_F16, GGML_TYPE_F32
from pocket_ggml.ggml_graphs.attention import ScoreTap, attention_arrays, attention_inputs
from pocket_ggml.ggml_graphs.flow_lm import (
    flow_lm_step,
    flow_lm_text_embeddings,
    flow_lm_voice_conditioning,
    replace_nan_with_bos,
)
from pocket_ggml.ggml_graphs.transformer import TransformerShape
from pocket_ggml.runtime.ggml_backend import CpuBackend, GraphRunner, StateStore, WeightStore
from pocket_ggml.runtime.kv_cache import KVCache, kv_cache_specs, layer_caches

CACHE_NAME = "lm"
STEP_KEYS = 32  # a step graph is kept for this many steps (see FlowLM._call)


@dataclass(frozen=True)
class FlowLMSnapshot:
    """The FlowLM cache after a prompt: K and V of its rows for every layer, (layers, rows, kv_dim)."""

    k: np.ndarray
    v: np.ndarray

    @property
    def n_rows(self) -> int:
        return int(self.k.shape[1])


@dataclass(frozen=True)
class TextAttention:
    """What a step also returns for word timestamps: the attention scores (q.k, before the scale and
    the softmax) of `heads`, (layer, head) pairs, over the cache rows `rows` (start, stop) of the text."""

    heads: tuple[tuple[int, int], ...]
    rows: tuple[int, int]

    def _by_layer(self) -> dict[int, tuple[int, ...]]:
        by_layer: dict[int, tuple[int, ...]] = {}
        for layer, head in self.heads:
            by_layer[layer] = (*by_layer.get(layer, ()), head)
        return by_layer

    def tap(self) -> ScoreTap:
        return ScoreTap(self._by_layer(), self.rows)

    @cached_property
    def tap_order(self) -> list[int]:
        """Row of the tap's output holding each of `heads` (read every step: computed once)."""
        tapped = [(layer, head) for layer, heads in self._by_layer().items() for head in heads]
        return [tapped.index(pair) for pair in self.heads]


@dataclass(frozen=True)
class FlowLMOutput:
    latent: np.ndarray  # (latent_dim,): the sampled next latent (normalised, as Mimi's input)
    eos_logit: float
    stages: dict[str, np.ndarray]  # intermediates, when asked for (parity tests)
    text_scores: np.ndarray | None = None  # (heads, text rows), in `TextAttention.heads` order, when asked for


class FlowLM:
    """One FlowLM generation context on a backend: cache capacity grows on demand."""

    def __init__(
        self,
        cfg: PocketConfig,
        weights: WeightStore,
        backend: CpuBackend,
        decode_steps: int = 1,
        prompt_threads: int | None = None,
        kv_type: int = GGML_TYPE_F32,
    ):
        """`prompt_threads`: threads for voice and text prompts (default: the backend's), which
        multiply many rows at once and scale with threads, unlike a single-row step. `kv_type`: the
        cache's type; F16 halves its memory and what each step reads from it, and rounds K and V to
        F16 (snapshots are F32 either way)."""
        if decode_steps < 1:
            raise GenerationError(f"lsd decode steps must be >= 1, got {decode_steps}")
        self.cfg = cfg
        self.weights = weights
        self.backend = backend
        self.decode_steps = decode_steps
        self.prompt_threads = prompt_threads or backend.n_threads
        self.kv_type = kv_type
        self.shape = TransformerShape.for_flow_lm(cfg.flow_lm)
        self.latent_dim = cfg.mimi.latent_dim
        self.bos_emb = weights.get("lm.bos_emb").astype(np.float32)
        self.runner = GraphRunner(backend)
        self._state: StateStore | None = None
        self.kv = KVCache(1)

    @property
    def offset(self) -> int:
        return self.kv.offset

    def reserve(self, capacity: int) -> None:
        """Make room for `capacity` rows in all (keeping the rows already there)."""
        if self._state is not None and self.kv.capacity >= capacity:
            return
        kept = self.snapshot() if self._state is not None and self.offset else None
        if self._state is not None:
            self.runner.release()
            self._state.close()
        capacity = -(-capacity // STEP_KEYS) * STEP_KEYS
        self._state = StateStore(self.backend, kv_cache_specs(CACHE_NAME, self.shape, capacity, self.kv_type))
        self.kv = KVCache(capacity)
        if kept is not None:
            self.restore(kept)

    def reset(self) -> None:
        """An empty cache: zeros everywhere (attention reads masked slots too, which must be finite)."""
        self.kv.reset()
        if self._state is not None:
            self._state.reset()

    def snapshot(self) -> FlowLMSnapshot:
        n, layers = self.offset, self.shape.num_layers
        assert self._state is not None
        k = np.stack([self._state.get(f"{CACHE_NAME}.{i}.k")[:n] for i in range(layers)]).astype(np.float32, copy=False)
        # V is stored transposed, (kv_dim, capacity)
        v = np.stack([self._state.get(f"{CACHE_NAME}.{i}.v")[:, :n].T for i in range(layers)]).astype(
            np.float32, copy=False
        )
        return FlowLMSnapshot(k, v)

    def restore(self, snap: FlowLMSnapshot, extra_rows: int = 0) -> None:
        """Start from `snap` with room for `extra_rows` more rows."""
        expected = (self.shape.num_layers, snap.n_rows, self.shape.attention.kv_dim)
        if snap.k.shape != expected or snap.v.shape != expected:
            raise GenerationError(f"voice state of shape {snap.k.shape} does not fit this model {expected}")
        self.reserve(snap.n_rows + extra_rows)
        assert self._state is not None
        cap = self.kv.capacity
        # Two arrays in the cache's own type, reused over the layers: an F32 pair per layer (plus its
        # F16 conversion) leaves MBs of freed heap in the RSS after every stream.
        dtype = np.float16 if self.kv_type == GGML_TYPE_F16 else np.float32
        k = np.zeros((cap, expected[2]), dtype=dtype)
        v = np.zeros((expected[2], cap), dtype=dtype)  # V is stored transposed
        for i in range(self.shape.num_layers):
            k[: snap.n_rows] = snap.k[i]
            self._state.set(f"{CACHE_NAME}.{i}.k", k)
            v[:, : snap.n_rows] = snap.v[i].T
            self._state.set(f"{CACHE_NAME}.{i}.v", v)
        self.kv.reset()
        self.kv.advance(snap.n_rows)

    def rewind(self, n_rows: int) -> None:
        """Keep only the first `n_rows` rows. The cache is causal, so those rows are exactly what they
        were, and a prompt appended now gives what it would have given right after them: text can be
        prefilled in pieces and a wrongly guessed tail taken back. The dropped slots keep their finite
        values, masked until written again."""
        if not 0 <= n_rows <= self.offset:
            raise GenerationError(f"cannot rewind a cache of {self.offset} rows to {n_rows}")
        self.kv.reset()
        self.kv.advance(n_rows)

    def voice_prompt(self, latents: np.ndarray, noise: np.ndarray | None = None, stages: bool = False) -> FlowLMOutput:
        """The voice rows ([bos_before_voice |] latents @ speaker_proj^T) into an empty cache."""
        if latents.ndim != 2 or latents.shape[1] != self.cfg.mimi.speaker_dim or latents.shape[0] < 1:
            raise GenerationError(f"voice latents must be (T, {self.cfg.mimi.speaker_dim}), got {latents.shape}")
        n = latents.shape[0] + int(self.cfg.flow_lm.insert_bos_before_voice)
        self.reset()
        self.reserve(n)
        return self._call(("voice", np.ascontiguousarray(latents, dtype=np.float32)), None, n, noise, stages)

    def text_prompt(self, tokens: np.ndarray, noise: np.ndarray | None = None, stages: bool = False) -> FlowLMOutput:
        tokens = np.asarray(tokens, dtype=np.int32)
        if tokens.ndim != 1 or tokens.size == 0 or tokens.min() < 0 or tokens.max() > self.cfg.flow_lm.n_bins:
            raise GenerationError("text tokens must be a non-empty 1-D array of ids within the vocabulary")
        return self._call(("text", tokens), None, tokens.size, noise, stages)

    def text_prompt_and_step(
        self, tokens: np.ndarray, noise: np.ndarray | None = None, attention: TextAttention | None = None
    ) -> FlowLMOutput:
        """The last text tokens and the BOS row in one call: what `text_prompt(tokens)` then
        `step(None, noise, attention=attention)` give, with one graph instead of two, where the first
        audio waits on it (`attention` may cover the rows of these tokens)."""
        tokens = np.asarray(tokens, dtype=np.int32)
        if tokens.ndim != 1 or tokens.size == 0 or tokens.min() < 0 or tokens.max() > self.cfg.flow_lm.n_bins:
            raise GenerationError("text tokens must be a non-empty 1-D array of ids within the vocabulary")
        bos = replace_nan_with_bos(np.full((1, self.latent_dim), np.nan, np.float32), self.bos_emb)
        return self._call(("text", tokens), bos, tokens.size + 1, noise, False, attention)

    def step(
        self,
        latent: np.ndarray | None,
        noise: np.ndarray | None = None,
        stages: bool = False,
        attention: TextAttention | None = None,
    ) -> FlowLMOutput:
        """One latent row (None: the BOS row) -> the next latent and the EOS logit; with `attention`,
        also those heads' scores over those rows (`FlowLMOutput.text_scores`)."""
        row = np.full((1, self.latent_dim), np.nan, np.float32) if latent is None else latent.reshape(1, -1)
        return self._call(None, replace_nan_with_bos(row, self.bos_emb), 1, noise, stages, attention)

    def _call(self, cond, latent_rows, n_rows: int, noise, stages: bool, attention=None) -> FlowLMOutput:
        if self._state is None or self.kv.max_rows() < n_rows:
            raise GenerationError(
                f"the FlowLM cache holds {self.kv.capacity} rows; {self.offset} used, {n_rows} more asked"
            )
        if attention is not None:
            start, stop = attention.rows
            layers, heads = self.shape.num_layers, self.shape.attention.num_heads
            if not 0 <= start < stop <= self.offset + n_rows - 1 or not all(
                0 <= layer < layers and 0 <= head < heads for layer, head in attention.heads
            ):
                raise GenerationError(
                    f"attention of heads {attention.heads} over rows {start}:{stop}: this model has {layers} "
                    f"layers of {heads} heads and {self.offset} rows in its cache"
                )
        noise = np.zeros((1, self.latent_dim), np.float32) if noise is None else noise.reshape(1, self.latent_dim)
        # Attention reads the cache rounded up to STEP_KEYS rows (the rows past the offset are
        # masked): a plain step keeps its graph for STEP_KEYS consecutive steps, and every call's key
        # count suits LLAMAFILE's sgemm (a multiple of its vector width).
        keep = cond is None and not stages
        end = self.offset + n_rows
        plan = self.kv.plan(n_rows, min_keys=-(-end // STEP_KEYS) * STEP_KEYS)
        caches = layer_caches(self._state, CACHE_NAME, self.shape)
        cfg, w = self.cfg.flow_lm, self.weights
        n_out = n_rows if stages else 1

        def build(g):
            cond_rows = None
            if cond is not None:
                kind, value = cond
                if kind == "voice":
                    cond_rows = flow_lm_voice_conditioning(g, w, cfg, g.feed("voice", value))
                else:
                    cond_rows = flow_lm_text_embeddings(g, w, cfg, g.feed("tokens", value))
            if latent_rows is None:
                rows = None
            else:
                rows = g.input("latents", latent_rows.shape) if keep else g.feed("latents", latent_rows)
            inputs = attention_inputs(g, plan, "attn", feed=not keep)
            out = flow_lm_step(
                g,
                w,
                cfg,
                cond_rows,
                rows,
                inputs,
                caches,
                g.input("noise", (1, self.latent_dim)),
                self.decode_steps,
                {} if stages else None,
                n_out,
                None if attention is None else attention.tap(),
            )
            if stages and cond_rows is not None:
                out["cond"] = cond_rows
            return out

        arrays = {"noise": noise.astype(np.float32)}
        if keep:
            arrays |= {"latents": latent_rows, **attention_arrays(plan, "attn")}
        with self.backend.threads(self.backend.n_threads if cond is None else self.prompt_threads):
            out = self.runner.run(build, arrays, key=("step", plan.n_keys, attention) if keep else None)
        self.kv.advance(n_rows)
        latent = out.pop("latent").reshape(self.latent_dim)
        eos = float(out.pop("eos_logit").reshape(()))
        scores = None
        if attention is not None:  # the tap's order (by layer) back to the order of `attention.heads`
            scores = out.pop("text_scores")[attention.tap_order]
        return FlowLMOutput(latent, eos, out if stages else {}, scores)


def sample_noise(rng: np.random.Generator, dim: int, temp: float, clamp: float | None) -> np.ndarray:
    """The sampler's starting point: N(0, temp), or with `clamp` a normal truncated to
    [-clamp, clamp] (torch's trunc_normal_ bounds are absolute values, not in units of std)."""
    std = float(np.sqrt(temp))
    if std == 0.0:
        return np.zeros(dim, np.float32)
    x = rng.standard_normal(dim) * std
    if clamp is not None:
        bad = np.abs(x) > clamp
        while bad.any():
            x[bad] = rng.standard_normal(int(bad.sum())) * std
            bad = np.abs(x) > clamp
    return x.astype(np.float32)
