"""The command line as a user runs it: detect, run from a file or stdin, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws_daemon import __version__
from kws_daemon.audio.sources import read_audio
from tests.conftest import DEMO_WAV, kws

FIRE = "detector: {threshold: 0.0}\n"  # every voiced window whose top label is a keyword fires


def _config(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(FIRE + extra)
    return path


def _detections(stdout: bytes) -> list[tuple[str, float, float]]:
    return [(r["keyword"], r["time_s"], r["score"]) for r in map(json.loads, stdout.decode().splitlines())]


def test_version() -> None:
    assert kws("--version").stdout.decode().strip() == f"kws-daemon {__version__}"


def test_detect_json_fields(tmp_path: Path) -> None:
    result = kws("detect", "--config", str(_config(tmp_path)), "--json", str(DEMO_WAV))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert records
    for r in records:
        assert r["file"] == str(DEMO_WAV) and isinstance(r["keyword"], str) and 0 <= r["score"] <= 1
        assert 0 < r["time_s"] <= 8.2
    assert [r["time_s"] for r in records] == sorted(r["time_s"] for r in records)


def test_default_model_hears_the_demo_words_at_the_default_threshold() -> None:
    """demo/demo.wav says "yes", "stop", "go", "up" (espeak-ng) under quiet noise: four events, in order."""
    result = kws("detect", "--json", str(DEMO_WAV))
    assert result.returncode == 0, result.stderr
    assert [keyword for keyword, _, _ in _detections(result.stdout)] == ["yes", "stop", "go", "up"]


def test_detect_reports_each_bad_file_and_keeps_going(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0, dtype=np.int16), 16000)
    truncated = tmp_path / "truncated.wav"
    truncated.write_bytes(DEMO_WAV.read_bytes()[:30])
    text = tmp_path / "notes.txt"
    text.write_text("not audio")
    result = kws(
        "detect",
        "--config",
        str(_config(tmp_path)),
        "--json",
        str(empty),
        str(truncated),
        str(text),
        str(tmp_path),
        str(tmp_path / "missing.flac"),
        str(DEMO_WAV),
    )
    assert result.returncode == 1
    errors = result.stderr.decode().splitlines()
    errors = [e for e in errors if e.startswith("kws-daemon: error:")]
    assert len(errors) == 5
    assert "contains no audio" in errors[0] and "is a directory" in errors[3] and "no such file" in errors[4]
    assert "Traceback" not in result.stderr.decode()
    assert _detections(result.stdout)  # the good file was still processed


def test_a_wav_cut_short_in_its_data_chunk_is_read_as_far_as_it_goes_with_a_warning(tmp_path: Path) -> None:
    whole = DEMO_WAV.read_bytes()
    assert sf.info(DEMO_WAV).frames == (len(whole) - 44) // 2  # a plain 44-byte header, 16-bit mono
    cut = tmp_path / "cut.wav"
    cut.write_bytes(whole[: 44 + 16000 * 2 * 4])  # the first 4 s: "yes", "stop"
    result = kws("detect", "--json", str(cut))
    assert result.returncode == 0, result.stderr
    assert (
        f"WARNING: {cut}: truncated: its header declares 8.20 s of audio, the file holds 4.00 s".encode()
        in (result.stderr)
    )
    assert [keyword for keyword, _, _ in _detections(result.stdout)] == ["yes", "stop"]
    assert b"truncated" not in kws("detect", str(DEMO_WAV)).stderr


def test_run_on_a_file_fires_the_same_hooks_as_detect(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = _config(tmp_path, f"hooks: [{{jsonl: {events}}}]\n")
    run = kws("run", "--config", str(config), "--input", str(DEMO_WAV), "--fast")
    assert run.returncode == 0, run.stderr
    live = _detections(events.read_bytes())
    detect = kws("detect", "--config", str(config), "--json", str(DEMO_WAV))
    assert live and _detections(detect.stdout) == live
    assert _detections(events.read_bytes()) == live + live  # detect fired the config's hooks too
    assert b"stats:" in run.stderr and b"latency ms p50/p95/p99" in run.stderr


def test_run_from_stdin_equals_detect(tmp_path: Path) -> None:
    events = tmp_path / "events.jsonl"
    config = _config(tmp_path, f"hooks: [{{jsonl: {events}}}]\n")
    audio, _ = read_audio(DEMO_WAV)
    run = kws("run", "--config", str(config), "--input", "-", input=audio.astype("<i2").tobytes())
    assert run.returncode == 0, run.stderr
    offline = _detections(kws("detect", "--config", str(_config(tmp_path)), "--json", str(DEMO_WAV)).stdout)
    assert _detections(events.read_bytes()) == offline


@pytest.mark.parametrize(
    ("rate", "channels", "subtype", "fmt"),
    [
        (44100, 2, "PCM_16", "WAV"),
        (48000, 1, "PCM_24", "FLAC"),
        (8000, 1, "PCM_U8", "WAV"),
        (16000, 1, "FLOAT", "WAV"),
    ],
)
def test_other_formats_are_converted(
    tmp_path: Path, rate: int, channels: int, subtype: str, fmt: str
) -> None:
    import soxr

    audio, _ = read_audio(DEMO_WAV)
    converted = soxr.resample(audio.astype(np.float32) / 32768, 16000, rate)
    path = tmp_path / f"clip.{fmt.lower()}"
    sf.write(path, np.repeat(converted[:, None], channels, axis=1), rate, subtype=subtype, format=fmt)
    result = kws("detect", "--config", str(_config(tmp_path)), "--json", str(path))
    assert result.returncode == 0, result.stderr
    assert _detections(result.stdout)


def test_bad_config_is_one_line_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("vad: {aggresiveness: 2}\n")
    result = kws("run", "--config", str(config), "--input", str(DEMO_WAV))
    assert result.returncode == 2
    assert result.stderr.decode().strip() == (
        f"kws-daemon: error: {config}: vad.aggresiveness: unknown key; did you mean 'aggressiveness'?"
    )


@pytest.mark.parametrize("command", ["detect", "run", "bench"])
def test_missing_model_dir_is_a_mistake_exit_2(tmp_path: Path, command: str) -> None:
    """Every command that takes --model takes it, and a directory that is not there is a mistake."""
    audio = [str(DEMO_WAV)] if command == "detect" else ["--input", str(DEMO_WAV)]
    result = kws(command, "--model", str(tmp_path / "nope"), *audio)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode() == (
        f"kws-daemon: error: model directory {tmp_path / 'nope'} does not exist "
        "(set `model:` to a model directory)\n"
    )


@pytest.mark.parametrize("command", ["detect", "bench"])
@pytest.mark.parametrize("value", ["-1", "1.5", "nan", "high"])
def test_threshold_outside_0_to_1_is_refused_exit_2(command: str, value: str) -> None:
    result = kws(command, f"--threshold={value}", *([str(DEMO_WAV)] if command == "detect" else []))
    assert result.returncode == 2
    assert f"--threshold: must be a number from 0 to 1 (got '{value}')" in result.stderr.decode()


def test_detect_summary_is_pluralised(tmp_path: Path) -> None:
    result = kws("detect", str(DEMO_WAV))
    assert result.returncode == 0 and b"INFO: 4 detections in 1 file\n" in result.stderr


def _queue_p95_ms(stderr: bytes) -> float:
    stats = next(line for line in stderr.decode().splitlines() if "stats:" in line)
    return float(stats.split(" queue ")[1].split("/")[1])


def test_run_paces_a_file_at_real_time_so_queue_latency_is_a_microphone_s(tmp_path: Path) -> None:
    """8.2 s of demo audio take 8 s or more, and no block waits long in the queue; --fast does not wait."""
    started = time.monotonic()
    paced = kws("run", "--input", str(DEMO_WAV))
    elapsed = time.monotonic() - started
    assert paced.returncode == 0, paced.stderr
    assert elapsed >= 8.0 and _queue_p95_ms(paced.stderr) < 50, (elapsed, paced.stderr.decode()[-600:])
    started = time.monotonic()
    fast = kws("run", "--input", str(DEMO_WAV), "--fast")
    assert fast.returncode == 0 and time.monotonic() - started < elapsed - 3, fast.stderr
    assert _queue_p95_ms(fast.stderr) > _queue_p95_ms(paced.stderr)


def test_stats_interval_logs_while_running(tmp_path: Path) -> None:
    """--stats-interval MIN logs the stats line during the run, not only at exit."""
    config = tmp_path / "config.yaml"
    config.write_text("audio: {realtime: true}\n")
    result = kws("run", "--config", str(config), "--input", str(DEMO_WAV), "--stats-interval", "0.03")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count(b"stats:") >= 3  # every 1.8 s over 8.2 s of paced audio, and at exit
    bad = kws("run", "--stats-interval", "soon")
    assert bad.returncode == 2 and b"must be minutes" in bad.stderr


class _NoDevices:
    """sounddevice as PortAudio answers it on a machine with no input device at all."""

    class PortAudioError(Exception):
        pass

    def query_devices(self, device: object, kind: str) -> None:
        raise self.PortAudioError(f"Error querying device {-1 if device is None else device}")


def test_no_default_input_device_says_so_and_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    from kws_daemon.audio import sources
    from kws_daemon.errors import KwsError

    monkeypatch.setattr(sources, "_sounddevice", _NoDevices)
    with pytest.raises(
        KwsError, match=r"^no default input device: pick one with --device .*`kws-daemon devices`"
    ):
        sources.MicSource(None, None, 100)
    with pytest.raises(
        KwsError, match=r"^audio.device: Error querying device USB \(see `kws-daemon devices`\)$"
    ):
        sources.MicSource("USB", None, 100)


def test_the_command_line_runs_numpys_blas_on_one_thread(tmp_path: Path) -> None:
    """Two spinning OpenBLAS threads for the gate's one matrix multiply doubled the CPU it cost."""
    config = str(_config(tmp_path))
    probe = (
        "import json, numpy, threadpoolctl\n"
        "from kws_daemon.cli import main\n"
        "before = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
        f"main(['check-config', {config!r}])\n"
        "after = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
        "print(json.dumps([before, after]))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    before, after = json.loads(result.stdout.strip().splitlines()[-1])
    if max(before, default=1) == 1:
        pytest.skip("NumPy's BLAS already runs on one thread here (one core, or OPENBLAS_NUM_THREADS=1)")
    assert after == [1] * len(before)
