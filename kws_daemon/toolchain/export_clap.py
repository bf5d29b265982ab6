"""CLAP (ClapModel) -> an int8 ONNX sound-event model directory whose labels are text prompts.

Zero-shot classification needs both towers, but only the audio tower runs in the daemon: the
prompts (`--labels "dog barking" "smoke alarm" ...`, each put in `--template` as transformers'
zero-shot-audio-classification pipeline does) are embedded once here, and the exported graph ends in
their cosine similarity with the audio embedding times CLAP's logit scale. Its `logits` are
therefore the pipeline's `logits_per_audio`, and their softmax its scores. New prompts: export again.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from kws_daemon.errors import KwsError
from kws_daemon.frontends import ClapInput, ClapParams
from kws_daemon.model import Model, ModelInfo, frontend_of, sha256_file
from kws_daemon.toolchain.export import _provenance, _Run, credits, pretrained, refuse_existing, staged
from kws_daemon.toolchain.export_classifier import onnx_stages
from kws_daemon.toolchain.progress import Steps, quiet
from kws_daemon.toolchain.windows import audio_files, recorded_audio

TEMPLATE = "This is a sound of {}."  # transformers' ZeroShotAudioClassificationPipeline default


def _sounds(rate: int, calibration: Path | None) -> tuple[list[np.ndarray], str]:
    """Parity audio at the model's rate: the recordings under `calibration`, else tones, chirps and
    noise bursts of 1 to 10 s."""
    if calibration is not None:
        files = audio_files(calibration)
        audio = [x.astype(np.float32) / 32768 for x in recorded_audio(files, rate)]
        return audio, f"{len(files)} recordings from {calibration}"
    rng = np.random.default_rng(0)
    out = []
    for i in range(8):
        n = int(rng.uniform(1, 10) * rate)
        t = np.arange(n) / rate
        if i % 3 == 0:
            x = rng.standard_normal(n) * (rng.uniform(size=n) > 0.7)
        elif i % 3 == 1:
            x = np.sin(2 * np.pi * rng.uniform(300, 4000) * t)
        else:
            x = np.sin(2 * np.pi * np.cumsum(np.linspace(200, 8000, n)) / rate)
        out.append((x / np.abs(x).max() * rng.uniform(0.05, 0.8)).astype(np.float32))
    return out, f"{len(out)} generated sounds (tones, chirps, noise bursts)"


def _vector(output: Any) -> Any:
    """transformers 5 returns model outputs from get_*_features, 4.x plain tensors."""
    return output if hasattr(output, "norm") else output.pooler_output


def write_clap_model_dir(
    source: str | Path,
    output: str | Path,
    labels: list[str],
    *,
    template: str = TEMPLATE,
    quantize: str = "int8",
    calibration: Path | None = None,
    force: bool = False,
) -> dict[str, Any]:
    import torch
    from transformers import AutoProcessor, ClapModel

    output = Path(output)
    if (
        not labels
        or len(set(labels)) != len(labels)
        or not all(x.strip() and x.isprintable() for x in labels)
    ):
        raise KwsError(
            "--labels: a CLAP model needs distinct, printable text prompts (--labels 'dog barking' ...)"
        )
    if "{}" not in template:
        raise KwsError(f"--template {template!r}: must hold {{}} where the prompt goes")
    if quantize not in ("int8", "none"):
        raise KwsError(f"--quantize {quantize}: a CLAP model takes int8 or none")
    refuse_existing(output, force)
    steps = Steps(6 if quantize == "none" else 7)
    with steps.step(f"loading {source}"):
        model, processor = pretrained(
            source, "CLAP checkpoint", ClapModel.from_pretrained, AutoProcessor.from_pretrained
        )
    model.eval()
    extractor = processor.feature_extractor
    if type(extractor).__name__ != "ClapFeatureExtractor" or int(extractor.sampling_rate) != 48000:
        raise KwsError(f"{source}: needs a 48 kHz ClapFeatureExtractor (got {type(extractor).__name__})")
    params = frontend_of(Path(str(source)), extractor.to_dict(), {})
    assert isinstance(params, ClapParams)
    to_input = ClapInput(params)
    with steps.step(f"embedding {len(labels)} prompts"), torch.no_grad():
        text = processor.tokenizer([template.format(x) for x in labels], padding=True, return_tensors="pt")
        text_embeds = torch.nn.functional.normalize(_vector(model.get_text_features(**text)), dim=-1)
        scale = model.logit_scale_a.exp()

    class Scores(torch.nn.Module):
        """Audio tower -> cosine with the prompts' embeddings x logit scale: logits_per_audio."""

        def __init__(self) -> None:
            super().__init__()
            self.model = model
            self.register_buffer("prompts", text_embeds * scale)

        def forward(self, input_features: Any) -> Any:
            audio = _vector(self.model.get_audio_features(input_features=input_features))
            return torch.nn.functional.normalize(audio, dim=-1) @ self.prompts.T

    scores = Scores().eval()
    audio, data = _sounds(params.sample_rate, calibration)
    inputs = [to_input(a) for a in audio]
    report: dict[str, Any] = {
        "source": str(source),
        "kind": "clap",
        "quantize": quantize,
        "parity_data": data,
    }
    run = _Run(output, force, report, steps)
    with staged(output) as staging:
        with torch.no_grad():  # eager first: tracing HTSAT changes its window sizes in place
            expected = np.concatenate([scores(torch.from_numpy(x[None])).numpy() for x in inputs])
        final = onnx_stages(
            run,
            scores,
            staging,
            inputs,
            expected,
            "input_features",
            {0: "batch"},
            quantize,
            inputs[0],
            "sounds",
            "latency per window",
        )
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {x: i for i, x in enumerate(labels)}
        model.config.to_json_file(str(staging / "config.json"))
        extractor.to_json_file(str(staging / "preprocessor_config.json"))
        kws = {
            "format": 1,
            "kind": "clap",
            "sha256": sha256_file(final),
            "labels": labels,
            "template": template,
            "provenance": _provenance(source, model, None),
            "export": report,
            **credits(source),
        }
        (staging / "kws.json").write_text(json.dumps(kws, indent=2) + "\n")
        with steps.step("loading the directory as the daemon does"):
            if Model(ModelInfo.load(staging)).info.kind != "clap":
                raise KwsError(f"{staging}: the daemon does not load it as a CLAP model")
    return report


def is_clap_checkpoint(source: str | Path) -> bool:
    from transformers import AutoConfig

    try:
        with quiet("transformers", "huggingface_hub"):
            return bool(AutoConfig.from_pretrained(str(source)).model_type == "clap")
    except Exception:
        return False
