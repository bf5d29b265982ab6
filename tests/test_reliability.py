"""Bad input and hostile input through the real command line: corrupt model directories, broken audio
headers, a model whose labels are shell code, a config that others can write, where /metrics binds."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from kws_daemon.config import load, parse
from tests.conftest import AST_MODEL, DEMO_WAV, ROOT, kws
from tests.test_service import DaemonProcess, free_port, write_config

MODEL = AST_MODEL  # the corruptions edit an AST's preprocessor fields (the embedding kind's: test_embedding)


def _one_error_line(result: subprocess.CompletedProcess[bytes]) -> str:
    """The single error line of a failed run (and proof that there is no traceback)."""
    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("kws-daemon: error: ")]
    assert len(errors) == 1 and "Traceback" not in stderr and "internal" not in errors[0], stderr
    return errors[0]


def _edit_json(name: str, **changes: object) -> Callable[[Path], None]:
    def edit(model: Path) -> None:
        data = json.loads((model / name).read_text())
        data.update(changes)
        (model / name).write_text(json.dumps(data))

    return edit


def _labels(model: Path, rename: Callable[[int, str], str]) -> None:
    config = json.loads((model / "config.json").read_text())
    config["id2label"] = {i: rename(int(i), label) for i, label in config["id2label"].items()}
    (model / "config.json").write_text(json.dumps(config))


def _garbage_onnx(model: Path) -> None:
    (model / "model.onnx").write_bytes(os.urandom(5000))
    (model / "kws.json").unlink()  # no checksum to catch it first: onnxruntime must refuse it


def _truncated_onnx(model: Path) -> None:
    data = (model / "model.onnx").read_bytes()
    (model / "model.onnx").write_bytes(data[: len(data) // 2])


CORRUPT: dict[str, tuple[Callable[[Path], None], str]] = {
    "garbage model.onnx": (_garbage_onnx, r"model\.onnx cannot be loaded \(.*\)"),
    "sha256 mismatch": (_truncated_onnx, r"model\.onnx does not match the sha256 in kws\.json"),
    "bad JSON": (
        lambda m: (m / "config.json").write_text("{'id2label': "),
        r"config\.json is not valid JSON",
    ),
    "kws.json not an object": (
        lambda m: (m / "kws.json").write_text("[]"),
        r"kws\.json must hold a JSON object",
    ),
    "no id2label": (_edit_json("config.json", id2label=None), r'config\.json needs an "id2label" object'),
    "labels do not match the logits": (
        _edit_json("config.json", id2label={"0": "yes", "1": "no"}),
        r"model\.onnx gives 36 logits for 2 labels",
    ),
    "newline in a label": (
        lambda m: _labels(m, lambda i, label: "yes\nkws-daemon: INFO: forged" if i == 33 else label),
        r"config\.json label 33 must be a non-empty string of printable characters",
    ),
    "std 0": (_edit_json("preprocessor_config.json", std=0), r"a std above 0"),
    "missing model.onnx": (lambda m: (m / "model.onnx").unlink(), r"model\.onnx is missing"),
}


@pytest.mark.parametrize("case", list(CORRUPT), ids=list(CORRUPT))
def test_corrupt_model_directory_is_one_line_error(tmp_path: Path, case: str) -> None:
    corrupt, message = CORRUPT[case]
    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    corrupt(model)
    result = kws("detect", "--model", str(model), str(DEMO_WAV))
    assert result.returncode == 1
    error = _one_error_line(result)
    assert re.search(rf"model directory {re.escape(str(model))}: .*{message}", error), error


def _wav(fmt: int, channels: int, rate: int, bits: int, data: bytes) -> bytes:
    block = channels * bits // 8
    fmt_chunk = struct.pack("<HHIIHH", fmt, channels, rate, rate * block, block, bits)
    return (
        b"RIFF"
        + struct.pack("<I", 36 + len(data))
        + b"WAVEfmt "
        + struct.pack("<I", 16)
        + fmt_chunk
        + b"data"
        + struct.pack("<I", len(data))
        + data
    )


def test_broken_audio_headers_and_names_are_one_line_errors(tmp_path: Path) -> None:
    files = {
        "rate 1 Hz (used to read empty blocks forever)": (_wav(1, 1, 1, 16, bytes(8000)), "sample rate 1 Hz"),
        "rate 400 MHz (a gigabyte ring)": (_wav(1, 1, 400_000_000, 16, bytes(8000)), "400000000 Hz"),
        "header only": (_wav(1, 1, 16000, 16, b""), "contains no audio"),
        "random bytes": (os.urandom(3000), "not a readable audio file"),
    }
    paths = []
    for i, (blob, _) in enumerate(files.values()):
        paths.append(tmp_path / f"{i}.wav")
        paths[-1].write_bytes(blob)
    too_long = str(tmp_path / ("x" * 300 + ".wav"))
    result = kws("detect", *map(str, paths), too_long, str(DEMO_WAV), timeout=60)
    assert result.returncode == 1
    stderr = result.stderr.decode()
    errors = [line for line in stderr.splitlines() if line.startswith("kws-daemon: error: ")]
    assert "Traceback" not in stderr and len(errors) == len(files) + 1, stderr
    for error, (_, message) in zip(errors, files.values(), strict=False):
        assert message in error, error
    assert "no such file" in errors[-1]
    assert "4 detections in 1 file; 5 unreadable" in stderr  # the good file was still processed


def test_hostile_labels_reach_hooks_only_as_data(tmp_path: Path) -> None:
    """Every keyword label of the model is shell code; commands run with sh -c, as an argv and unquoted
    must see the label as text, and nothing may run it."""
    model = tmp_path / "model"
    shutil.copytree(MODEL, model)
    hostile = [
        "$(touch pwned-{i})",
        "`touch pwned-{i}`",
        '"; touch pwned-{i}; "',
        "'; touch pwned-{i}; '",
        "; touch pwned-{i} #",
        "| touch pwned-{i}",
        "&& touch pwned-{i}",
        "%s%n{i} $KWS_SCORE ${{IFS}}",
    ]
    _labels(model, lambda i, label: label if i == 35 else hostile[i % len(hostile)].format(i=i))
    out_quoted, out_unquoted, out_argv = tmp_path / "q", tmp_path / "u", tmp_path / "a"
    events = tmp_path / "events.jsonl"
    config = tmp_path / "config.yaml"
    write_config(
        config,
        {
            "model": str(model),
            "detector": {"threshold": 0.0},
            "hooks": [
                {"command": f'printf "%s\\n" "$KWS_KEYWORD" >> {out_quoted}'},
                {"command": f"echo $KWS_KEYWORD >> {out_unquoted}"},
                {"command": ["sh", "-c", 'printf "%s\\n" "$KWS_KEYWORD" >> "$0"', str(out_argv)]},
                {"jsonl": str(events)},
            ],
        },
    )
    work = tmp_path / "cwd"
    work.mkdir()
    result = kws("run", "--config", str(config), "--input", str(DEMO_WAV), "--fast", cwd=work)
    assert result.returncode == 0, result.stderr.decode()
    detected = [json.loads(line)["keyword"] for line in events.read_text().splitlines()]
    assert detected and all("pwned" in k or "%s%n" in k for k in detected)
    assert sorted(out_quoted.read_text().splitlines()) == sorted(detected)
    assert sorted(out_argv.read_text().splitlines()) == sorted(detected)
    assert len(out_unquoted.read_text().splitlines()) == len(detected)
    assert (
        not list(work.glob("pwned*")) and not list(tmp_path.glob("pwned*")) and not list(ROOT.glob("pwned*"))
    )
    assert f"detected '{detected[0]}'" in result.stderr.decode()


COMMAND_HOOK = {"hooks": [{"command": ["true"]}]}


@pytest.mark.parametrize(
    ("mode", "config", "warned"),
    [
        (0o666, COMMAND_HOOK, True),
        (0o664, {"keywords": [{"name": "yes", "hooks": [{"command": "true"}]}]}, True),
        (0o644, COMMAND_HOOK, False),
        (0o666, {"hooks": [{"jsonl": "-"}]}, False),
    ],
    ids=["world-writable", "group-writable keyword hook", "owner-only", "no command hooks"],
)
def test_config_writable_by_others_with_command_hooks_warns(
    tmp_path: Path, mode: int, config: dict[str, object], warned: bool
) -> None:
    path = tmp_path / "config.yaml"
    write_config(path, config)
    path.chmod(mode)
    check = kws("check-config", str(path))
    assert check.returncode == 0, check.stderr
    warning = (
        f"kws-daemon: WARNING: {path} defines command hooks but is writable by its group or others "
        f"(mode {mode:04o}), who could run commands as this daemon's user; fix: chmod go-w {path}"
    )
    assert (warning in check.stderr.decode().splitlines()) == warned, check.stderr
    run = kws("run", "--config", str(path), "--input", str(DEMO_WAV), "--fast")
    assert run.returncode == 0 and (warning in run.stderr.decode().splitlines()) == warned


@pytest.mark.slow
def test_reload_warns_about_a_config_made_writable_and_rejects_an_unrunnable_model(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    base = {"audio": {"input": str(DEMO_WAV), "realtime": True, "loop": True}, "detector": {"threshold": 0.0}}
    write_config(config, {**base, **COMMAND_HOOK})
    config.chmod(0o644)
    with DaemonProcess(config) as daemon:
        daemon.wait_log(r"detected '")
        assert "writable" not in daemon.log()
        config.chmod(0o666)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(
            rf"WARNING: {re.escape(str(config))} defines command hooks but is writable .* chmod go-w"
        )
        daemon.wait_log(r"reloaded ")

        # A model that loads but cannot score (labels that do not match its logits): rejected at reload
        model = tmp_path / "model"
        shutil.copytree(MODEL, model)
        _edit_json("config.json", id2label={"0": "yes", "1": "no"})(model)
        write_config(config, {**base, "model": str(model)})
        mark = len(daemon.lines)
        daemon.signal(signal.SIGHUP)
        daemon.wait_log(
            r"ERROR: reload failed, the running config stays: .* 36 logits for 2 labels", after=mark
        )
        daemon.wait_log(r"detected '", after=len(daemon.lines))
        daemon.signal(signal.SIGTERM)
        assert daemon.wait() == 0


def test_metrics_are_off_by_default_and_the_installed_config_keeps_them_on_localhost() -> None:
    assert parse(None).metrics.listen is None
    assert load(ROOT / "systemd" / "config.yaml").metrics.listen == ("127.0.0.1", 9464)


@pytest.mark.parametrize(
    ("host", "public"), [("127.0.0.1", False), ("0.0.0.0", True)], ids=["loopback", "all"]
)
def test_metrics_on_a_public_address_warn(tmp_path: Path, host: str, public: bool) -> None:
    port = free_port()
    config = tmp_path / "config.yaml"
    write_config(config, {"metrics": {"listen": f"{host}:{port}"}})
    result = kws("run", "--config", str(config), "--input", str(DEMO_WAV), "--fast")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.decode().splitlines()
    assert f"kws-daemon: INFO: metrics on http://{host}:{port}/metrics" in lines
    warning = (
        f"kws-daemon: WARNING: metrics on http://{host}:{port}/metrics are reachable from other machines"
    )
    assert any(line.startswith(warning) for line in lines) == public
