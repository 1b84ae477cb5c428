"""`pocket-speak`: text -> speech with a pocket-tts GGUF (a thin wrapper over `TTSModel`)."""

from __future__ import annotations

import codecs
import json
import logging
import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import click
import numpy as np

from pocket_ggml.errors import PocketError

_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def _pcm16(chunk: np.ndarray) -> bytes:
    return (np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _write_audio(path: Path, audio: np.ndarray, rate: int) -> None:
    """soundfile, atomically: an interrupted write leaves any previous file intact."""
    import soundfile as sf

    from pocket_ggml.files import atomic_write

    fmt = _FORMATS[path.suffix.lower()]
    if not path.parent.is_dir():
        raise PocketError(f"folder {str(path.parent)!r} does not exist")
    with atomic_write(path) as tmp:
        sf.write(str(tmp), audio, rate, format=fmt, subtype="VORBIS" if fmt == "OGG" else "PCM_16")


class _StdinPieces:
    """Standard input as it arrives, not line by line: the words of a line still being written are
    prompted as they come (a writer that flushes word by word gets its sentence's first audio
    within a frame of its end). A line break ends the text in progress, so a line without final
    punctuation is still spoken when it ends."""

    def __init__(self, fd: int):
        self.fd = fd
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.buffer = ""
        self.eof = False

    @property
    def done(self) -> bool:
        return self.eof and not self.buffer

    def line(self) -> Iterator[str]:
        """The pieces of the next line, as they are read."""
        while True:
            if self.buffer:
                head, newline, self.buffer = self.buffer.partition("\n")
                if head:
                    yield head
                if newline:
                    return
            if self.eof:
                return
            data = os.read(self.fd, 65536)  # whatever the pipe holds, as soon as it holds anything
            self.eof = not data
            self.buffer += self.decoder.decode(data, final=self.eof)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--text", help="the text to speak (default: read standard input)")
@click.option("--voice", help="audio file to clone, a voice stored in the model, or a voice-state .safetensors")
@click.option("--model", help="pocket-tts GGUF (default: the synthetic english model, not speech)")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="write a .wav, .flac or .ogg file")
@click.option(
    "--stream",
    is_flag=True,
    help="raw 16-bit PCM on stdout as it is made; with stdin, speak each sentence as it ends (a line break ends one; "
    "with --timestamps, each line)",
)
@click.option(
    "--no-markup",
    "markup",
    is_flag=True,
    flag_value=False,
    default=True,
    help='speak [pause:1.5] and <break time="1s"/> as written instead of pausing',
)
@click.option("--temperature", "--temp", "temp", type=float, help="sampling temperature (default: the model's)")
@click.option("--lsd-decode-steps", type=int, default=1, show_default=True)
@click.option("--eos-threshold", type=float, help="EOS logit threshold (default: the model's)")
@click.option("--noise-clamp", type=float, help="truncate the sampling noise to +-this")
@click.option("--frames-after-eos", type=int, help="frames generated after EOS (default: from the text)")
@click.option("--max-tokens", type=int, default=50, show_default=True, help="tokens per text chunk")
@click.option("--seed", type=int, help="seed of the sampling noise")
@click.option(
    "--threads",
    type=int,
    default=1,
    show_default=True,
    help="ggml threads of the FlowLM (at most half the CPUs)",
)
@click.option(
    "--mimi-threads",
    type=int,
    default=1,
    show_default=True,
    help="ggml threads of the Mimi decoder (at most half the CPUs)",
)
@click.option(
    "--timestamps",
    "timestamps_file",
    type=click.Path(dir_okay=False),
    help="write word timestamps to a .srt, .vtt or .json file; with --stream, also each word event as a "
    "JSON line on stderr",
)
@click.option("--list-voices", is_flag=True, help="list the voices stored in the model and exit")
@click.option("-q", "--quiet", is_flag=True, help="no progress on stderr")
def main(
    text,
    voice,
    model,
    output,
    stream,
    markup,
    temp,
    lsd_decode_steps,
    eos_threshold,
    noise_clamp,
    frames_after_eos,
    max_tokens,
    seed,
    threads,
    mimi_threads,
    timestamps_file,
    list_voices,
    quiet,
) -> None:
    """Speak TEXT with Pocket TTS through GGML.

    \b
      pocket-speak --text "Hello world." -o hello.wav
      pocket-speak --text "Ready? [pause:1.5] Go!" -o go.wav
      pocket-speak --text "Hello world." -o hello.wav --timestamps hello.srt
      llm-chat | pocket-speak --stream --voice me.wav | aplay -f S16_LE -r 24000
    """
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        _run(
            text,
            voice,
            model,
            output,
            stream,
            markup,
            temp,
            lsd_decode_steps,
            eos_threshold,
            noise_clamp,
            frames_after_eos,
            max_tokens,
            seed,
            threads,
            mimi_threads,
            timestamps_file,
            list_voices,
            quiet,
        )
    except PocketError as e:
        click.echo(f"pocket-speak: error: {e}", err=True)
        sys.exit(2)
    except BrokenPipeError:  # the player went away: stop quietly
        sys.stderr.close()
        sys.exit(0)


def _run(
    text,
    voice,
    model,
    output,
    stream,
    markup,
    temp,
    lsd_decode_steps,
    eos_threshold,
    noise_clamp,
    frames_after_eos,
    max_tokens,
    seed,
    threads,
    mimi_threads,
    timestamps_file,
    list_voices,
    quiet,
) -> None:
    from pocket_ggml import subtitles
    from pocket_ggml.api import TTSModel

    if not list_voices and not output and not stream:
        raise click.UsageError("give -o FILE or --stream")
    if output and Path(output).suffix.lower() not in _FORMATS:
        raise click.UsageError(f"-o must end in {', '.join(_FORMATS)}")
    if timestamps_file:
        subtitles.check_destination(Path(timestamps_file))
    tts = TTSModel.load_model(
        model,
        threads=threads,
        mimi_threads=mimi_threads,
        temp=temp,
        lsd_decode_steps=lsd_decode_steps,
        noise_clamp=noise_clamp,
        eos_threshold=eos_threshold,
        frames_after_eos=frames_after_eos,
        max_tokens=max_tokens,
        seed=seed,
    )
    if list_voices:
        click.echo("\n".join(tts.voice_names) if tts.voice_names else "(no stored voices)")
        return
    if tts.is_synthetic and not quiet:
        click.echo(f"pocket-speak: {tts.model_path.name} has synthetic weights: the output is not speech", err=True)
    if voice is None:
        if not tts.voice_names:
            raise PocketError("this model stores no voice: give --voice (an audio file to clone)")
        voice = tts.voice_names[0]
    state = tts.get_state_for_audio_prompt(voice)
    words = _Words(tts.sample_rate, stream) if timestamps_file else None

    if stream and text is None:  # speak stdin as it arrives, each sentence once it ends
        out = sys.stdout.buffer
        if words is None:
            stdin = _StdinPieces(sys.stdin.fileno())
            while not stdin.done:
                for chunk in tts.generate_audio_for_text_stream(state, stdin.line(), markup=markup):
                    out.write(_pcm16(chunk))
                    out.flush()
            return
        # Word timestamps come with generate_audio_stream: each line is spoken as a text of its own.
        for line in sys.stdin:
            if line.strip():
                for item in tts.generate_audio_stream(state, line, markup=markup, timestamps=True):
                    if isinstance(item, np.ndarray):
                        out.write(_pcm16(item))
                        out.flush()
                    words.add(item)
                words.next_text(line, markup)
        words.write(Path(timestamps_file))
        return
    if text is None:
        text = sys.stdin.read()
    chunks = []
    stop = threading.Event()
    frames = samples = 0
    # Progress lines would break the JSON lines of word events on stderr.
    progress = not quiet and not (stream and words is not None)
    for item in tts.generate_audio_stream(state, text, stop=stop, markup=markup, timestamps=words is not None):
        if words is not None:
            words.add(item)
        if not isinstance(item, np.ndarray):
            continue
        frames += 1
        samples += item.size
        if stream:
            sys.stdout.buffer.write(_pcm16(item))
            sys.stdout.buffer.flush()
        if output:
            chunks.append(item)
        if progress and frames % 25 == 0:
            click.echo(f"\rpocket-speak: {samples / tts.sample_rate:.1f} s of audio", err=True, nl=False)
    if progress and frames >= 25:
        click.echo("", err=True)
    if output:
        _write_audio(Path(output), np.concatenate(chunks) if chunks else np.zeros(0, np.float32), tts.sample_rate)
    if words is not None:
        words.next_text(text, markup)
        words.write(Path(timestamps_file))


class _Words:
    """Word timestamps of one run, over every text it speaks (stdin lines one after the other: times
    and word indices go on from the previous line's), echoed to stderr as JSON lines when streaming."""

    def __init__(self, sample_rate: int, echo: bool):
        self.sample_rate = sample_rate
        self.echo = echo
        self.text = ""  # the texts spoken so far, one per line
        self.samples = 0  # of the texts before the current one
        self.current = 0  # samples of the current text
        self.first_index = 0  # word index of the current text's first word
        self.words: list = []

    def add(self, item) -> None:
        from pocket_ggml.api import WordEnd, WordTimestamp

        if isinstance(item, np.ndarray):
            self.current += len(item)
            return
        start, index = self._later(item.start_time), item.word_index + self.first_index
        if isinstance(item, WordEnd):
            end = self._later(item.end_time)
            self.words.append(WordTimestamp(item.word, index, start, end))
            event = {"event": "word_end", "word": item.word, "word_index": index, "start_time": start, "end_time": end}
        else:
            event = {"event": "word_start", "word": item.word, "word_index": index, "start_time": start}
        if self.echo:
            sys.stderr.write(json.dumps(event, ensure_ascii=False) + "\n")
            sys.stderr.flush()

    def _later(self, seconds: float) -> float:
        """A time of the current text on the clock of the whole run (event times count samples)."""
        return (self.samples + round(seconds * self.sample_rate)) / self.sample_rate

    def next_text(self, text: str, markup: bool) -> None:
        from pocket_ggml.runtime.markup import parse_markup, spoken_text
        from pocket_ggml.runtime.timestamps import source_words

        if markup:  # word indices count the words spoken, not the markers'
            text = spoken_text(parse_markup(text))
        self.first_index += len(source_words(text))
        self.text += text.rstrip("\n") + "\n"
        self.samples += self.current
        self.current = 0

    def write(self, path: Path) -> None:
        from pocket_ggml import subtitles

        subtitles.write(path, self.text, self.words, self.samples / self.sample_rate)


if __name__ == "__main__":
    main()
