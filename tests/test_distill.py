"""The speech-embedding head as the AST student's teacher (scripts/train-default-model --teacher-head)."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.toolchain.dataset import LABELS, FeatureSet, featurise
from kws_daemon.toolchain.distill import HeadTeacher, loudest_second
from tests.test_ablation import _tone_corpus, script_dirs

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT / "models/default"


def test_the_student_gets_the_loudest_second_of_the_window() -> None:
    window = np.zeros(22720, np.float32)
    window[15000:20000] = 0.5
    crop = loudest_second(window)
    assert len(crop) == 16000 and crop.sum() == pytest.approx(0.5 * 5000)
    assert len(loudest_second(window[:9000])) == 9000  # shorter than a second: all of it


def test_each_window_is_paired_with_the_heads_posteriors_on_it() -> None:
    teacher = HeadTeacher(DEFAULT, threads=1)
    rng = np.random.default_rng(0)
    items = [
        (rng.standard_normal(teacher.length).astype(np.float32) * 10 ** -rng.uniform(0.5, 3), i % 36, f"o{i}")
        for i in range(70)  # more than one batch of 64
    ]
    made = teacher.featuriser()(items)
    assert made.x.shape == (70, 98, 128) and made.soft is not None and made.soft.shape == (70, len(LABELS))
    assert made.y.tolist() == [i % 36 for i in range(70)] and made.origin[66] == "o66"
    alone = teacher.log_posteriors(items[66][0][None])[0]
    assert np.allclose(made.soft[66], alone, atol=1e-4)
    assert not np.allclose(made.soft[65], alone, atol=1e-2)
    assert np.array_equal(made.x[66], featurise([(loudest_second(items[66][0]), 0, "")]).x[0])


def test_data_and_teacher_stages_take_the_heads_posteriors(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    work, data = script_dirs(tmp_path)
    with (work / "corpus.pkl").open("wb") as f:  # as train-embedding-model's corpus stage leaves it
        pickle.dump(_tone_corpus(), f)
    negatives = FeatureSet(
        np.zeros((4, 98, 128), np.float16),
        np.full(4, len(LABELS) - 1),
        np.asarray(["negative:espeak"] * 4),
        soft=np.zeros((4, len(LABELS)), np.float32),
    )
    negatives.save(work / "negatives.npz")
    run = [sys.executable, str(ROOT / "scripts/train-default-model"), "--workdir", str(work)]
    run += ["--real-data", str(data), "--copies-real", "2", "--background", "3"]
    refused = subprocess.run([*run, "--teacher-head", str(DEFAULT)], capture_output=True, text=True)
    assert refused.returncode == 2 and "--distill" in refused.stderr and "Traceback" not in refused.stderr
    run += ["--stages", "data,teacher", "--teacher-head", str(DEFAULT), "--distill", "0.7"]
    done = subprocess.run(run, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    train, xval = FeatureSet.load(work / "train.npz"), FeatureSet.load(work / "xval.npz")
    assert len(train.y) == 3 * 3 + 3 and train.soft is not None and xval.soft is None  # 2 copies + clean
    assert train.x.shape[1:] == xval.x.shape[1:] == (98, 128)
    assert np.allclose(np.exp(train.soft).sum(1), 1, atol=1e-4)
    soft = np.load(work / "teacher_logits.npy")
    assert np.array_equal(soft, np.concatenate([train.soft, negatives.soft]))
