"""`kws-daemon train-keyword PHRASE`: a model directory for the user's own phrase, trained on this
machine in minutes from offline synthetic voices, and a few of the user's recordings if given.

The phrase is a small head on the frozen speech_embedding backbone (the shipped default model's
graphs), so it trains on two CPU cores. Four stages, each kept in the work directory under a name
that hashes what went into it, so an interrupted run resumes and a rerun with other recordings
reuses the synthesis:

  speech    the phrase said by every installed voice (several intonations each); common words,
            confusables (words and pseudo-words that sound closest to it) and sentences as negatives
  features  augmented windows (rooms, microphones, noise made here or passed with --negatives,
            gain, band limits) as embeddings; one voice in ten held out for validation
  head      a convolution head over the embedding frames, kept at its best validation epoch
  model     int8 export, then thresholds calibrated for --target-fa false accepts an hour on held-out
            synthetic running speech (and --negatives) through the daemon's own pipeline, in
            commands and running mode; the held-out voices' recall; the card

The output directory is written only when everything is done.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.console import Progress
from kws_daemon.embedding import EmbeddingParams, SpeechEmbedding
from kws_daemon.errors import KwsError
from kws_daemon.toolchain.dataset import (
    NEGATIVE_SENTENCES,
    OTHER_SENTENCES,
    Augmentation,
    Augmenter,
    Clip,
    FeatureSet,
    Item,
    read_16k,
    room_impulses,
    trim_to_voice,
)
from kws_daemon.toolchain.labels import BACKGROUND
from kws_daemon.toolchain.roomnoise import room_noises
from kws_daemon.toolchain.synth import Voice, available_voices, synthesise_pairs, voice_sample
from kws_daemon.toolchain.vocabulary import confusables, negative_words

RATE = 16000
STAGES = ("speech", "features", "head", "model")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# Synthetic voices are dry and clean: rooms, microphones and narrow bands are what real ones add.
AUGMENT = Augmentation(speed=0.5, reverb=0.5, eq=0.5, noise=0.85, band_8k=0.1, telephone=0.05)
INTONATIONS = ("{}", "{}!", "{}?", "{}.")
WORD_VOICES = 3  # voices per common word
CONFUSABLE_VOICES = 12  # voices per confusable
SENTENCE_VOICES = 2
FILLER_SENTENCES = 40  # strings of common words, besides the written sentences


@dataclass(frozen=True)
class Recipe:
    phrase: str
    recordings: tuple[Path, ...] = ()  # the user's own clips of the phrase
    negatives: tuple[Path, ...] = ()  # audio that must not fire
    target_fa: float = 0.5  # false accepts an hour, on the calibration audio
    seed: int = 0
    copies: int = 6  # augmented copies of each synthetic positive
    recording_copies: int = 40  # of each of the user's recordings
    epochs: int = 16
    calibration_hours: float = 0.5
    max_voices: int = 0  # 0: every installed voice; else this many of them (faster, less varied)
    frames: int | None = None  # embeddings per window; None: from the phrase's length

    def digest(self, *fields: str) -> str:
        """A short hash of the named fields (of the file paths: their sizes and times too)."""

        def value(name: str) -> Any:
            v = getattr(self, name)
            if name in ("recordings", "negatives"):
                return [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in v]
            return v

        text = json.dumps({name: value(name) for name in fields}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Speech:
    """What the speech stage made: int16 clips, with the voice that said each."""

    positives: list[Clip] = field(default_factory=list)
    negatives: list[Clip] = field(default_factory=list)  # words, confusables, sentences
    voices: list[str] = field(default_factory=list)  # ids of every voice used for the phrase
    confusables: list[str] = field(default_factory=list)  # closest first


def audio_files(paths: tuple[Path, ...], what: str) -> list[Path]:
    """The audio files of the given files and folders (folders searched recursively)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
        elif path.is_file():
            out.append(path)
        else:
            raise KwsError(f"{what} {path}: no such file or folder")
    return out


def read_clips(paths: list[Path], what: str) -> list[np.ndarray]:
    clips = []
    for path in paths:
        try:
            clips.append(read_16k(path))
        except KwsError as e:
            raise KwsError(f"{what} {path}: cannot be read ({e})") from None
    return clips


def _without(phrase: str, sentences: tuple[str, ...]) -> list[str]:
    """The sentences that do not say the phrase (negatives must not hold a positive)."""
    return [s for s in sentences if f" {phrase} " not in f" {s.lower()} "]


def _sentences(phrase: str, rng: np.random.Generator) -> list[str]:
    words = negative_words(phrase)
    filler = [" ".join(rng.choice(words, size=int(rng.integers(5, 10)))) for _ in range(FILLER_SENTENCES)]
    return [*_without(phrase, (*NEGATIVE_SENTENCES, *OTHER_SENTENCES)), *filler]


def recipe_voices(recipe: Recipe) -> list[Voice]:
    voices = available_voices()
    if not voices:
        raise KwsError(
            "no offline voice is installed: apt-get install espeak-ng (and flite, festival, mbrola)"
        )
    if recipe.max_voices:
        return voice_sample(voices, recipe.max_voices, np.random.default_rng(recipe.seed))
    return voices


def synthesise_speech(recipe: Recipe, voices: list[Voice], log: Callable[[str], None]) -> Speech:
    rng = np.random.default_rng(recipe.seed)
    phrase = recipe.phrase
    engines = {v.engine for v in voices}
    positive: list[tuple[Voice, str]] = []
    for voice in voices:  # espeak's hundreds of variants say it twice each, the few others four times
        forms = (
            INTONATIONS if sum(v.engine == voice.engine for v in voices) < 60 else rng.choice(INTONATIONS, 2)
        )
        positive += [(voice, form.format(phrase)) for form in forms]
    origin = {w: "word" for w in negative_words(phrase)}
    near = confusables(phrase)
    origin |= {w: "confusable" for w in near}
    origin |= {s: "sentence" for s in _sentences(phrase, rng)}
    counts = {"word": WORD_VOICES, "confusable": CONFUSABLE_VOICES, "sentence": SENTENCE_VOICES}
    negative = [(v, text) for text, kind in origin.items() for v in voice_sample(voices, counts[kind], rng)]
    log(
        f"speech: the phrase {len(positive)} times by {len(voices)} voices of {len(engines)} engines, "
        f"{len(negative)} negatives"
    )
    progress = Progress("synthesis", len(positive) + len(negative))
    speech = Speech(voices=sorted({v.id for v in voices}), confusables=near)
    for voice, _text, audio in synthesise_pairs(positive, workers=4, progress=progress.advance):
        speech.positives.append(Clip(audio, 0, _split(voice), "synth", voice.id))
    for voice, text, audio in synthesise_pairs(negative, workers=4, progress=progress.advance):
        speech.negatives.append(Clip(audio, 1, _split(voice), origin[text], voice.id))
    progress.close()
    if not speech.positives:
        raise KwsError(f"no installed voice could say {phrase!r}")
    return speech


def _split(voice: Voice) -> str:
    """One voice in ten (stable across runs) is kept for validation and the card's recall."""
    return "val" if int(hashlib.sha1(voice.id.encode()).hexdigest(), 16) % 10 == 0 else "train"


def window_frames(speech: Speech, recordings: list[np.ndarray]) -> int:
    """Embeddings a window needs to hold the phrase, as long as 9 in 10 voices say it, with the 0.45 s
    after it that commands mode leaves (at least the default model's 9)."""
    lengths = [len(trim_to_voice(c.audio.astype(np.float32) / 32768)) for c in speech.positives]
    lengths += [len(trim_to_voice(r.astype(np.float32) / 32768)) for r in recordings]
    need = float(np.percentile(lengths, 90)) + 0.45 * RATE
    frames = 9
    while EmbeddingParams(frames=frames).window_samples < need and frames < 30:
        frames += 1
    return frames


COPIES = {"word": 1, "confusable": 1, "sentence": 6}  # augmented windows per negative clip
# (confusables at 3 copies each took real recall of "seven" from about 83 % to 62 %: docs/custom-keywords.md)
NOISE_WINDOWS = 1500  # windows of noise alone (a tenth of that for validation)
NEGATIVE_WINDOWS = 600  # windows cut from --negatives


def build_features(
    recipe: Recipe,
    speech: Speech,
    recordings: list[np.ndarray],
    negatives: list[np.ndarray],
    backbone: SpeechEmbedding,
) -> dict[str, FeatureSet]:
    """Training and validation windows as embeddings (label 0 the phrase, 1 background)."""
    from kws_daemon.toolchain.embedding_data import embedding_featuriser

    rng = np.random.default_rng(recipe.seed + 1)
    length = backbone.params.window_samples
    sentences = [c.audio for c in speech.negatives if c.origin == "sentence" and c.split == "train"]
    noise = room_noises(rng, speech=sentences) + [n.astype(np.float32) for n in negatives if len(n) > length]
    augment = Augmenter(noise, room_impulses(), recipe.seed, AUGMENT, length=length, placement="word")
    copies = COPIES | {"synth": recipe.copies, "recording": recipe.recording_copies}
    recorded = [Clip(r, 0, "train", "recording") for r in recordings]

    def plan(split: str) -> tuple[list[tuple[Clip, int]], int, int]:
        """The clips with their copies, the windows of noise alone and of --negatives."""
        if split != "train":
            return [(c, 1) for c in speech.positives + speech.negatives if c.split == split], 150, 0
        clips = [c for c in speech.positives + speech.negatives + recorded if c.split == split]
        return [(c, copies[c.origin]) for c in clips], NOISE_WINDOWS, NEGATIVE_WINDOWS * bool(negatives)

    def generate(split: str, progress: Progress) -> Iterator[Item]:
        clips, noise_windows, negative_windows = plan(split)
        for clip, n in clips:
            for _ in range(n):
                progress.advance()
                clean = split == "train" and clip.label == 0 and rng.random() < 0.1  # a few as said
                yield (
                    augment(clip.audio, 0.0 if clean else 1.0, clip.origin == "sentence"),
                    clip.label,
                    clip.origin,
                )
        for _ in range(noise_windows):
            progress.advance()
            yield augment.background(), 1, "noise"
        for _ in range(negative_windows):
            progress.advance()
            yield augment(negatives[rng.integers(len(negatives))], anywhere=True), 1, "negatives"

    sets = {}
    for split in ("train", "val"):
        clips, noise_windows, negative_windows = plan(split)
        progress = Progress(f"windows ({split})", sum(n for _, n in clips) + noise_windows + negative_windows)
        sets[split] = embedding_featuriser(backbone)(generate(split, progress))
        progress.close()
    return sets


def balanced_accuracy(logits: np.ndarray, y: np.ndarray) -> float:
    """The mean of the phrase's recall and the negatives' (the classes differ tenfold in number)."""
    top = logits.argmax(-1)
    return float(np.mean([np.mean(top[y == k] == k) for k in (0, 1) if np.any(y == k)]))


def train_head(
    recipe: Recipe, sets: dict[str, FeatureSet], frames: int, checkpoint: Path, log: Callable[[str], None]
) -> Any:
    from kws_daemon.toolchain.heads import HeadShape, as_float, jitter, make_head
    from kws_daemon.toolchain.train import Schedule, fit

    train, val = sets["train"], sets["val"]
    flat = train.x.reshape(-1, train.x.shape[-1]).astype(np.float32)
    shape = HeadShape(kind="conv", frames=frames, width=64)
    head = make_head(shape, 2, flat.mean(0), flat.std(0) + 1e-3, seed=recipe.seed)
    fit(
        head,
        train,
        val,
        Schedule(epochs=recipe.epochs, lr=2e-3, batch=256, weight_decay=0.05),
        checkpoint,
        seed=recipe.seed,
        log=lambda m: log(f"head: {m}"),
        score=lambda logits: balanced_accuracy(logits, val.y),
        inputs=as_float,
        augment=jitter,
    )
    return head, shape


def calibrate_model(
    directory: Path,
    recipe: Recipe,
    speech: Speech,
    noise: list[np.ndarray],
    negatives: list[np.ndarray],
    voices: list[Voice],
) -> dict[str, Any]:
    """Per mode: the lowest swept threshold (not under 0.5) with at most `target_fa` false accepts an
    hour on held-out synthetic running speech and --negatives, through the daemon's pipeline; and what
    it gives on the held-out voices' phrases spoken alone over room noise."""
    from kws_daemon.config import Config, DetectorConfig
    from kws_daemon.evaluate import score_stream, sweep_events
    from kws_daemon.model import Model, ModelInfo
    from kws_daemon.operating import SWEEP, calibrate
    from kws_daemon.toolchain.dataset import held_out_sentences
    from kws_daemon.toolchain.evaluation import command_stream, synthetic_speech_stream

    sentences = tuple(_without(recipe.phrase, held_out_sentences()))  # none of them trained on
    parts = [synthetic_speech_stream(noise, recipe.calibration_hours, recipe.seed, sentences, voices)]
    stream = np.concatenate(parts + [n.astype(np.int16) for n in negatives])
    hours = len(stream) / RATE / 3600
    held = [c for c in speech.positives if c.split == "val"] or speech.positives[:20]
    commands, placements = command_stream(held, noise, recipe.seed, labels=(recipe.phrase, BACKGROUND))
    model = Model(ModelInfo.load(directory))
    out: dict[str, Any] = {"negative_hours": round(hours, 3), "held_out_phrases": len(held)}
    for mode in ("commands", "running"):
        config = Config(model=directory, detector=replace(DetectorConfig(), mode=mode))
        false = sweep_events(config, model, stream, SWEEP, f"false accepts ({mode})")
        found = sweep_events(config, model, commands, SWEEP, f"held-out voices ({mode})")
        chosen = calibrate(SWEEP, false, hours, recipe.target_fa, [recipe.phrase], floor=0.5)[recipe.phrase]
        curve = [
            {
                "threshold": t,
                "recall": round(1 - score_stream(f, placements).false_reject_rate, 4),
                "fa_per_hour": round(len(n) / hours, 2),
            }
            for t, f, n in zip(SWEEP, found, false, strict=True)
        ]
        out[mode] = {"threshold": chosen, "at_threshold": curve[SWEEP.index(chosen)], "curve": curve}
    return out


def model_card(kws: dict[str, Any]) -> str:
    made, cal = kws["trained"], kws["calibration"]
    rows = "\n".join(
        f"| {mode} | {cal[mode]['threshold']:.2f} | {cal[mode]['at_threshold']['recall']:.1%} | "
        f"{cal[mode]['at_threshold']['fa_per_hour']:.2f} |"
        for mode in ("commands", "running")
    )
    files = made["negative_files"]
    noise = f"and {files} file(s) you passed" if files else "(no --negatives given)"
    yours = " and your negatives" if files else ""
    return f"""# "{kws["phrase"]}": a custom keyword

Trained on this machine by `kws-daemon train-keyword` in {made["seconds"] / 60:.1f} minutes: a
{made["head"]["width"]}-wide convolution head ({made["parameters"]:,} parameters, int8) on
{made["frames"]} frames of Google's speech_embedding ({kws["window_ms"]} ms windows; the backbone is
Apache-2.0, see NOTICE).

## What it was trained on
- The phrase said {made["positives"]} times by {made["voices"]} offline voices
  ({", ".join(made["engines"])}), and {made["recordings"]} of your recordings; each augmented with
  rooms, microphones, noise, gain and band limits.
- Negatives: {made["negatives"]} clips of common words and sentences, {made["confusables"]} of
  confusables ({", ".join(made["confusable_examples"])}, ...); room noise made here {noise}.
- One voice in ten was held out: validation picked the epoch (balanced accuracy
  {made["validation"]:.1%}).

## Operating points (calibrated for {kws["target_fa"]} false accepts an hour)
False accepts: {cal["negative_hours"]} h of held-out synthetic running speech{yours}, through the
daemon's own pipeline. Recall: the held-out voices' {cal["held_out_phrases"]} phrases, spoken alone
2 s apart over room noise at 20 dB SNR.

| mode | threshold | recall (held-out voices) | false accepts / h |
|---|---|---|---|
{rows}

These are synthetic voices the head never trained on, not real people: real speakers and rooms
differ. Record a few of your own (`kws-daemon enroll`), retrain with `--recordings`, and set the
threshold on an hour of your own audio with `kws-daemon tune --negatives ...`.
"""


def train(recipe: Recipe, output: Path, workdir: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Runs the stages that `workdir` does not hold yet and writes the model directory `output`."""
    from kws_daemon.model import default_model_dir
    from kws_daemon.toolchain.embedding_data import save_pickle
    from kws_daemon.toolchain.export_embedding import write_embedding_model_dir
    from kws_daemon.toolchain.progress import Steps

    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    recordings = read_clips(audio_files(recipe.recordings, "--recordings"), "--recordings")
    negatives = read_clips(audio_files(recipe.negatives, "--negatives"), "--negatives")
    steps = Steps(len(STAGES))
    voices = recipe_voices(recipe)
    heard = hashlib.sha256(json.dumps([v.id for v in voices]).encode()).hexdigest()[:8]
    spoken = workdir / f"speech-{recipe.digest('phrase', 'seed')}-{heard}.pkl"
    with steps.step("speech: the phrase and its negatives, synthesised"):
        if spoken.exists():
            speech = pickle.loads(spoken.read_bytes())
        else:
            speech = synthesise_speech(recipe, voices, log)
            save_pickle(speech, spoken)
    frames = recipe.frames or window_frames(speech, recordings)
    trained_on = [f for f in asdict(recipe) if f not in ("target_fa", "calibration_hours")]
    key = f"{recipe.digest(*trained_on)}-{frames}"
    backbone = SpeechEmbedding(default_model_dir(), EmbeddingParams(frames=frames), threads=0)
    with steps.step(f"features: augmented windows of {frames} embeddings"):
        paths = {split: workdir / f"features-{key}-{split}.npz" for split in ("train", "val")}
        if all(p.exists() for p in paths.values()):
            sets = {split: FeatureSet.load(p) for split, p in paths.items()}
        else:
            sets = build_features(recipe, speech, recordings, negatives, backbone)
            for split, features in sets.items():
                tmp = paths[split].with_suffix(".tmp.npz")
                features.save(tmp)
                tmp.replace(paths[split])
    with steps.step(f"head: {recipe.epochs} epochs on {len(sets['train'].y)} windows"):
        head, shape = train_head(recipe, sets, frames, workdir / f"head-{key}.pt", log)
        validation = balanced_accuracy(_logits(head, sets["val"]), sets["val"].y)
    staging = workdir / f"model-{key}"
    with steps.step("model: int8 export, thresholds calibrated, card"):
        write_embedding_model_dir(
            head,
            (recipe.phrase, BACKGROUND),
            frames,
            staging,
            sets["val"].x,
            provenance={"kind": "custom-keyword", "command": "kws-daemon train-keyword", "recipe": key},
        )
        rng = np.random.default_rng(recipe.seed + 2)
        sentences = [c.audio for c in speech.negatives if c.origin == "sentence" and c.split == "val"]
        noise = [n / 32768 for n in room_noises(rng, speech=sentences or None)]
        calibration = calibrate_model(staging, recipe, speech, noise, negatives, voices)
        kws = json.loads((staging / "kws.json").read_text())
        kws |= {
            "phrase": recipe.phrase,
            "default_mode": "commands",
            "target_fa": recipe.target_fa,
            "thresholds": {
                mode: {recipe.phrase: calibration[mode]["threshold"]} for mode in ("commands", "running")
            },
            "calibration": calibration,
            # what `kws-daemon info` shows as the headline numbers
            "evaluation": {
                "summary": {
                    f"{mode}_{what}": calibration[mode]["at_threshold"][measure]
                    for mode in ("commands", "running")
                    for what, measure in (
                        ("threshold", "threshold"),
                        ("recall_held_out_voices", "recall"),
                        ("fa_per_hour_synthetic_speech", "fa_per_hour"),
                    )
                }
            },
            "trained": {
                "seconds": round(time.monotonic() - t0),
                "frames": frames,
                "head": asdict(shape),
                "parameters": sum(p.numel() for p in head.parameters()),
                "positives": sum(c.split == "train" for c in speech.positives),
                "voices": len(speech.voices),
                "engines": sorted({v.split(":")[0] for v in speech.voices}),
                "recordings": len(recordings),
                "negatives": sum(c.origin != "confusable" for c in speech.negatives),
                "confusables": sum(c.origin == "confusable" for c in speech.negatives),
                "confusable_examples": speech.confusables[:6],
                "negative_files": len(recipe.negatives),
                "validation": round(validation, 4),
                "windows": len(sets["train"].y),
                "seed": recipe.seed,
            },
        }
        (staging / "kws.json").write_text(json.dumps(kws, indent=2))
        (staging / "MODEL_CARD.md").write_text(model_card(kws))
    final = output.with_name(output.name + ".new")
    shutil.rmtree(final, ignore_errors=True)
    shutil.copytree(staging, final)
    shutil.rmtree(output, ignore_errors=True)
    final.rename(output)
    return kws


def _logits(head: Any, features: FeatureSet) -> np.ndarray:
    from kws_daemon.toolchain.heads import as_float
    from kws_daemon.toolchain.train import predict

    return predict(head, features, inputs=as_float)
