"""Google's speech_embedding (Lin et al., ICASSP 2020) as a frozen front end, batch and streaming.

Two ONNX graphs, as openWakeWord ships them: `melspectrogram.onnx` (32 log-mel bins, 10 ms hop over
512-sample frames, no centre padding) and `embedding_model.onnx` (one 96-number embedding of each
76 mel frames, taken every 8 frames: every 80 ms, seeing 782 ms). A keyword head scores the last
`frames` embeddings. Neither graph pads, so each mel frame depends on its own 512 samples and each
embedding on its own 76 mel frames: the streaming store computes each once, only when a window
asks for it, and gets what the batch path gives for the same audio.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kws_daemon.features import centred

MEL_FRAME = 512  # samples of one mel frame
MEL_HOP = 160  # 10 ms
MEL_BINS = 32
EMBED_WINDOW = 76  # mel frames an embedding sees
EMBED_HOP = 8  # mel frames between embeddings: 80 ms
EMBED_DIM = 96
EMBED_SPAN = (EMBED_WINDOW - 1) * MEL_HOP + MEL_FRAME  # 12,512 samples: 782 ms
EMBED_STEP = EMBED_HOP * MEL_HOP  # 1,280 samples


@dataclass(frozen=True)
class EmbeddingParams:
    """What a head on speech_embedding takes: its last `frames` embeddings, from the two graphs
    in the model directory."""

    frames: int = 9  # 9 embeddings: 1.42 s of audio
    melspectrogram: str = "melspectrogram.onnx"
    embedding: str = "embedding_model.onnx"

    @property
    def window_samples(self) -> int:
        return (self.frames - 1) * EMBED_STEP + EMBED_SPAN


def embedding_count(n_samples: int) -> int:
    """Embeddings that n_samples yield."""
    return 0 if n_samples < EMBED_SPAN else 1 + (n_samples - EMBED_SPAN) // EMBED_STEP


def _session(path: Path, threads: int) -> object:
    """One session per graph file and process, whatever the number of streams: opening one costs
    ~5 ms of CPU, which a server with 64 satellites connecting at once paid 128 times on its event
    loop, and onnxruntime's run() may be called from several threads. A replaced file (a new inode
    or mtime) gets a new session."""
    stat = path.stat()
    return _open_session(path.resolve(), stat.st_ino, stat.st_mtime_ns, threads)


@functools.lru_cache(maxsize=16)
def _open_session(path: Path, inode: int, mtime_ns: int, threads: int) -> object:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class SpeechEmbedding:
    """The two backbone graphs of a model directory; int16-scaled float audio in."""

    def __init__(self, directory: Path, params: EmbeddingParams, threads: int = 1) -> None:
        self.params = params
        self._mel = _session(directory / params.melspectrogram, threads)
        self._embed = _session(directory / params.embedding, threads)

    def _mel_rows(self, audio: np.ndarray) -> np.ndarray:
        """[batch, frames, 32] for rows of float samples in int16 units; openWakeWord's x/10 + 2
        scaling, which brings the ONNX port close to the original TensorFlow front end."""
        (out,) = self._mel.run(None, {"input": audio.astype(np.float32)})  # type: ignore[attr-defined]
        return np.asarray(out[:, 0] / 10 + 2, dtype=np.float32)

    def _embed_rows(self, windows: np.ndarray) -> np.ndarray:
        """[n, 96] for n windows [n, 76, 32] of mel frames."""
        feed = {"input_1": np.ascontiguousarray(windows, dtype=np.float32)[..., None]}
        (out,) = self._embed.run(None, feed)  # type: ignore[attr-defined]
        return np.asarray(out[:, 0, 0, :], dtype=np.float32)

    @staticmethod
    def _windows_of(mel: np.ndarray, n: int) -> np.ndarray:
        """The first n windows of 76 mel frames, every 8, of [..., frames, 32] mel: [..., n, 76, 32]."""
        view = np.lib.stride_tricks.sliding_window_view(mel, EMBED_WINDOW, axis=-2)  # [..., k, 32, 76]
        return np.swapaxes(view[..., ::EMBED_HOP, :, :][..., :n, :, :], -1, -2)

    def mel(self, audio: np.ndarray) -> np.ndarray:
        """[frames, 32] for float samples in int16 units."""
        if len(audio) < MEL_FRAME:
            return np.zeros((0, MEL_BINS), np.float32)
        return self._mel_rows(audio[None])[0]

    def embed(self, mel: np.ndarray) -> np.ndarray:
        """[n, 96]: one embedding per 76 mel frames, every 8."""
        n = 0 if len(mel) < EMBED_WINDOW else 1 + (len(mel) - EMBED_WINDOW) // EMBED_HOP
        if n == 0:
            return np.zeros((0, EMBED_DIM), np.float32)
        return self._embed_rows(self._windows_of(mel, n))

    def windows(self, audio: np.ndarray) -> np.ndarray:
        """[batch, frames, 96] for a batch [batch, window_samples] of int16-scaled windows."""
        frames = self.params.frames
        stacked = self._windows_of(self._mel_rows(audio), frames)  # [batch, frames, 76, 32]
        out = self._embed_rows(stacked.reshape(-1, EMBED_WINDOW, MEL_BINS))
        return out.reshape(len(audio), frames, EMBED_DIM)

    def clip(self, samples: np.ndarray) -> np.ndarray:
        """A head's input [frames, 96] for int16 samples of one clip: the clip is placed in the middle
        of a window of the head's length (cut around its middle when longer)."""
        length = self.params.window_samples
        x = samples.astype(np.float32)
        start = max(0, (len(x) - length) // 2)
        return self.windows(centred(x[start : start + length], length)[None])[0]


class EmbeddingStore:
    """The last seconds of audio, and the mel frames and embeddings of the windows asked for.

    A ring of audio, a ring of mel frames and a ring of embeddings, each indexed by its number in
    the stream. A window of the head asks for its embeddings; missing ones are computed from the mel
    frames, missing mel frames from the audio, so overlapping windows share all their work.
    Audio before the stream began reads as silence.
    """

    def __init__(self, backbone: SpeechEmbedding, capacity_samples: int) -> None:
        self.backbone = backbone
        self.frames = backbone.params.frames
        self._audio = np.zeros(capacity_samples, np.float32)
        self.samples = 0
        mel_capacity = capacity_samples // MEL_HOP
        self._mel = np.zeros((mel_capacity, MEL_BINS), np.float32)
        self._mel_hi = 0  # mel frames [mel_lo, mel_hi) are cached
        self._mel_lo = 0
        self._emb = np.zeros((mel_capacity // EMBED_HOP, EMBED_DIM), np.float32)
        self._emb_lo = self._emb_hi = 0
        self.computed = 0  # embeddings computed so far (each once)

    def push(self, audio: np.ndarray) -> None:
        """int16-scaled float samples."""
        end = self.samples + len(audio)
        kept = audio[-len(self._audio) :]
        self._audio[np.arange(end - len(kept), end) % len(self._audio)] = kept
        self.samples = end

    def audio(self, start: int, end: int) -> np.ndarray:
        idx = np.arange(start, end)
        out = self._audio[idx % len(self._audio)]
        out[idx < 0] = 0.0
        return out

    def _mels(self, start: int, end: int) -> np.ndarray:
        """Mel frames [start, end); negative numbers are frames of the silence before the stream."""
        if not self._mel_lo <= start <= self._mel_hi:
            self._mel_lo = self._mel_hi = start
        if end > self._mel_hi:
            audio = self.audio(self._mel_hi * MEL_HOP, (end - 1) * MEL_HOP + MEL_FRAME)
            self._mel[np.arange(self._mel_hi, end) % len(self._mel)] = self.backbone.mel(audio)
            self._mel_hi = end
            self._mel_lo = max(self._mel_lo, end - len(self._mel))
        return self._mel[np.arange(start, end) % len(self._mel)]

    def window(self, end_sample: int) -> np.ndarray:
        """The head's input [frames, 96]: the last `frames` embeddings complete by `end_sample`."""
        last = (end_sample - EMBED_SPAN) // EMBED_STEP  # may be negative early in a stream
        first = last - self.frames + 1
        if not self._emb_lo <= first <= self._emb_hi:
            self._emb_lo = self._emb_hi = first
        if last + 1 > self._emb_hi:
            lo = self._emb_hi
            mel = self._mels(lo * EMBED_HOP, last * EMBED_HOP + EMBED_WINDOW)
            self._emb[np.arange(lo, last + 1) % len(self._emb)] = self.backbone.embed(mel)
            self.computed += last + 1 - lo
            self._emb_hi = last + 1
            self._emb_lo = max(self._emb_lo, self._emb_hi - len(self._emb))
        return self._emb[np.arange(first, last + 1) % len(self._emb)]
