"""The generation loop: text prefill, then one FlowLM step per latent frame, with the reference's
EOS rules (pocket_tts TTSModel._autoregressive_generation):

- EOS fires when the EOS logit exceeds the threshold, but is ignored for the first 6 frames;
- after EOS at frame e, frames up to e + frames_after_eos - 1 are still emitted;
- the length cap is ceil((n_tokens / 3 + 2) * frame_rate) frames.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from pocket_ggml.errors import GenerationError
from pocket_ggml.runtime.flow_lm import FlowLM, FlowLMOutput, FlowLMSnapshot, TextAttention

MIN_FRAMES_BEFORE_EOS = 6  # before speech starts, some voices' EOS logit crosses the threshold
TOKENS_PER_SECOND_ESTIMATE = 3.0
GEN_SECONDS_PADDING = 2.0
NoiseSource = Callable[[], np.ndarray]


def estimate_max_frames(n_tokens: int, frame_rate: float) -> int:
    """The reference's length cap (TTSModel._estimate_max_gen_len)."""
    return math.ceil((n_tokens / TOKENS_PER_SECOND_ESTIMATE + GEN_SECONDS_PADDING) * frame_rate)


def frames_after_eos_for(words_guess: int, configured: int | None) -> int:
    """The configured value, else the reference's guess from the text (+2): 3 or 5 frames."""
    return configured if configured is not None else words_guess + 2


@dataclass(frozen=True)
class Frame:
    index: int
    latent: np.ndarray  # (latent_dim,), normalised
    eos_logit: float
    eos_frame: int | None  # the frame at which EOS fired, once it has
    text_scores: np.ndarray | None = None  # (heads, tokens): attention scores over the text, when asked for


def generate_latents(
    flow_lm: FlowLM,
    voice: FlowLMSnapshot,
    tokens: np.ndarray,
    noise: NoiseSource,
    *,
    eos_threshold: float,
    frames_after_eos: int,
    max_frames: int,
    should_stop: Callable[[], bool] = lambda: False,
    text_heads: tuple[tuple[int, int], ...] = (),
) -> Iterator[Frame]:
    """Latent frames for one chunk of text, starting from a copy of the voice state. With
    `text_heads` ((layer, head) pairs), each frame carries their attention scores over the text."""
    if max_frames < 0 or frames_after_eos < 0:
        raise GenerationError("max_frames and frames_after_eos must be >= 0")
    if math.isnan(eos_threshold):
        raise GenerationError("the EOS threshold is NaN")
    flow_lm.restore(voice, extra_rows=len(tokens) + 1 + max_frames)
    text_start = flow_lm.offset
    attention = TextAttention(text_heads, (text_start, text_start + len(tokens))) if text_heads else None
    yield from latents_after_prompt(
        flow_lm,
        noise,
        eos_threshold=eos_threshold,
        frames_after_eos=frames_after_eos,
        max_frames=max_frames,
        should_stop=should_stop,
        # the text goes in with the first step, in one graph: one build and one launch fewer before
        # the first audio
        first_step=lambda first_noise: flow_lm.text_prompt_and_step(tokens, first_noise, attention),
        attention=attention,
    )


def latents_after_prompt(
    flow_lm: FlowLM,
    noise: NoiseSource,
    *,
    eos_threshold: float,
    frames_after_eos: int,
    max_frames: int,
    should_stop: Callable[[], bool] = lambda: False,
    first_step: Callable[[np.ndarray], FlowLMOutput] | None = None,
    attention: TextAttention | None = None,
) -> Iterator[Frame]:
    """Latent frames from the cache as it stands (voice and text prompted, with room for
    `max_frames` more rows): the loop of `generate_latents`, for a prompt made in pieces.
    `first_step(noise)` replaces the first (BOS) step, e.g. `FlowLM.text_prompt_and_step`; with
    `attention`, each frame carries those heads' scores over the text (word timestamps)."""
    if max_frames < 0 or frames_after_eos < 0:
        raise GenerationError("max_frames and frames_after_eos must be >= 0")
    if math.isnan(eos_threshold):
        raise GenerationError("the EOS threshold is NaN")
    latent: np.ndarray | None = None  # None: the BOS row
    eos_frame: int | None = None
    for step in range(max_frames):
        if should_stop():
            return
        if step == 0 and first_step is not None:
            out = first_step(noise())
        else:
            out = flow_lm.step(latent, noise(), attention=attention)
        if out.eos_logit > eos_threshold and eos_frame is None and step >= MIN_FRAMES_BEFORE_EOS:
            eos_frame = step
        if eos_frame is not None and step >= eos_frame + frames_after_eos:
            return
        yield Frame(step, out.latent, out.eos_logit, eos_frame, out.text_scores)
        latent = out.latent
