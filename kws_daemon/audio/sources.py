"""Where audio comes from: a microphone (PortAudio), a WAV/FLAC file, or raw s16le PCM on stdin.

Each source runs at the edge on its own thread (or PortAudio's callback thread) and writes mono
int16 blocks into a RingBuffer at its native rate; resampling happens downstream in the pipeline.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from kws_daemon.audio.ringbuffer import RingBuffer
from kws_daemon.errors import KwsError

log = logging.getLogger("kws_daemon.audio")
MODEL_RATE = 16000
# Files outside these rates are broken or exotic: a 1 Hz header would make empty blocks (read forever),
# a 400 MHz one would make the ring buffer gigabytes.
MIN_FILE_RATE, MAX_FILE_RATE = 1000, 384000
RETRY_FIRST_S, RETRY_MAX_S = 0.5, 4.0  # reopening a lost device: audio resumes < 5 s after it is back
# libsndfile's log of a WAV whose data chunk runs past the end of the file (it reads what is there)
_SHORT_DATA = re.compile(r"^data : (\d+) \(should be (\d+)\)$", re.M)
_STREAMED_SIZE = 2**31 - 2**16  # sizes from here up are placeholders of writers that could not seek back


def _open_sound_file(path: str | Path) -> Any:
    import soundfile as sf

    p = Path(path)
    # os.path, not Path: it answers False for names the kernel refuses (too long, NUL) instead of raising
    if os.path.isdir(p):
        raise KwsError(f"{p}: is a directory, not an audio file")
    if not os.path.exists(p):
        raise KwsError(f"{p}: no such file")
    try:
        f = sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError) as e:
        reason = str(e).split(":")[-1].strip() or "unknown error"
        raise KwsError(f"{p}: not a readable audio file ({reason})") from None
    if not MIN_FILE_RATE <= f.samplerate <= MAX_FILE_RATE:
        f.close()
        raise KwsError(
            f"{p}: sample rate {f.samplerate} Hz is not supported ({MIN_FILE_RATE} to {MAX_FILE_RATE} Hz)"
        )
    if f.frames == 0:
        f.close()
        raise KwsError(f"{p}: contains no audio")
    _warn_if_truncated(p, f)
    return f


def _warn_if_truncated(path: Path, f: Any) -> None:
    """A WAV cut short (a copy or a recording that stopped early) is read as far as it goes, and said
    to be: its header's data size is more than the file holds."""
    short = _SHORT_DATA.search(f.extra_info)
    if short is None:
        return
    declared, held = int(short[1]), int(short[2])
    if not 0 < held < declared < _STREAMED_SIZE:
        return
    seconds = f.frames / f.samplerate
    log.warning(
        "%s: truncated: its header declares %.2f s of audio, the file holds %.2f s; reading those",
        path,
        seconds * declared / held,
        seconds,
    )


def _to_mono_int16(data: np.ndarray) -> np.ndarray:
    """Averages float32 channels into int16 mono.

    Files are read as float32 because libsndfile does not scale float WAV/FLAC data read as int16
    (it truncates to near silence); int16 sources survive the round trip exactly.
    """
    mono = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]
    return np.clip(np.round(mono * 32768.0), -32768, 32767).astype(np.int16)


def file_blocks(path: str | Path, block_ms: int, loop: bool = False) -> tuple[int, Iterator[np.ndarray]]:
    """The file's sample rate, and its audio as mono int16 blocks of block_ms (streamed, not loaded whole)."""
    import soundfile as sf

    f = _open_sound_file(path)
    rate = int(f.samplerate)
    size = rate * block_ms // 1000

    def blocks() -> Iterator[np.ndarray]:
        with f:
            while True:
                try:
                    for data in f.blocks(blocksize=size, dtype="float32", always_2d=True):
                        yield _to_mono_int16(data)
                except (sf.LibsndfileError, RuntimeError) as e:
                    raise KwsError(f"{path}: audio data is corrupt or truncated ({e})") from None
                if not loop:
                    return
                f.seek(0)

    return rate, blocks()


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """A whole (short) file as mono int16 and its sample rate."""
    rate, blocks = file_blocks(path, 1000)
    return np.concatenate(list(blocks)), rate


class _ThreadSource:
    """A source that pushes blocks from a generator into the ring on its own thread."""

    sample_rate: int
    block_size: int
    live = False  # a live source drops oldest audio on overflow; others wait

    def __init__(self, realtime: bool) -> None:
        self._realtime = realtime
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.error: KwsError | None = None

    def _blocks(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def start(self, ring: RingBuffer) -> None:
        self._thread = threading.Thread(target=self._pump, args=(ring,), name="source", daemon=True)
        self._thread.start()

    def _pump(self, ring: RingBuffer) -> None:
        start = time.monotonic()
        written = 0
        try:
            for samples in self._blocks():
                written += len(samples)
                if self._realtime:
                    delay = start + written / self.sample_rate - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        break
                if self._stop.is_set() or not ring.write(samples, time.monotonic(), time.time(), block=True):
                    break
        except KwsError as e:
            self.error = e
        finally:
            ring.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class FileSource(_ThreadSource):
    def __init__(self, path: str, block_ms: int, realtime: bool = False, loop: bool = False) -> None:
        super().__init__(realtime)
        self.name = path
        self.sample_rate, self._iter = file_blocks(path, block_ms, loop)
        self.block_size = self.sample_rate * block_ms // 1000

    def _blocks(self) -> Iterator[np.ndarray]:
        return self._iter


class StdinSource(_ThreadSource):
    """Raw signed 16-bit little-endian mono PCM at 16 kHz, e.g. from `arecord -f S16_LE -r 16000`."""

    name = "stdin"

    def __init__(self, block_ms: int, realtime: bool = False, stream: BinaryIO | None = None) -> None:
        super().__init__(realtime)
        self.sample_rate = MODEL_RATE
        self.block_size = MODEL_RATE * block_ms // 1000
        self._stream = stream if stream is not None else sys.stdin.buffer

    def _blocks(self) -> Iterator[np.ndarray]:
        carry = b""
        while not self._stop.is_set():
            chunk = self._stream.read(self.block_size * 2 - len(carry))
            if not chunk:
                return
            data = carry + chunk
            usable = len(data) - len(data) % 2
            carry = data[usable:]
            if usable:
                yield np.frombuffer(data[:usable], dtype="<i2").astype(np.int16)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as e:  # the PortAudio shared library is missing
        raise KwsError(f"PortAudio is not available ({e}); install libportaudio2") from None
    return sounddevice


def _reinitialise_portaudio(sd: Any) -> None:
    """PortAudio reads the device list once, at initialisation: a device that was unplugged and plugged
    back in (perhaps as another card number) is only found after a new one. No stream may be open."""
    if sd._initialized:
        sd._terminate()
    sd._initialize()


class MicSource:
    """A PortAudio input stream whose callback only copies into the ring and stamps the time.

    A capture thread watches the stream. When it ends on its own (a USB microphone unplugged, the sound
    server gone: PortAudio then stops the stream and calls finished_callback) the source reports it
    (`lost`, `device_errors`) and reopens the configured device with backoff, RETRY_FIRST_S doubling
    to RETRY_MAX_S, re-initialising PortAudio before each attempt. The ring buffer stays open, so the
    pipeline and the hooks never notice more than a gap in the audio, and no restart is needed.
    """

    live = True

    def __init__(self, device: str | int | None, sample_rate: int | None, block_ms: int) -> None:
        sd = _sounddevice()

        self.name = f"mic:{device if device is not None else 'default'}"
        self.error: KwsError | None = None
        self.overflows = 0
        self.device_errors = 0  # times the stream ended on its own
        self.lost: str | None = None  # why, while the device is lost and being reopened
        try:
            info = sd.query_devices(device, "input")
        except (ValueError, sd.PortAudioError) as e:
            if device is None:  # PortAudio's "Error querying device -1": it has no default input
                raise KwsError(
                    "no default input device: pick one with --device or audio.device (see "
                    "`kws-daemon devices`), or read a file or stdin with --input"
                ) from None
            raise KwsError(f"audio.device: {e} (see `kws-daemon devices`)") from None
        self._device = device  # as configured (None: the default input), resolved again at each reopen
        self.sample_rate = sample_rate or self._pick_rate(sd, info)
        self.block_size = self.sample_rate * block_ms // 1000
        self._stream: Any = None
        self._ring: RingBuffer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _pick_rate(self, sd: Any, info: dict[str, Any]) -> int:
        try:
            sd.check_input_settings(self._device, samplerate=MODEL_RATE, channels=1, dtype="int16")
            return MODEL_RATE
        except (ValueError, sd.PortAudioError):
            rate = int(info["default_samplerate"])
            log.info("device %s cannot capture at 16 kHz; capturing at %d Hz and resampling", self.name, rate)
            return rate

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        if status.input_overflow:
            self.overflows += 1
        assert self._ring is not None
        self._ring.write(indata[:, 0], time.monotonic(), time.time())

    def _open(self) -> threading.Event:
        """Opens and starts a stream; the event is set when that stream ends, whoever ends it."""
        sd = _sounddevice()
        ended = threading.Event()
        stream = sd.InputStream(
            device=self._device,
            samplerate=self.sample_rate,
            channels=1,
            dtype="int16",
            blocksize=self.block_size,
            callback=self._callback,
            finished_callback=ended.set,
        )
        try:
            stream.start()
        except BaseException:
            stream.close(ignore_errors=True)
            raise
        self._stream = stream
        return ended

    def start(self, ring: RingBuffer) -> None:
        sd = _sounddevice()
        self._ring = ring
        try:
            ended = self._open()
        except (ValueError, sd.PortAudioError) as e:
            raise KwsError(f"audio device {self.name}: cannot open for capture ({e})") from None
        self._thread = threading.Thread(target=self._watch, args=(ended,), name="capture", daemon=True)
        self._thread.start()

    def _watch(self, ended: threading.Event) -> None:
        """The capture thread, sole owner of the stream until stop(): reopens it whenever it ends."""
        while not self._stop.wait(0.25):
            # `active` as well as the callback: a host API may end a stream without calling it
            if ended.is_set() or not self._stream.active:
                reopened = self._reopen()
                if reopened is None:
                    return
                ended = reopened

    def _reopen(self) -> threading.Event | None:
        """Retries with backoff until the device opens (its event) or stop() is called (None)."""
        sd = _sounddevice()
        self.device_errors += 1
        self.lost = "capture stopped (device unplugged or sound server gone)"
        log.error("audio device %s lost: %s; reopening it", self.name, self.lost)
        self._stream.close(ignore_errors=True)
        self._stream = None
        since, attempts, delay = time.monotonic(), 0, RETRY_FIRST_S
        next_warning = since + 60.0
        while not self._stop.wait(delay):
            attempts += 1
            try:
                _reinitialise_portaudio(sd)
                ended = self._open()
            except (ValueError, sd.PortAudioError) as e:
                self.lost = f"cannot reopen: {e}"
                delay = min(2 * delay, RETRY_MAX_S)
                if attempts == 1 or time.monotonic() >= next_warning:
                    next_warning = time.monotonic() + 60.0
                    log.warning(
                        "audio device %s: %s (attempt %d, %.1fs after the loss); next attempt in %gs",
                        self.name,
                        self.lost,
                        attempts,
                        time.monotonic() - since,
                        delay,
                    )
                continue
            self.lost = None
            log.info("audio device %s is back after %.1fs", self.name, time.monotonic() - since)
            return ended
        return None

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        if self._stream is not None:
            self._stream.close(ignore_errors=True)
            self._stream = None
        if self._ring is not None:
            self._ring.close()


Source = FileSource | StdinSource | MicSource


def open_source(audio: Any) -> Source:
    """The source the config's audio section names: input file, stdin ('-'), or a device."""
    if audio.input == "-":
        return StdinSource(audio.block_ms, audio.realtime is True)
    if audio.input:
        return FileSource(audio.input, audio.block_ms, audio.realtime is not False, audio.loop)
    return MicSource(audio.device, audio.sample_rate, audio.block_ms)


def list_devices() -> list[dict[str, Any]]:
    sd = _sounddevice()
    try:
        devices = sd.query_devices()
    except sd.PortAudioError as e:
        raise KwsError(f"cannot list audio devices ({e})") from None
    default_in = sd.default.device[0]
    return [
        {
            "index": d["index"],
            "name": d["name"],
            "channels": d["max_input_channels"],
            "default_samplerate": int(d["default_samplerate"]),
            "default": d["index"] == default_in,
        }
        for d in devices
        if d["max_input_channels"] > 0
    ]
