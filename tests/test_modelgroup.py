"""`models: [...]`: several keyword models on one front end, scored as one model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from kws_daemon.config import Config, parse
from kws_daemon.errors import ConfigError
from kws_daemon.model import Model, ModelInfo, default_model_dir
from kws_daemon.modelgroup import ModelGroup, load_info
from tests.conftest import AST_MODEL, DEMO_WAV, kws


def _renamed(tmp: Path, prefix: str) -> Path:
    """A copy of the default model whose keywords are called `prefix` + word (another model's words)."""
    out = tmp / f"{prefix}model"
    shutil.copytree(default_model_dir(), out)
    config = json.loads((out / "config.json").read_text())
    config["id2label"] = {
        i: label if label.startswith("_") else prefix + label for i, label in config["id2label"].items()
    }
    config["label2id"] = {label: int(i) for i, label in config["id2label"].items()}
    (out / "config.json").write_text(json.dumps(config))
    kws_json = json.loads((out / "kws.json").read_text())
    tables = kws_json["thresholds"] | {"commands": {"yes": 0.61}}  # the default may ship none
    kws_json["thresholds"] = {
        mode: {prefix + word: t for word, t in table.items()} for mode, table in tables.items()
    }
    (out / "kws.json").write_text(json.dumps(kws_json))
    return out


def test_a_group_scores_each_keyword_as_its_own_model_does(tmp_path: Path) -> None:
    other = _renamed(tmp_path, "x_")
    default, copy = ModelInfo.load(default_model_dir()), ModelInfo.load(other)
    group = ModelGroup([default, copy])
    words = default.keyword_labels
    assert group.info.labels == (*words, *("x_" + w for w in words), "_background_")
    assert group.info.thresholds("commands")["x_yes"] == 0.61  # each member's own table, renamed
    windows = np.random.default_rng(0).standard_normal((4, *group.window_shape)).astype(np.float32)
    alone = Model(default)(windows)
    scored = group(windows)
    for word in ("yes", "marvin", "seven"):
        i = default.labels.index(word)
        assert np.array_equal(scored[:, group.info.labels.index(word)], alone[:, i])
        assert np.array_equal(scored[:, group.info.labels.index("x_" + word)], alone[:, i])
    background = default.labels.index("_background_")
    assert np.array_equal(scored[:, -1], alone[:, background])


def test_a_second_model_does_not_change_what_the_first_detects(tmp_path: Path) -> None:
    """(That a group fires the second model's words: test_train_keyword, with a phrase of its own.)"""
    config = tmp_path / "group.yaml"
    config.write_text(f"models: [default, {_renamed(tmp_path, 'x_')}]\n")
    grouped = kws("detect", "--config", str(config), "--json", str(DEMO_WAV))
    alone = kws("detect", "--json", str(DEMO_WAV))
    assert grouped.returncode == 0, grouped.stderr

    def found(result) -> list[tuple[str, float]]:
        return [(e["keyword"], e["time_s"]) for e in map(json.loads, result.stdout.decode().splitlines())]

    assert len(found(alone)) >= 3 and found(grouped) == found(alone)


def test_models_that_cannot_be_combined_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'backward' is in both"):
        load_info([default_model_dir(), _renamed(tmp_path, "")])
    with pytest.raises(ConfigError, match="do not share a front end"):
        load_info([default_model_dir(), AST_MODEL])
    config = tmp_path / "bad.yaml"
    config.write_text(f"models: [default, {AST_MODEL}]\n")
    result = kws("check-config", str(config))
    err = result.stderr.decode()
    assert result.returncode == 2 and "front end" in err and len(err.strip().splitlines()) == 1


def test_the_models_key(tmp_path: Path) -> None:
    other = _renamed(tmp_path, "x_")
    config = parse({"models": ["default", str(other)]}, source=tmp_path / "c.yaml")
    assert config.models == [default_model_dir(), other]
    assert parse({}).models == [default_model_dir()]
    assert parse({"model": "default"}).model == default_model_dir()
    for data, text in [
        ({"model": "default", "models": ["default"]}, "give one"),
        ({"models": []}, "list of model directories"),
        ({"models": "default"}, "list of model directories"),
        ({"models": ["default", "default"]}, "twice"),
    ]:
        with pytest.raises(ConfigError, match=text):
            parse(data)
    assert Config().more_models == ()
