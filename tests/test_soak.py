"""Long runs hold memory: the soak command (short) and 5,000 words of text, on the small model."""

from __future__ import annotations

import subprocess
import sys

from _parity_runs import synthetic_model

from pocket_ggml import TTSModel
from pocket_ggml.bench.soak import rss_bytes
from pocket_ggml.runtime.text import prepare_text_prompt, split_into_best_sentences
from pocket_ggml.voices.store import synthetic_voice_audio

SMALL = "english_2m_2026-10"
MAX_GROWTH = 0.05  # RSS growth allowed after warm-up (issue #6)
WORDS = ["harbour", "lights", "came", "on", "one", "by", "the", "boats", "returned", "slowly", "and", "quietly"]


def test_soak_short_holds_memory(tmp_path):
    csv = tmp_path / "rss.csv"
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "pocket_ggml.bench.soak",
            "--minutes",
            "1.5",
            "--model",
            str(synthetic_model(SMALL)[1]),
            "--voice",
            _voice_wav(tmp_path),
            "--csv",
            str(csv),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    rows = csv.read_text().splitlines()[1:]
    assert len(rows) >= 10 and "growth after" in r.stdout


def _voice_wav(tmp_path) -> str:
    import soundfile as sf

    p = tmp_path / "voice.wav"
    sf.write(p, synthetic_voice_audio(24000), 24000)
    return str(p)


def _five_thousand_words() -> str:
    words = [WORDS[(i * 7 + i // 5) % len(WORDS)] for i in range(5000)]
    return " ".join(w + ("." if i % 13 == 12 else ",") if i % 13 in (6, 12) else w for i, w in enumerate(words))


def test_five_thousand_words_stream_with_bounded_memory_and_no_lost_tokens(tmp_path):
    model = TTSModel.load_model(synthetic_model(SMALL)[1], temp=0.0)
    text = _five_thousand_words()
    tok, rules = model._rt.tokenizer, model.config.text
    chunks = split_into_best_sentences(tok, text, rules)
    assert [t for c in chunks for t in tok.encode(c)] == tok.encode(prepare_text_prompt(text, rules).text.strip())
    voice = model.get_state_for_audio_prompt(synthetic_voice_audio(24000), sample_rate=24000)
    rss, frames = [], 0
    for _ in model.generate_audio_stream(voice, text):
        frames += 1
        if frames % 100 == 0:
            rss.append(rss_bytes())
    assert frames >= 7 * len(chunks) and len(rss) >= 5
    warm = rss[len(rss) // 5 :]
    assert (max(warm) - warm[0]) / warm[0] < MAX_GROWTH, [r // 1_000_000 for r in rss]
