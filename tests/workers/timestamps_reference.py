"""Word timestamps of pocket-tts-timestamped 1.4.0 (the fork), offline, on a local weights file.

Usage: python timestamps_reference.py --weights W.safetensors --config NAME --tokenizer T.model
           --voice-wav V.wav --text TEXT --frames N --seed S --temp T --out OUT.json

As ../shared/reference/run_reference.py does for pocket-tts: the packaged yaml with local paths,
`_estimate_max_gen_len` fixed to N frames, EOS never firing, Mimi decoding one latent per call,
torch seeded before the voice prompt. The package's code is not changed: the sampler's noise is
recorded by forward pre-hooks, the alignment's inputs by a wrapper, set in this process only, that
calls the original `WordAlignment.process_frame`. OUT.json: the events in stream order
(kind, word, word_index, start/end times), the step noise [N][latent_dim], the tokens, and per frame
the unit scores and the voiced flag the alignment saw.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import yaml  # noqa: E402
from pocket_tts_timestamped import TTSModel  # noqa: E402
from pocket_tts_timestamped.timestamps import alignment as fork_alignment  # noqa: E402
from pocket_tts_timestamped.timestamps.records import AudioChunk, WordEnd, WordStart  # noqa: E402
from pocket_tts_timestamped.utils.config import CONFIGS_DIR  # noqa: E402


def local_config(config: str, weights: Path, tokenizer: Path) -> Path:
    cfg = yaml.safe_load((CONFIGS_DIR / f"{config}.yaml").read_text(encoding="utf-8"))
    cfg["weights_path"] = str(weights.resolve())
    cfg["weights_path_without_voice_cloning"] = None
    cfg["flow_lm"]["weights_path"] = None
    cfg["mimi"]["weights_path"] = None
    lut = cfg["flow_lm"]["lookup_table"]
    lut["tokenizer_path"] = str(tokenizer.resolve())
    lut["tokenizer"] = "tokenizers" if tokenizer.suffix == ".json" else "sentencepiece"
    path = Path(tempfile.mkdtemp(prefix="fork_cfg_")) / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    for name in ("weights", "config", "tokenizer", "voice-wav", "text", "out"):
        ap.add_argument(f"--{name}", required=True)
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--temp", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = TTSModel.load_model(
        config=str(local_config(args.config, Path(args.weights), Path(args.tokenizer))),
        temp=args.temp,
        noise_clamp=None,
        eos_threshold=math.inf,
    )
    model._estimate_max_gen_len = lambda token_count: args.frames
    model.max_decoder_frames_per_call = 1

    noise: list[list[float]] = []
    tokens: list[list[int]] = []
    calls = {"flow_lm": 0}

    def flow_pre(module, fargs, kwargs):
        calls["flow_lm"] += 1
        calls["step"] = kwargs["sequence"].shape[1] > 0

    def flow_net_pre(module, fargs):
        if calls.get("step"):
            noise.append(fargs[-1].reshape(-1).tolist())

    def conditioner_pre(module, fargs):
        if fargs[0].shape[1] > 0:
            tokens.append(fargs[0].reshape(-1).tolist())

    model.flow_lm.register_forward_pre_hook(flow_pre, with_kwargs=True)
    model.flow_lm.flow_net.register_forward_pre_hook(flow_net_pre)
    model.flow_lm.conditioner.register_forward_pre_hook(conditioner_pre)

    frames: list[dict] = []
    original_process_frame = fork_alignment.WordAlignment.process_frame

    def recording_process_frame(self, scores, voiced, frame_start):
        frames.append({"scores": scores.tolist(), "voiced": bool(voiced), "start": frame_start})
        return original_process_frame(self, scores, voiced, frame_start)

    fork_alignment.WordAlignment.process_frame = recording_process_frame  # this process only

    torch.manual_seed(args.seed)
    voice = model.get_state_for_audio_prompt(Path(args.voice_wav))
    events = []
    samples = 0
    for event in model.generate_audio_with_timestamps_stream(voice, args.text, max_tokens=10**9):
        if isinstance(event, AudioChunk):
            samples += int(event.audio.shape[-1])
            events.append({"kind": "audio", "samples": int(event.audio.shape[-1])})
        elif isinstance(event, WordStart):
            events.append({"kind": "start", "word": event.word, "index": event.word_index, "start": event.start_time})
        elif isinstance(event, WordEnd):
            events.append(
                {
                    "kind": "end",
                    "word": event.word,
                    "index": event.word_index,
                    "start": event.start_time,
                    "end": event.end_time,
                }
            )
    out = {
        "events": events,
        "noise": noise,
        "tokens": tokens,
        "frames": frames,
        "samples": samples,
        "sample_rate": model.sample_rate,
    }
    Path(args.out).write_text(json.dumps(out), encoding="utf-8")


if __name__ == "__main__":
    main()
