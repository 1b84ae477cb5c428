"""Run bad-input cases against the TTSModel API in this process; one result line per case.

Usage: python api_cases.py MODEL.gguf CASES.json  -> lines "name<TAB>ok|error<TAB>ExceptionType<TAB>message".
A case is {"name", "kind": "audio"|"samples"|"text"|"param", ...}; see tests/test_bad_inputs_api.py.
"""

from __future__ import annotations

import json
import sys
import threading

import numpy as np

from pocket_ggml import PocketError, TTSModel


def run_case(model: TTSModel, voice, case: dict) -> None:
    kind = case["kind"]
    if kind == "audio":
        model.get_state_for_audio_prompt(case["path"])
    elif kind == "samples":
        model.get_state_for_audio_prompt(np.load(case["path"]), sample_rate=case["rate"])
    elif kind == "text":
        text = open(case["path"], encoding="utf-8").read() if "path" in case else case["text"]
        stop = threading.Event()
        for i, _ in enumerate(model.generate_audio_stream(voice, text, stop=stop)):
            if i == 2:  # a valid but long text: streaming started, stop it
                stop.set()
    elif kind == "param":
        TTSModel.load_model(case["model"], **case["kwargs"])
    elif kind == "generate":
        model.generate_audio(voice, "Hello.", **case["kwargs"])
    else:
        raise ValueError(kind)


def main() -> None:
    model = TTSModel.load_model(sys.argv[1], temp=0.0)
    voice = model.get_state_for_audio_prompt(model.voice_names[0])
    for case in json.load(open(sys.argv[2])):
        try:
            run_case(model, voice, case)
            result = ("ok", "", "")
        except PocketError as e:
            result = ("error", type(e).__name__, str(e).replace("\n", " ")[:200])
        except Exception as e:  # an untyped error is a defect the test reports
            result = ("untyped", type(e).__name__, str(e).replace("\n", " ")[:200])
        print("\t".join((case["name"], *result)), flush=True)


if __name__ == "__main__":
    main()
