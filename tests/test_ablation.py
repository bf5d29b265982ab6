"""The ablate stage: what each run takes away, and the stage end to end on a tiny workdir."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.toolchain.ablation import ABLATIONS
from kws_daemon.toolchain.dataset import LABELS, Clip, Corpus, FeatureSet, build_features

ROOT = Path(__file__).resolve().parents[1]


def _features(origins: list[str], seed: int) -> FeatureSet:
    rng = np.random.default_rng(seed)
    x = rng.normal(-5, 2, (len(origins), 98, 128)).astype(np.float16)
    y = rng.integers(0, len(LABELS), len(origins))
    return FeatureSet(x, y, np.asarray(origins))


def test_runs_take_away_only_what_they_name() -> None:
    train = _features(["real:a", "synth:espeak", "other:espeak", "ocean:sentence", "noise"], 0)
    negatives = _features(["negative:espeak", "negative:piper"], 1)

    def origins(name: str) -> list[str]:
        return ABLATIONS[name].training_set(train, negatives).origin.tolist()

    assert origins("full") == [*train.origin.tolist(), *negatives.origin.tolist()]
    assert origins("synthetic-keywords") == [
        "real:a",
        "other:espeak",
        "ocean:sentence",
        "noise",
        *negatives.origin,
    ]
    assert origins("hard-negatives") == train.origin.tolist()
    assert "ocean:sentence" not in origins("speech-ocean")
    assert ABLATIONS["noise"].augmentation.noise == 0.0 and ABLATIONS["noise"].augmentation.speed > 0
    assert ABLATIONS["full"].augmentation.reverb == 0.0  # the recipe dropped the channel augmentations
    channel = ABLATIONS["channel"].augmentation
    assert channel.reverb > 0 and channel.codec > 0 and channel.noise == ABLATIONS["full"].augmentation.noise


def _tone_corpus() -> Corpus:
    rng = np.random.default_rng(0)
    noise = [(rng.standard_normal(16000 * 3) * 3000).astype(np.int16)]
    corpus = Corpus(noise_train=noise, noise_test=noise)
    t = np.arange(12000) / 16000
    for i, word in enumerate(("yes", "no", "stop")):
        audio = (8000 * np.sin(2 * np.pi * (300 + 200 * i) * t)).astype(np.int16)
        corpus.clips.append(Clip(audio, LABELS.index(word), "train", "real:src", f"s{i}"))
        corpus.clips.append(Clip(audio, LABELS.index(word), "xval", "real:other", f"x{i}"))
    return corpus


def test_a_training_set_rebuilt_without_an_augmentation_differs_only_there() -> None:
    corpus = _tone_corpus()
    kwargs = {"copies_real": 2, "copies_synth": 1, "n_background": 2, "seed": 0}
    full = build_features(corpus, **kwargs)
    only_train = build_features(corpus, **kwargs, splits=("train",))
    assert set(only_train) == {"train"} and np.array_equal(only_train["train"].x, full["train"].x)
    quiet = build_features(corpus, **kwargs, augmentation=ABLATIONS["noise"].augmentation, splits=("train",))
    assert quiet["train"].x.shape == full["train"].x.shape and not np.array_equal(
        quiet["train"].x, full["train"].x
    )


def script_dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A training script's workdir, and a data folder that passes its manifest check."""
    work, data = tmp_path / "work", tmp_path / "data"
    work.mkdir()
    data.mkdir()
    (data / "manifest.tsv").write_text("")
    return work, data


def test_ablate_stage_trains_each_run_and_writes_the_table(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    work, data = script_dirs(tmp_path)
    words = ["real:fsdd|nicolas"] * 16 + ["real:sc_v001_vinsis_sample|a"] * 16
    _features(["real:src"] * 200 + ["noise"] * 56, 0).save(work / "train.npz")  # two batches of 128
    _features(["negative:espeak"] * 128, 1).save(work / "negatives.npz")
    _features(words, 2).save(work / "xval.npz")
    _features(["real:src|t"] * 8, 3).save(work / "test.npz")
    run = [sys.executable, str(ROOT / "scripts/train-default-model"), "--workdir", str(work)]
    run += ["--real-data", str(data), "--stages", "ablate", "--ablation-epochs", "1"]
    run += ["--ablations", "full", "hard-negatives"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    table = (work / "ablations.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| full", "| hard-negatives"]
    assert [line.split(" | ")[2] for line in table[2:]] == ["384", "256"]  # maps: negatives taken away
    assert (work / "ablations/full/result.json").is_file()
    again = subprocess.run(run, capture_output=True, text=True, timeout=600)  # resumes: trains nothing
    assert again.returncode == 0 and "ablate full:" not in again.stdout
    assert (work / "ablations.md").read_text().splitlines() == table
