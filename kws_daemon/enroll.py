"""`kws-daemon enroll PHRASE --output DIR --count 5`: your own recordings of a phrase, made on the
box that will listen, for `kws-daemon train-keyword PHRASE --recordings DIR`.

It prompts, shows the input level, and keeps a take only when it holds one clean utterance: voice
with quiet before and after it (webrtcvad and the commands endpointer), as long as a phrase is, not
clipped, and well above the room's noise. A rejected take says why and is asked for again. Takes
are numbered after the files already in DIR, so nothing recorded before is overwritten.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kws_daemon.audio.level import level_dbfs
from kws_daemon.audio.resample import Resampler
from kws_daemon.audio.vad import VadGate
from kws_daemon.audio.voicing import voiced_runs
from kws_daemon.endpointer import Endpointer, EndpointerConfig, Segment
from kws_daemon.errors import KwsError, UsageError

RATE = 16000
# a take: 0.3 s of quiet before, 0.45 s after (a phrase's words may pause shorter), 0.15-2.5 s of voice
ENDPOINTER = EndpointerConfig(silence_before_ms=300, silence_after_ms=450, min_word_ms=150, max_word_ms=2500)
MARGIN = RATE // 4  # kept either side of the voice
CLIPPED = 32000  # samples at or above this are clipped
MIN_SNR_DB = 12.0


@dataclass(frozen=True)
class Take:
    audio: np.ndarray  # int16, with MARGIN either side
    problem: str = ""  # why it is not kept ("" when it is)


def judge(audio: np.ndarray, noise_rms: float) -> str:
    """Why a take is not one clean utterance, or "" when it is."""
    if int(np.sum(np.abs(audio.astype(np.int32)) >= CLIPPED)) >= 3:
        return "clipped: speak further from the microphone, or turn its gain down"
    runs = voiced_runs(audio, gap_frames=30)  # pauses under 0.3 s are inside the phrase
    if len(runs) > 1:
        return f"{len(runs)} utterances heard: say the phrase once"
    voice = audio[runs[0][0] : runs[0][1]] if runs else audio
    snr = 20 * np.log10((np.sqrt(np.mean(voice.astype(np.float64) ** 2)) + 1e-9) / (noise_rms + 1e-9))
    if snr < MIN_SNR_DB:
        return (
            f"too quiet ({snr:.0f} dB above the room's noise, want {MIN_SNR_DB:.0f}): speak up or come closer"
        )
    return ""


class Enroller:
    """Takes out of a 16 kHz stream, one per utterance closed by the endpointer."""

    def __init__(self, aggressiveness: int = 2) -> None:
        self._vad = VadGate(aggressiveness, 30, hangover_ms=0)
        self._endpointer = Endpointer(ENDPOINTER, self._vad.frame_samples)
        self._audio = np.zeros(0, np.int16)
        self._offset = 0  # stream position of self._audio[0]

    def __call__(self, samples: np.ndarray) -> list[Take]:
        self._audio = np.concatenate([self._audio, samples])
        self._vad(samples)
        closed = self._endpointer(self._vad.decisions, self._vad.levels)
        # a click or a breath shorter than a word is not a take: it is not reported
        takes = [self._take(c) for c in closed if c.duration_ms() >= ENDPOINTER.min_word_ms]
        keep = 10 * RATE  # the last 10 s are enough for any take
        if len(self._audio) > keep:
            self._offset += len(self._audio) - keep
            self._audio = self._audio[-keep:]
        return takes

    def _take(self, segment: Segment) -> Take:
        start, end = segment.start, segment.end
        lo, hi = max(0, start - MARGIN - self._offset), end + MARGIN - self._offset
        audio = self._audio[lo:hi]
        if segment.duration_ms() > ENDPOINTER.max_word_ms:
            return Take(audio, f"{(end - start) / RATE:.1f} s of speech: say only the phrase, then pause")
        if not segment.is_command(ENDPOINTER):
            return Take(audio, "no pause before it: wait for the prompt, then speak")
        before = self._audio[max(0, lo - RATE // 2) : max(0, start - self._offset - RATE // 10)]
        noise = float(np.sqrt(np.mean(before.astype(np.float64) ** 2))) if len(before) else 30.0
        return Take(audio, judge(audio, max(noise, 1.0)))


def _meter(samples: np.ndarray) -> str:
    level = level_dbfs(samples)
    bar = "#" * int(np.clip((level + 60) / 2, 0, 30))
    return f"\r  level [{bar:.<30}] {level:5.0f} dBFS"


def command(args: argparse.Namespace) -> int:
    from kws_daemon.audio.ringbuffer import RingBuffer
    from kws_daemon.audio.sources import open_source
    from kws_daemon.config import AudioConfig
    from kws_daemon.trainkwcli import phrase_of

    phrase = phrase_of(args.phrase)
    if args.count < 1:
        raise UsageError("--count must be at least 1")
    output: Path = args.output
    if output.exists() and not output.is_dir():
        raise UsageError(f"--output {output} is a file, not a folder")
    output.mkdir(parents=True, exist_ok=True)
    slug = "-".join(phrase.split())
    number = len(list(output.glob(f"{slug}-*.wav")))
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    source = open_source(AudioConfig(device=device, input=args.input, realtime=False if args.input else None))
    ring = RingBuffer(source.block_size, 200, source.sample_rate)
    tty = sys.stderr.isatty()
    enroller, resampler = Enroller(), Resampler(source.sample_rate, RATE)
    kept: list[Path] = []
    source.start(ring)
    try:
        while len(kept) < args.count:
            print(f"[{len(kept) + 1}/{args.count}] say '{phrase}' now", file=sys.stderr, flush=True)
            deadline = time.monotonic() + args.timeout
            takes: list[Take] = []
            while not takes:
                block = ring.read(timeout=0.5)
                if block is None:
                    if source.error is not None:
                        raise source.error
                    if ring.closed or time.monotonic() > deadline:
                        why = "by the end of the input" if ring.closed else f"in {args.timeout:.0f} s"
                        raise KwsError(
                            f"no clean take of '{phrase}' heard {why}; "
                            f"kept {len(kept)} of {args.count} in {output}"
                        )
                    continue
                samples = resampler(block.samples)
                if tty:
                    print(_meter(samples), end="", file=sys.stderr, flush=True)
                takes = enroller(samples)
            if tty:
                print("\r" + " " * 60 + "\r", end="", file=sys.stderr)
            for take in takes:
                if take.problem:
                    print(f"  not kept: {take.problem}", file=sys.stderr, flush=True)
                    continue
                number += 1
                path = output / f"{slug}-{number:03d}.wav"
                _write(path, take.audio)
                kept.append(path)
                print(f"  kept {path} ({len(take.audio) / RATE:.1f} s)", file=sys.stderr, flush=True)
                if len(kept) == args.count:
                    break
    finally:
        source.stop()
    print(
        f"{len(kept)} recordings of '{phrase}' in {output}; next: kws-daemon train-keyword '{phrase}' "
        f"--recordings {output} --output DIR"
    )
    return 0


def _write(path: Path, audio: np.ndarray) -> None:
    import soundfile as sf

    tmp = path.with_suffix(".tmp.wav")
    sf.write(tmp, audio, RATE, subtype="PCM_16")
    tmp.replace(path)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("enroll", help="record your own takes of a phrase, for train-keyword --recordings")
    p.add_argument("phrase", metavar="PHRASE")
    p.add_argument("--output", required=True, type=Path, metavar="DIR", help="folder for the takes")
    p.add_argument("--count", type=int, default=5, help="takes to keep (default 5)")
    p.add_argument("--device", help="input device, by (part of) its name or its index")
    p.add_argument("--input", metavar="AUDIO", help="cut the takes out of a recording instead of the mic")
    p.add_argument("--timeout", type=float, default=30.0, metavar="S", help="for each take (default 30)")
    p.set_defaults(func=command)
