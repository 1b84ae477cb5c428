"""Word timestamps against the live pocket-tts-timestamped 1.4.0, on the same checkpoint, voice, text
and noise (issue #18).

The checkpoint is the seeded synthetic one with its timestamp heads shaped to read the text in order
(tests/_timestamp_runs.py), loaded by both sides; the voice is cloned from the same wav by each
side's Mimi encoder; at temp 0.3 the fork's own noise draws are injected into our sampler.

Required at F32: the same WordStart / WordEnd events (kind, word, index, start and end frame) for
english and english_7m_2026-10, at temp 0 and 0.3, with every word of the text started and ended.
Recorded for Q8_0 and Q4_K_M: how many word boundaries move, and by how many frames.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from _parity_runs import _root
from _reference import require_timestamped_reference, shared_path
from _timestamp_runs import fork_run, shaped_model

from pocket_ggml.runtime.model import GenerationSettings, PocketRuntime
from pocket_ggml.runtime.text import split_into_best_sentences
from pocket_ggml.runtime.timestamps import (
    ChunkTimestamps,
    WordEnd,
    WordStart,
    is_voiced,
    source_words,
    timestamp_heads,
    unit_scores,
)
from pocket_ggml.voices.audio import read_audio
from pocket_ggml.voices.state import clone_voice

TEXT = "Hello world, this is a test of the pocket runtime."
LAG = 15.75  # the shaped heads look ~16 rows back: this text's 14 tokens, then two frames into the text
FRAMES = 24
CONFIGS = ["english", "english_7m_2026-10"]
UNIT_SCORE_TOL = 5e-3  # per-frame unit scores (means of softmax probabilities), absolute


def _frame(seconds: float) -> int:
    return round(seconds * 12.5)


def _fork_events(run: dict) -> list[tuple]:
    return [
        (e["kind"], e["index"], e["word"], _frame(e["start"]), _frame(e["end"]) if e["kind"] == "end" else None)
        for e in run["events"]
        if e["kind"] != "audio"
    ]


def _our_events(events) -> list[tuple]:
    return [
        ("start" if isinstance(e, WordStart) else "end", e.word_index, e.word, _frame(e.start_time))
        + ((_frame(e.end_time),) if isinstance(e, WordEnd) else (None,))
        for e in events
    ]


def run_ours(config: str, mix: str, noise: np.ndarray, temp: float):
    """Our stream of one chunk as the API runs it (frames, Mimi, ChunkTimestamps), the fork's noise
    injected: (events, per-frame unit scores, per-frame voiced flags)."""
    _, gguf = shaped_model(config, LAG, mix)
    rt = PocketRuntime(gguf)
    try:
        wav, rate = read_audio(shared_path("assets", "voices", "speaker-48k.wav"))
        voice = clone_voice(rt, wav, rate).snapshot
        chunks = split_into_best_sentences(rt.tokenizer, TEXT, rt.config.text)
        assert len(chunks) == 1
        heads = timestamp_heads(config)
        chunk, head_dim = rt.timestamp_chunks(TEXT, chunks)[0], rt.config.flow_lm.head_dim
        timing = ChunkTimestamps(chunk, heads, head_dim, rt.sample_rate)
        settings = GenerationSettings(temperature=temp, eos_threshold=float("inf"), max_frames=FRAMES)
        rows = iter(noise)
        rt.mimi.reset()
        events, scores, voiced, clock = [], [], [], 0
        for frame in rt.frames(voice, chunks[0], settings, lambda: next(rows), text_heads=heads):
            audio = rt.mimi.decode(frame.latent[None, :])
            events += timing.frame(frame.text_scores, audio, clock)
            scores.append(unit_scores(frame.text_scores, heads, head_dim, chunk.token_to_unit))
            voiced.append(is_voiced(audio))
            clock += len(audio)
        events += timing.finish(clock)
        return events, scores, voiced
    finally:
        rt.close()


@pytest.mark.parametrize("temp", [0.0, 0.3])
@pytest.mark.parametrize("config", CONFIGS)
def test_word_events_match_fork_at_f32(config, temp):
    require_timestamped_reference()
    ref = fork_run(config, LAG, TEXT, temp=temp, frames=FRAMES)
    assert len(ref["noise"]) == FRAMES
    events, scores, voiced = run_ours(config, "F32", np.asarray(ref["noise"], np.float32), temp)

    assert voiced == [f["voiced"] for f in ref["frames"]]
    worst = max(float(np.abs(ours - np.asarray(f["scores"])).max()) for ours, f in zip(scores, ref["frames"]))
    assert worst <= UNIT_SCORE_TOL, worst
    assert _our_events(events) == _fork_events(ref)
    n_words = len(source_words(TEXT))
    ended = {e.word_index for e in events if isinstance(e, WordEnd)}
    started = {e.word_index for e in events if isinstance(e, WordStart)}
    assert len(started & ended) >= 0.8 * n_words, (started, ended)


def _boundaries(events: list[tuple]) -> dict[tuple[int, str], int]:
    out = {}
    for kind, index, _, start, end in events:
        out[(index, "start")] = start
        if kind == "end":
            out[(index, "end")] = end
    return out


@pytest.mark.parametrize("mix", ["Q8_0", "Q4_K_M"])
def test_quantized_boundary_moves_are_recorded(mix):
    """Not a parity requirement: quantized weights move attention, so boundaries may move. Every
    boundary of the fork's F32 run is looked up in ours; the moves are printed and written to
    timestamps/quantized-moves.json in the parity folder (the README figures)."""
    require_timestamped_reference()
    report = {}
    for config in CONFIGS:
        for temp in (0.0, 0.3):
            ref = fork_run(config, LAG, TEXT, temp=temp, frames=FRAMES)
            events, _, _ = run_ours(config, mix, np.asarray(ref["noise"], np.float32), temp)
            ours, theirs = _boundaries(_our_events(events)), _boundaries(_fork_events(ref))
            moves = [abs(ours[k] - v) if k in ours else None for k, v in theirs.items()]
            report[f"{config} temp {temp}"] = {
                "boundaries": len(theirs),
                "moved": sum(1 for m in moves if m),
                "missing": sum(1 for m in moves if m is None),
                "max_frames": max((m for m in moves if m is not None), default=0),
                "extra": sorted(set(ours) - set(theirs)),
            }
            assert ours, f"{config} {mix} temp {temp}: no word events at all"
    out = _root() / "timestamps" / f"quantized-moves-{mix}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1), encoding="utf-8")
    print(f"\n{mix} word boundaries against the fork at F32: {json.dumps(report)}")
