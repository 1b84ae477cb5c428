"""Text prefilled in pieces is the one-shot prefill: the FlowLM is causal over [voice | text | audio].

Required (issue #19): <= 1e-6 relative against our own one-shot prefill on every KV cache row and on
the frames that follow, at F32 and Q4_K_M; and the pieces against the reference's one-shot text
prompt (its layer outputs and the steps after it) within the stage parity tolerance.
"""

from __future__ import annotations

import numpy as np
import pytest
from _ggml_parity import REL_TOL, rel_err
from _parity_runs import TEXT, reference_run, synthetic_model

from pocket_ggml.errors import GenerationError
from pocket_ggml.runtime.flow_lm import FlowLM
from pocket_ggml.runtime.generate import latents_after_prompt
from pocket_ggml.runtime.model import PocketRuntime

CONFIG = "english_2m_2026-10"
FRAMES = 10
PIECES_TOL = 1e-6


@pytest.fixture(scope="module", params=["F32", "Q4_K_M"])
def runtime(request):
    rt = PocketRuntime(synthetic_model(CONFIG, request.param)[1])
    yield rt
    rt.close()


def _voice(flm: FlowLM):
    latents = np.random.default_rng(3).standard_normal((12, flm.cfg.mimi.speaker_dim)).astype(np.float32)
    flm.voice_prompt(latents)
    return flm.snapshot()


def _prefill_and_run(
    flm: FlowLM, voice, pieces: list[np.ndarray], wrong: np.ndarray | None = None, last_with_step: bool = False
):
    """Restore `voice`, prompt the pieces in turn (after each, optionally a wrongly guessed tail
    that is then taken back; the last one, optionally, in one call with the first step), and run
    FRAMES steps with seeded noise. The snapshot holds the text rows (and the BOS row)."""
    flm.restore(voice, extra_rows=sum(len(p) for p in pieces) + FRAMES + (0 if wrong is None else len(wrong)))
    for piece in pieces[:-1] if last_with_step else pieces:
        flm.text_prompt(piece)
        if wrong is not None:
            kept = flm.offset
            flm.text_prompt(wrong)
            flm.rewind(kept)
    rng = np.random.default_rng(11)
    frames = latents_after_prompt(
        flm,
        lambda: (rng.standard_normal(flm.latent_dim) * 0.5).astype(np.float32),
        eos_threshold=np.inf,
        frames_after_eos=0,
        max_frames=FRAMES,
        first_step=(lambda noise: flm.text_prompt_and_step(pieces[-1], noise)) if last_with_step else None,
    )
    first = next(frames)
    snap = flm.snapshot()
    frames = [first, *frames]
    return snap, np.stack([f.latent for f in frames]), np.array([f.eos_logit for f in frames])


def _row_errors(a, b, first_row: int) -> float:
    """The largest relative error over the cache rows from `first_row` on, K and V of every layer."""
    worst = 0.0
    for x, y in ((a.k, b.k), (a.v, b.v)):
        for layer in range(x.shape[0]):
            for row in range(first_row, x.shape[1]):
                worst = max(worst, rel_err(x[layer, row], y[layer, row]))
    return worst


def test_text_prefilled_in_pieces_is_the_one_shot_prefill(runtime):
    flm = runtime.flow_lm
    voice = _voice(flm)
    tokens, _ = runtime.tokens(TEXT)
    assert len(tokens) > 8
    one_shot = _prefill_and_run(flm, voice, [tokens])
    cuts = [np.split(tokens, [1, 4, 5, 9]), [tokens[i : i + 1] for i in range(len(tokens))]]
    wrong = np.array([7, 7, 300], np.int32)
    runs = [_prefill_and_run(flm, voice, pieces) for pieces in cuts]
    runs.append(_prefill_and_run(flm, voice, np.split(tokens, [3, 6]), wrong=wrong))
    runs.append(_prefill_and_run(flm, voice, np.split(tokens, [4, len(tokens) - 2]), last_with_step=True))
    runs.append(_prefill_and_run(flm, voice, [tokens], last_with_step=True))
    for snap, latents, eos in runs:
        assert snap.n_rows == voice.n_rows + len(tokens) + 1
        assert _row_errors(snap, one_shot[0], voice.n_rows) <= PIECES_TOL
        for i in range(FRAMES):
            assert rel_err(latents[i], one_shot[1][i]) <= PIECES_TOL, f"frame {i}"
        np.testing.assert_allclose(eos, one_shot[2], rtol=PIECES_TOL, atol=PIECES_TOL)


def test_rewind_takes_back_only_rows_there(runtime):
    flm = runtime.flow_lm
    voice = _voice(flm)
    flm.restore(voice, extra_rows=4)
    with pytest.raises(GenerationError):
        flm.rewind(voice.n_rows + 1)
    with pytest.raises(GenerationError):
        flm.rewind(-1)
    flm.text_prompt(np.array([5, 6], np.int32))
    flm.rewind(voice.n_rows)
    assert flm.offset == voice.n_rows


def test_pieces_match_the_reference_one_shot_prefill():
    """The reference prompts the whole text at once: our pieces give its layer outputs, EOS logit
    and the steps that follow (teacher-forced with its noise), at F32."""
    dump = reference_run(CONFIG, temp=0.0, frames=FRAMES)
    rt = PocketRuntime(synthetic_model(CONFIG)[1])
    flm = rt.flow_lm
    tokens = np.asarray(dump["tokens"], np.int32)
    flm.voice_prompt(dump["voice_mimi_latents"][0].T)
    flm.reserve(flm.offset + len(tokens) + FRAMES)
    outputs = [flm.text_prompt(piece, stages=True) for piece in np.split(tokens, [2, 5, 6])]
    n_layers = rt.config.flow_lm.num_layers
    errors = {}
    for i in range(n_layers):
        ours = np.concatenate(
            [o.stages[f"layer{i:02d}"].reshape(-1, o.stages[f"layer{i:02d}"].shape[-1]) for o in outputs]
        )
        ref = dump[f"text_layer{i:02d}_out"]
        errors[f"text layer {i}"] = rel_err(ours.reshape(ref.shape), ref)
    errors["text EOS logit"] = rel_err(np.array([outputs[-1].eos_logit]), dump["text_pass_eos_logit"])
    inputs, noise = dump["step_input_latent"], dump["step_noise"]
    latents = []
    for i in range(FRAMES):
        latents.append(flm.step(None if np.isnan(inputs[i]).all() else inputs[i], noise[i]).latent)
    errors["latents"] = rel_err(np.stack(latents), dump["step_latent"])
    rt.close()
    bad = {k: v for k, v in errors.items() if not v <= REL_TOL}
    assert not bad, f"stages over {REL_TOL}: {bad}"
