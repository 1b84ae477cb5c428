"""Text prompted while it is still being written.

The FlowLM is causal over [voice | text | audio]: tokens prompted in pieces leave the cache as one
prompt of all of them would (`FlowLM.rewind` takes back a wrongly guessed tail). `IncrementalPrompt`
keeps the cache prompted with the tokens a sentence is known to start with (`stable_prompt_tokens`)
as its words arrive; when the sentence is over, each of its chunks is checked against what
`generate_audio_stream` would prompt (`IncrementalPrompt.chunks`), the cache taken back to the longest common
prefix and only the rest prompted. The guess only decides how much is left to do at the end: the
prompt that the frames follow is always exactly the one-shot path's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from pocket_ggml.runtime.flow_lm import FlowLMOutput, FlowLMSnapshot
from pocket_ggml.runtime.generate import (
    Frame,
    NoiseSource,
    estimate_max_frames,
    frames_after_eos_for,
    latents_after_prompt,
)
from pocket_ggml.runtime.model import GenerationSettings, PocketRuntime
from pocket_ggml.runtime.text import split_into_best_sentences, stable_prompt_tokens


class IncrementalPrompt:
    """The FlowLM's prompt for one voice, one sentence at a time (the FlowLM is this object's from
    the first call until the caller is done with it)."""

    def __init__(self, runtime: PocketRuntime, voice: FlowLMSnapshot, max_tokens: int):
        self.rt = runtime
        self.voice = voice
        self.max_tokens = max_tokens
        self.prompted: list[int] = []  # the text tokens in the cache after the voice
        self._restored = False

    def update(self, partial: str) -> None:
        """Prompt what is known of the sentence being written (`partial`: its text so far)."""
        self._prompt(stable_prompt_tokens(self.rt.tokenizer, partial, self.rt.config.text, self.max_tokens))

    def chunks(self, sentence: str) -> list[tuple[list[int], int]]:
        """Each chunk of a finished sentence as the one-shot path prompts it: its token ids and the
        words-based frames-after-EOS guess."""
        out = []
        for chunk in split_into_best_sentences(self.rt.tokenizer, sentence, self.rt.config.text, self.max_tokens):
            tokens, guess = self.rt.tokens(chunk)
            out.append((tokens.tolist(), guess))
        return out

    def frames(
        self,
        tokens: list[int],
        words_guess: int,
        settings: GenerationSettings,
        noise: NoiseSource,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[Frame]:
        """Latent frames of one chunk: `tokens` prompted (what is not in the cache yet), then the
        generation loop, with `generate_latents`' frame cap and frames after EOS. The tokens not in
        the cache yet go in with the first step, in one call."""
        max_frames = settings.max_frames
        if max_frames is None:
            max_frames = estimate_max_frames(len(tokens), self.rt.config.mimi.frame_rate)
        flow_lm = self.rt.flow_lm
        tail = self._prompt(tokens, defer_tail=True)
        flow_lm.reserve(flow_lm.offset + len(tail) + max_frames)

        def first_step(noise: np.ndarray) -> FlowLMOutput:
            out = flow_lm.text_prompt_and_step(np.asarray(tail, np.int32), noise)
            self.prompted = list(tokens)
            return out

        return latents_after_prompt(
            flow_lm,
            noise,
            eos_threshold=settings.eos_threshold,
            frames_after_eos=frames_after_eos_for(words_guess, settings.frames_after_eos),
            max_frames=max_frames,
            should_stop=should_stop,
            first_step=first_step if tail else None,
        )

    def _prompt(self, tokens: list[int], defer_tail: bool = False) -> list[int]:
        """Make the cache hold the voice then `tokens`: keep the common prefix, prompt the rest (or,
        with `defer_tail`, return the rest for the caller to prompt)."""
        flow_lm = self.rt.flow_lm
        if not self._restored:
            # Room for a full chunk and its frames, so that the cache rarely has to grow mid-sentence.
            rows = self.max_tokens + estimate_max_frames(self.max_tokens, self.rt.config.mimi.frame_rate)
            flow_lm.restore(self.voice, extra_rows=rows)
            self._restored = True
            self.prompted = []
        kept = 0
        while kept < min(len(tokens), len(self.prompted)) and tokens[kept] == self.prompted[kept]:
            kept += 1
        flow_lm.rewind(self.voice.n_rows + kept)  # also drops the frames of a chunk spoken before
        self.prompted = list(tokens[:kept])
        tail = list(tokens[kept:])
        if tail and not defer_tail:
            flow_lm.reserve(flow_lm.offset + len(tail))
            flow_lm.text_prompt(np.asarray(tail, np.int32))
            self.prompted = list(tokens)
            return []
        return tail
