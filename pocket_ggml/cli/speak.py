"""`pocket-speak`: text -> speech with a pocket-tts GGUF (a thin wrapper over `TTSModel`)."""

from __future__ import annotations

import codecs
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import click
import numpy as np

from pocket_ggml import audio_file
from pocket_ggml.cli.common import CONTEXT_SETTINGS, exit_on_pocket_error
from pocket_ggml.errors import PocketError

# The options that are `TTSModel.load_model`'s keywords of the same names.
_LOAD_OPTIONS = (
    "threads",
    "mimi_threads",
    "temp",
    "lsd_decode_steps",
    "noise_clamp",
    "eos_threshold",
    "frames_after_eos",
    "max_tokens",
    "seed",
)
PROGRESS_FRAMES = 25  # a progress line every 2 s of audio


@dataclass(frozen=True)
class SpeakOptions:
    """One pocket-speak command line, as click parsed it (the fields are the options' names)."""

    text: str | None
    voice: str | None
    model: str | None
    output: str | None
    stream: bool
    markup: bool
    temp: float | None
    lsd_decode_steps: int
    eos_threshold: float | None
    noise_clamp: float | None
    frames_after_eos: int | None
    max_tokens: int
    seed: int | None
    threads: int
    mimi_threads: int
    timestamps_file: str | None
    list_voices: bool
    quiet: bool


def _pcm16(chunk: np.ndarray) -> bytes:
    return (np.clip(chunk, -1.0, 1.0) * 32767).astype("<i2").tobytes()


def _send(chunk: np.ndarray) -> None:
    """Raw 16-bit PCM on stdout, at once: the player behind the pipe is waiting for it."""
    sys.stdout.buffer.write(_pcm16(chunk))
    sys.stdout.buffer.flush()


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


@click.command(context_settings=CONTEXT_SETTINGS)
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
def main(**params) -> None:
    """Speak TEXT with Pocket TTS through GGML.

    \b
      pocket-speak --text "Hello world." -o hello.wav
      pocket-speak --text "Ready? [pause:1.5] Go!" -o go.wav
      pocket-speak --text "Hello world." -o hello.wav --timestamps hello.srt
      llm-chat | pocket-speak --stream --voice me.wav | aplay -f S16_LE -r 24000
    """
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    try:
        with exit_on_pocket_error("pocket-speak: error: "):
            _run(SpeakOptions(**params))
    except BrokenPipeError:  # the player went away: stop quietly
        sys.stderr.close()
        sys.exit(0)


def _run(options: SpeakOptions) -> None:
    from pocket_ggml import subtitles
    from pocket_ggml.api import TTSModel

    if not options.list_voices and not options.output and not options.stream:
        raise click.UsageError("give -o FILE or --stream")
    if options.output and Path(options.output).suffix.lower() not in audio_file.FORMATS:
        raise click.UsageError(f"-o must end in {', '.join(audio_file.FORMATS)}")
    if options.timestamps_file:
        subtitles.check_destination(Path(options.timestamps_file))
    tts = TTSModel.load_model(options.model, **{name: getattr(options, name) for name in _LOAD_OPTIONS})
    if options.list_voices:
        click.echo("\n".join(tts.voice_names) if tts.voice_names else "(no stored voices)")
        return
    if tts.is_synthetic and not options.quiet:
        click.echo(f"pocket-speak: {tts.model_path.name} has synthetic weights: the output is not speech", err=True)
    voice = options.voice
    if voice is None:
        if not tts.voice_names:
            raise PocketError("this model stores no voice: give --voice (an audio file to clone)")
        voice = tts.voice_names[0]
    speaker = _Speaker(tts, tts.get_state_for_audio_prompt(voice), options)
    if options.stream and options.text is None:
        speaker.speak_stdin()
    else:
        speaker.speak(options.text if options.text is not None else sys.stdin.read())


class _Speaker:
    """One run's model, voice and options, and the transcript of what it speaks when --timestamps asks."""

    def __init__(self, tts, state, options: SpeakOptions):
        from pocket_ggml.subtitles import Transcript

        self.tts = tts
        self.state = state
        self.options = options
        self.transcript = Transcript(tts.sample_rate) if options.timestamps_file else None

    def chunks(self, text: str) -> Iterator[np.ndarray]:
        """The audio of `text`; its words go to the transcript, and as JSON lines to stderr when streaming."""
        items = self.tts.generate_audio_stream(
            self.state, text, markup=self.options.markup, timestamps=self.transcript is not None
        )
        for item in items:
            if self.transcript is not None:
                event = self.transcript.add(item)
                if event is not None and self.options.stream:
                    sys.stderr.write(json.dumps(event, ensure_ascii=False) + "\n")
                    sys.stderr.flush()
            if isinstance(item, np.ndarray):
                yield item

    def speak_stdin(self) -> None:
        """Standard input as it arrives, each sentence once it ends, streamed."""
        if self.transcript is None:
            stdin = _StdinPieces(sys.stdin.fileno())
            while not stdin.done:
                for chunk in self.tts.generate_audio_for_text_stream(
                    self.state, stdin.line(), markup=self.options.markup
                ):
                    _send(chunk)
            return
        # Word timestamps come with generate_audio_stream: each line is spoken as a text of its own.
        for line in sys.stdin:
            if line.strip():
                for chunk in self.chunks(line):
                    _send(chunk)
                self.transcript.end_text(line, self.options.markup)
        self.transcript.write(Path(self.options.timestamps_file))

    def speak(self, text: str) -> None:
        """`text` to the -o file and/or streamed, with a progress line on stderr every few seconds of audio."""
        options, rate = self.options, self.tts.sample_rate
        kept = []
        frames = samples = 0
        # Progress lines would break the JSON lines of word events on stderr.
        progress = not options.quiet and not (options.stream and self.transcript is not None)
        for chunk in self.chunks(text):
            frames += 1
            samples += chunk.size
            if options.stream:
                _send(chunk)
            if options.output:
                kept.append(chunk)
            if progress and frames % PROGRESS_FRAMES == 0:
                click.echo(f"\rpocket-speak: {samples / rate:.1f} s of audio", err=True, nl=False)
        if progress and frames >= PROGRESS_FRAMES:
            click.echo("", err=True)
        if options.output:
            audio_file.write(Path(options.output), np.concatenate(kept) if kept else np.zeros(0, np.float32), rate)
        if self.transcript is not None:
            self.transcript.end_text(text, options.markup)
            self.transcript.write(Path(options.timestamps_file))


if __name__ == "__main__":
    main()
