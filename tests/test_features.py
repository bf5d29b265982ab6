"""The numpy front end against transformers' ASTFeatureExtractor, and streaming against batch."""

from __future__ import annotations

import numpy as np
import pytest

from kws_daemon.audio.sources import read_audio
from kws_daemon.features import Fbank, FbankParams, FrameStore, frame_count, pad_and_normalise
from tests.conftest import DEMO_WAV

SC = FbankParams(num_mel_bins=128, mean=-6.845978, std=5.5654526, max_length=128)


def _reference(audio: np.ndarray, max_length: int = 128) -> np.ndarray:
    transformers = pytest.importorskip("transformers", reason="the dev/export extras bring transformers")
    fe = transformers.ASTFeatureExtractor(mean=SC.mean, std=SC.std, max_length=max_length)
    return fe(audio, sampling_rate=16000, return_tensors="np")["input_values"][0]


def _clips() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    t = np.arange(16000) / 16000
    demo, _ = read_audio(DEMO_WAV)
    return {
        "noise": (rng.standard_normal(16000) * 0.1).astype(np.float32),
        "chirp": (0.5 * np.sin(2 * np.pi * (200 + 3000 * t) * t)).astype(np.float32),
        "silence": np.zeros(16000, dtype=np.float32),
        "short": (rng.standard_normal(7000) * 0.3).astype(np.float32),
        "long": (rng.standard_normal(20000) * 0.05).astype(np.float32),  # truncated to max_length
        "speech": demo[16000:32000].astype(np.float32) / 32768,
    }


@pytest.mark.parametrize("name", list(_clips()))
def test_matches_ast_feature_extractor(name: str) -> None:
    audio = _clips()[name]
    ours = pad_and_normalise(Fbank(128)(audio), SC)
    assert np.abs(ours - _reference(audio)).max() < 1e-3


def test_matches_on_real_speech(kws_real) -> None:
    manifest = (kws_real / "manifest.tsv").read_text().splitlines()[1:]
    for row in manifest[:: len(manifest) // 8][:8]:
        audio, rate = read_audio(kws_real / row.split("\t")[0])
        if rate != 16000:
            continue
        audio = audio.astype(np.float32) / 32768
        assert np.abs(pad_and_normalise(Fbank(128)(audio), SC) - _reference(audio)).max() < 1e-3


def test_frames_on_demand_equal_batch_for_any_block_sizes_and_ranges() -> None:
    """Frames computed late, in any order of block sizes and requested ranges, are the batch frames."""
    rng = np.random.default_rng(2)
    audio = (rng.standard_normal(16000 * 6) * 0.2).astype(np.float32)
    batch = Fbank(128)(audio)
    store = FrameStore(128, capacity_frames=150)
    i, checked = 0, 0
    while i < len(audio):
        block = audio[i : i + int(rng.integers(1, 4000))]
        store.push(block)
        i += len(block)
        assert store.n_frames == frame_count(i)
        if rng.random() < 0.5 and store.n_frames > 0:  # skipped stretches are never computed
            end = int(rng.integers(max(1, store.n_frames - 40), store.n_frames + 1))
            start = max(0, end - int(rng.integers(1, 101)))
            np.testing.assert_array_equal(store.frames(start, end), batch[start:end])
            checked += 1
    assert checked > 10
    np.testing.assert_array_equal(store.frames(len(batch) - 150, len(batch)), batch[-150:])


def test_a_block_longer_than_the_store_keeps_stream_frame_numbers() -> None:
    audio = (np.random.default_rng(5).standard_normal(16000 * 4) * 0.2).astype(np.float32)
    store = FrameStore(128, capacity_frames=100)
    store.push(audio)  # 4 s into a store of 1 s: the newest second stays
    assert store.n_frames == frame_count(len(audio))
    np.testing.assert_array_equal(store.frames(store.n_frames - 90, store.n_frames), Fbank(128)(audio)[-90:])


def test_frame_count_is_kaldi_snip_edges() -> None:
    assert [frame_count(n) for n in (0, 399, 400, 559, 560, 16000)] == [0, 0, 1, 1, 2, 98]


def test_padding_is_zero_before_normalising() -> None:
    frames = np.ones((10, 128), dtype=np.float32)
    out = pad_and_normalise(frames, SC)
    assert out.shape == (128, 128)
    np.testing.assert_allclose(out[10:], (0 - SC.mean) / (2 * SC.std), rtol=1e-6)
    np.testing.assert_allclose(out[:10], (1 - SC.mean) / (2 * SC.std), rtol=1e-6)


def test_a_short_clip_is_heard_in_a_second_of_silence() -> None:
    from kws_daemon.features import centred

    word = np.full(5600, 1000, np.int16)  # 0.35 s, as FSDD's digits
    placed = centred(word)
    assert len(placed) == 16000 and placed[:5200].max() == 0 and placed[-5200:].max() == 0
    assert placed[5200:10800].min() == 1000
    long = np.ones(20000, np.int16)
    assert centred(long) is long  # a second or longer: as recorded
