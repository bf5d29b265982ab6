"""The training toolchain end to end on a tiny synthetic corpus: data, teacher, student, export, load."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from kws_daemon.detector import KeywordEvent
from kws_daemon.evaluate import Placement, clip_posteriors, score_stream

pytestmark = [pytest.mark.toolchain, pytest.mark.slow]


def test_score_stream_matches_events_to_placements() -> None:
    def event(keyword: str, t: float) -> KeywordEvent:
        return KeywordEvent(keyword, 0.9, time_s=t, t_wall=0.0, t_mono=0.0)

    placements = [Placement("yes", 1.0, 2.0), Placement("no", 5.0, 6.0), Placement("up", 9.0, 10.0)]
    events = [event("yes", 1.8), event("yes", 2.5), event("off", 6.5), event("go", 20.0)]
    score = score_stream(events, placements)
    assert (score.hits, score.misses, score.wrong, score.extra) == (1, 2, 1, 2)
    assert score.missed_labels == ["no", "up"] and score.false_reject_rate == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("calibrated", "ships"),
    [
        ((0.24, 9.8), True),  # worse than 0.5 in misses, better than 0.8, what applies without them
        ((0.33, 9.8), True),  # within 2 points of 0.8's misses
        ((0.35, 9.8), False),
        ((0.24, 11.0), False),  # more false accepts than 0.8
    ],
)
def test_calibrated_thresholds_ship_when_they_beat_the_default(calibrated: tuple, ships: bool) -> None:
    from kws_daemon.toolchain.evaluation import shipped_thresholds

    def point(threshold: float, miss: float, fa: float) -> dict:
        return {"threshold": threshold, "miss_rate": miss, "false_accepts_per_hour": fa}

    report = {
        "calibrated": {"half_B": point(0.0, *calibrated)},
        "det_half_B": [point(0.5, 0.17, 15.4), point(0.8, 0.318, 9.82)],
        "calibration": {},
    }
    thresholds = {"yes": 0.62}
    assert shipped_thresholds(report, thresholds, log=lambda _: None) == (thresholds if ships else {})
    assert report["calibration"]["shipped"] is ships


def test_hard_negative_sentences_hold_no_keyword_nor_a_soundalike() -> None:
    from kws_daemon.toolchain.dataset import NEGATIVE_SENTENCES, held_out_sentences
    from kws_daemon.toolchain.labels import SPEECH_COMMANDS_V2

    soundalikes = {"too", "for", "fore", "know", "won", "ate", "write", "free", "tee"}
    words = {w for sentence in NEGATIVE_SENTENCES for w in sentence.lower().split()}
    assert not words & (set(SPEECH_COMMANDS_V2) | soundalikes)
    assert not set(NEGATIVE_SENTENCES) & set(held_out_sentences())  # the false-accept stream stays unseen


def test_tiny_training_run_exports_a_loadable_model(tmp_path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng): it speaks the tiny corpus")
    from kws_daemon.model import Model, ModelInfo
    from kws_daemon.toolchain.dataset import LABELS, Clip, Corpus, build_features
    from kws_daemon.toolchain.export import write_model_dir
    from kws_daemon.toolchain.synth import Voice, synthesise_all
    from kws_daemon.toolchain.train import Schedule, StudentShape, TeacherCNN, fit, make_student, predict

    voices = [Voice("espeak", "en-us", 1.0, 50), Voice("espeak", "en-gb+m3", 0.9, 40)]
    words = ["yes", "no", "stop"]
    spoken = list(synthesise_all(voices, words))
    assert len(spoken) == 6
    rng = np.random.default_rng(0)
    noise = [(rng.standard_normal(16000 * 5) * 3000).astype(np.int16)]
    corpus = Corpus(noise_train=noise, noise_test=noise)
    for voice, word, audio in spoken:
        corpus.clips.append(Clip(audio, LABELS.index(word), "train", "synth:espeak", voice.id))
        corpus.clips.append(Clip(audio, LABELS.index(word), "xval", "synth:espeak", voice.id))
    sets = build_features(corpus, copies_real=1, copies_synth=4, n_background=8, seed=0)
    assert sets["train"].x.shape == (6 * 4 + 8, 98, 128) and sets["xval"].x.shape == (6, 98, 128)

    teacher = TeacherCNN()
    fit(teacher, sets["train"], sets["xval"], Schedule(epochs=1, lr=1e-3, batch=8), tmp_path / "t.pt", seed=0)
    soft = predict(teacher, sets["train"])
    student = make_student(StudentShape(hidden=32, layers=1, heads=2), seed=0)

    def train_student() -> list[dict]:
        schedule = Schedule(epochs=2, lr=1e-3, batch=8)
        return fit(
            student, sets["train"], sets["xval"], schedule, tmp_path / "s.pt", seed=0, teacher_logits=soft
        )

    history = train_student()
    assert [h["epoch"] for h in history] == [1, 2]
    assert train_student() == history  # resuming a finished run trains nothing more and keeps the history

    from transformers import ASTFeatureExtractor

    student.save_pretrained(tmp_path / "ckpt")
    ASTFeatureExtractor(mean=-6.845978, std=5.5654526, max_length=100).save_pretrained(tmp_path / "ckpt")
    write_model_dir(tmp_path / "ckpt", tmp_path / "model", force=True)
    model = Model(ModelInfo.load(tmp_path / "model"))
    assert model.info.labels == LABELS and model.info.fbank.max_length == 100
    posteriors = clip_posteriors(model, sets["xval"].x)
    assert posteriors.shape == (6, len(LABELS)) and np.allclose(posteriors.sum(-1), 1, atol=1e-4)
