"""Config parsing: typed results, and one clear error per mistake that names the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from kws_daemon.config import Config, HookConfig, load, parse
from kws_daemon.errors import ConfigError
from kws_daemon.model import ModelInfo, default_model_dir
from tests.conftest import kws

FULL = """
model: {model}
audio: {{device: 2, realtime: true, loop: true, sample_rate: 48000, block_ms: 20}}
vad: {{aggressiveness: 3, hangover_ms: 300, pre_roll_ms: 200}}
detector: {{window_ms: 800, hop_ms: 50, smoothing: 2, threshold: 0.7, refractory_ms: 500, threads: 2}}
keywords:
  - yes
  - no
  - name: on
    threshold: 0.9
    hooks:
      - command: [notify-send, "on"]
hooks:
  - jsonl: "-"
  - webhook: http://127.0.0.1:8123/kws
    timeout_s: 2
  - command: echo $KWS_KEYWORD
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text)
    return path


def test_full_config_is_typed(tmp_path: Path) -> None:
    config = load(_write(tmp_path, FULL.format(model=default_model_dir())))
    assert config.audio.device == 2 and config.audio.realtime and config.audio.sample_rate == 48000
    assert config.vad.aggressiveness == 3 and config.vad.pre_roll_ms == 200
    assert config.detector.window_ms == 800 and config.detector.threads == 2
    # yes/no/on are keywords, not YAML 1.1 booleans
    assert [k.name for k in config.keywords or ()] == ["yes", "no", "on"]
    assert config.keywords[2].threshold == 0.9
    assert config.keywords[2].hooks == (HookConfig("command", ("notify-send", "on")),)
    assert [h.kind for h in config.hooks] == ["jsonl", "webhook", "command"]
    assert config.hooks[1].timeout_s == 2.0 and config.hooks[2].target == "echo $KWS_KEYWORD"
    config.check_against(ModelInfo.load(config.model))


def test_empty_config_gives_defaults() -> None:
    assert parse(None) == Config()
    assert Config().model == default_model_dir()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("detector: {windw_ms: 900}", "detector.windw_ms: unknown key; did you mean 'window_ms'?"),
        ("vad: {aggressiveness: 5}", "vad.aggressiveness: must be an integer from 0 to 3 (got 5)"),
        ("vad: {frame_ms: 25}", "vad.frame_ms: must be 10 or 20 or 30 (got 25)"),
        ("detector: {threshold: 1.5}", "detector.threshold: must be a number from 0 to 1 (got 1.5)"),
        ("detector: {hop_ms: 105}", "must be multiples of 10"),
        ("audio: {realtime: yes}", "audio.realtime: must be true or false (got 'yes')"),
        ("serve: {batch: sometimes}", "serve.batch: must be true, false or auto (got 'sometimes')"),
        ("hooks: [{mqtt: x}]", "hooks[0]: unknown hook type 'mqtt'; use one of command, webhook, jsonl"),
        ("hooks: [{command: a, jsonl: b}]", "hooks[0]: give exactly one of command, webhook, jsonl (got 2)"),
        ("hooks: [{webhook: 'file:///etc/passwd'}]", "hooks[0].webhook: must be an http:// or https:// URL"),
        ("hooks: [{command: []}]", "hooks[0].command: must be a shell string or a non-empty list"),
        ("hooks: [{jsonl: x, timeout_s: 0}]", "hooks[0].timeout_s: must be a number from 0.1 to 3600"),
        ("keywords: [{threshold: 0.5}]", "keywords[0].name: is required"),
        ("keywords: [yes, yes]", "keywords: 'yes' is listed more than once"),
        ("keywords: []", "keywords: must be a non-empty list"),
        ("- a\n- b", "config: must be a mapping"),
        ("modle: x", "modle: unknown key; did you mean 'model'?"),
        ("detector: {threshold: [1}", "YAML syntax error at line 1"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(_write(tmp_path, text))
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(("value", "batch"), [("auto", None), (True, True), (False, False)])
def test_serve_batch_is_true_false_or_auto(value: str | bool, batch: bool | None) -> None:
    assert parse({"serve": {"batch": value}}).serve.batch is batch
    assert Config().serve.batch is None  # auto: batched for an AST, inline for an embedding head


def test_keyword_not_in_model(tmp_path: Path) -> None:
    config = load(_write(tmp_path, "keywords: [yess]"))
    with pytest.raises(ConfigError, match=r"keywords\[0\].name: 'yess' is not a label .* did you mean 'yes'"):
        config.check_against(ModelInfo.load(config.model))


def test_model_path_relative_to_config_file(tmp_path: Path) -> None:
    (tmp_path / "models").symlink_to(default_model_dir().parent)
    config = load(_write(tmp_path, "model: models/default"))
    assert config.model == tmp_path / "models" / "default"


def test_check_config_command(tmp_path: Path) -> None:
    ok = kws("check-config", str(_write(tmp_path, "keywords: [yes, stop]\nhooks: [{jsonl: '-'}]")))
    assert ok.returncode == 0, ok.stderr
    assert b"OK" in ok.stdout and b"2 keywords, 1 hook)" in ok.stdout
    path = _write(tmp_path, "keywords: [yes, stopp]")
    bad = kws("check-config", str(path))
    assert bad.returncode == 2
    lines = bad.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and "did you mean 'stop'" in lines[0] and "Traceback" not in bad.stderr.decode()
    assert lines[0].startswith(f"kws-daemon: error: {path.resolve()}: keywords[1].name: 'stopp'")
    missing = kws("check-config", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and b"config file not found" in missing.stderr
