"""YAML config -> typed, validated dataclasses. Every error names the key and what is allowed."""

from __future__ import annotations

import difflib
import os
import re
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import urlparse

import yaml

from kws_daemon.endpointer import EndpointerConfig
from kws_daemon.errors import ConfigError
from kws_daemon.model import MODES_OF, ModelInfo, default_model_dir

T = TypeVar("T")
HookKind = Literal["command", "webhook", "jsonl"]
HOOK_KINDS: tuple[HookKind, ...] = ("command", "webhook", "jsonl")
Mode = Literal["commands", "running", "utterances", "sounds"]
MODES: tuple[Mode, ...] = ("commands", "running", "utterances", "sounds")
KEYWORD_MODES: tuple[Mode, ...] = ("commands", "running")  # the keyword-window modes
DEFAULT_THRESHOLD = 0.8  # where neither the config nor the model's kws.json gives one
_PROGRAM = re.compile(r"[\w./+-]+")  # a shell command's first word, past any "(" or "{"


@dataclass(frozen=True)
class HookConfig:
    """command: argv list (run directly) or string (run with sh -c); webhook: URL; jsonl: path or '-'."""

    kind: HookKind
    target: str | tuple[str, ...]
    timeout_s: float = 10.0

    def describe(self) -> str:
        target = " ".join(self.target) if isinstance(self.target, tuple) else self.target
        return f"{self.kind} {target}"

    def short(self) -> str:
        """For lines logged per line of a hook's output: a command's program, not its whole command line."""
        if self.kind != "command":
            return self.describe()
        if isinstance(self.target, tuple):
            program = self.target[0]
        else:
            first = _PROGRAM.search(self.target)
            program = first[0] if first else ""
        return f"command {os.path.basename(program) or '?'}"


@dataclass(frozen=True)
class KeywordConfig:
    name: str
    threshold: float | None = None  # None: detector.threshold
    hooks: tuple[HookConfig, ...] = ()


@dataclass(frozen=True)
class AudioConfig:
    device: str | int | None = None  # None: the system's default input
    input: str | None = None  # a WAV/FLAC path, or "-" for raw s16le 16 kHz mono on stdin
    # None: a file is paced at real time, as a microphone delivers audio, so the queue latency in the
    # stats means what it says; stdin is read as it comes (arecord paces it). False: as fast as possible.
    realtime: bool | None = None
    loop: bool = False
    sample_rate: int | None = None  # capture rate; None: 16000 when the device can, else its default
    block_ms: int = 100  # = hop_ms: one wake-up per window (idle CPU), each window complete on arrival
    buffer_s: float = 10.0


@dataclass(frozen=True)
class VadConfig:
    enabled: bool = True
    aggressiveness: int = (
        3  # strict: in room noise at 2 the endpointer saw 20 % of commands run into the noise
    )
    frame_ms: int = 30
    hangover_ms: int = 500
    pre_roll_ms: int = 300


@dataclass(frozen=True)
class UtteranceConfig:
    """detector.mode: utterances. A pause shorter than silence_after_ms stays inside the utterance."""

    silence_after_ms: int = 600
    min_ms: int = 300
    max_ms: int = 15000  # longer speech is no utterance to classify (and is never held in memory)


@dataclass(frozen=True)
class SoundsConfig:
    """detector.mode: sounds. A window every hop_s while the level is above gate_dbfs (and for one
    window's length after), scored against the model's prompts; a prompt fires at most once per
    refractory_s. window_s 0: the model's own length (10 s for CLAP)."""

    window_s: float = 0.0
    hop_s: float = 1.0
    gate_dbfs: float = -50.0
    refractory_s: float = 5.0


@dataclass(frozen=True)
class SequenceConfig:
    """Words that fire as one event when each follows the last within `within_ms`."""

    name: str
    words: tuple[str, ...]
    within_ms: int = 2000
    hooks: tuple[HookConfig, ...] = ()


@dataclass(frozen=True)
class DetectorConfig:
    # commands: a keyword said on its own (silence, one word, silence; kws_daemon.endpointer);
    # running: a keyword anywhere in speech, a window every hop; utterances, sounds: their modules.
    # None: the model's default mode (ModelInfo.default_mode), so any model directory runs as it is
    mode: Mode | None = None
    window_ms: int = 1000
    hop_ms: int = 100
    smoothing: int = 3  # windows averaged (running mode)
    threshold: float | None = None  # None: the model's calibrated per-keyword thresholds, else 0.8
    refractory_ms: int = 1000  # (running mode)
    threads: int = 1  # onnxruntime intra-op threads


@dataclass(frozen=True)
class NearMissConfig:
    """Keeps the audio of windows that came close (for tuning and hard-negative mining)."""

    dir: Path
    threshold: float = 0.5  # a keyword's score at least this, below its own threshold
    max_mb: float = 100.0  # oldest files are deleted beyond this


@dataclass(frozen=True)
class MetricsConfig:
    """Where /metrics is served (host, port); None: nowhere. Keep it on localhost unless a remote
    Prometheus must scrape it: the endpoint has no authentication."""

    listen: tuple[str, int] | None = None


@dataclass(frozen=True)
class ServeConfig:
    """`kws-daemon serve`, the Wyoming wake-word server. Loopback unless told otherwise: the protocol
    has no authentication."""

    uri: str = "tcp://127.0.0.1:10400"  # or unix:///run/kws-daemon/wyoming.sock
    zeroconf: bool = False  # announce _wyoming._tcp on the LAN for Home Assistant (the zeroconf extra)
    zeroconf_name: str | None = None  # default: the host name
    max_connections: int = 32
    idle_timeout_s: float = 300.0  # a connection that sends nothing this long is closed
    # windows of several streams in one onnxruntime call; None (auto): for an AST, whose cost per
    # window falls with the batch, not for a speech-embedding head (kws_daemon.serve.WakeServer)
    batch: bool | None = None
    max_batch: int = 32
    batch_wait_ms: float = 5.0  # the longest a window waits for others to join its batch
    # processes accepting on serve.uri (kws_daemon.workers), 0: one per core; max_connections is each one's
    workers: int = 0
    worker_watchdog_s: float = 10.0  # a worker whose event loop stops this long is killed and restarted


@dataclass(frozen=True)
class Config:
    model: Path = field(default_factory=default_model_dir)
    # `models:` after the first: more keyword models on the first one's front end (kws_daemon.modelgroup)
    more_models: tuple[Path, ...] = ()
    audio: AudioConfig = field(default_factory=AudioConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    detector: DetectorConfig = field(default_factory=DetectorConfig)
    endpointer: EndpointerConfig = field(default_factory=EndpointerConfig)
    utterance: UtteranceConfig = field(default_factory=UtteranceConfig)
    sounds: SoundsConfig = field(default_factory=SoundsConfig)
    keywords: tuple[KeywordConfig, ...] | None = None  # None: every non-background label
    sequences: tuple[SequenceConfig, ...] = ()
    hooks: tuple[HookConfig, ...] = ()
    near_misses: NearMissConfig | None = None
    stats_interval_s: float = 0.0  # 0: summary only on exit
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    source: Path | None = None  # the file this config came from

    @property
    def models(self) -> list[Path]:
        return [self.model, *self.more_models]

    def with_audio(self, **changes: Any) -> Config:
        return replace(self, audio=replace(self.audio, **changes))

    def mode_for(self, info: ModelInfo) -> Mode:
        """detector.mode as it runs on `info`'s model: the config's, else the model's default."""
        if self.detector.mode is not None:
            return self.detector.mode
        mode = info.default_mode  # one of MODES_OF[kind]: ModelInfo.load checks kws.json's
        assert mode in MODES, mode
        return cast(Mode, mode)

    def check_against(self, info: ModelInfo) -> None:
        """Errors for a mode the model does not run in and keywords that it cannot produce, naming
        the config file like load()'s."""
        where = f"{self.source}: " if self.source else ""
        mode, kind = self.mode_for(info), info.kind
        if mode not in MODES_OF[kind]:
            raise ConfigError(
                f"{where}detector.mode: '{mode}' does not take a {kind} model ({info.path}); "
                f"use detector.mode: {' or '.join(MODES_OF[kind])}, or leave it out"
            )
        if mode in ("commands", "utterances") and not self.vad.enabled:
            raise ConfigError(
                f"{where}detector.mode: '{mode}' needs the VAD to find where speech starts and ends; "
                "set vad.enabled: true, or detector.mode: running"
            )
        names = [(f"keywords[{i}].name", kw.name) for i, kw in enumerate(self.keywords or ())]
        names += [
            (f"sequences[{i}].words[{j}]", word)
            for i, seq in enumerate(self.sequences)
            for j, word in enumerate(seq.words)
        ]
        for key, name in names:
            if name not in info.labels:
                close = difflib.get_close_matches(name, info.labels, n=1)
                hint = f"did you mean '{close[0]}'? " if close else ""
                raise ConfigError(
                    f"{where}{key}: '{_shown(name)}' is not a label of the model in {info.path}; "
                    f"{hint}labels: {', '.join(info.keyword_labels)}"
                )

    def keyword_thresholds(self, info: ModelInfo) -> dict[str, float]:
        """The armed keywords (default: every non-background label; words of sequences too) and their
        thresholds: the keyword's own, else the model's calibrated one for this mode (kws.json), else
        detector.threshold."""
        given = self.detector.threshold
        calibrated = {} if given is not None else info.thresholds(self.mode_for(info))
        default = DEFAULT_THRESHOLD if given is None else given

        def threshold(name: str, own: float | None = None) -> float:
            return own if own is not None else calibrated.get(name, default)

        if self.keywords is None:
            return {name: threshold(name) for name in info.keyword_labels}
        armed = {k.name: threshold(k.name, k.threshold) for k in self.keywords if k.name in info.labels}
        for sequence in self.sequences:
            for word in sequence.words:
                armed.setdefault(word, threshold(word))
        return armed

    @property
    def reported(self) -> set[str] | None:
        """The keywords whose own events are reported (None: every label); words armed only for a
        sequence are not."""
        return None if self.keywords is None else {k.name for k in self.keywords}


def _shown(text: str) -> str:
    """Text from the config as an error message may quote it: on one line, control characters escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false. YAML 1.1 reads yes/no/on/off (keywords!) as booleans."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """PyYAML's constructors crash on values their tags cannot hold (`2001-02-30`, `!!int x`,
        `!!float ""`, `!!timestamp x`): made YAML errors with a position, like every other mistake."""
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError, TypeError, IndexError, AttributeError) as e:
            problem = f"invalid value ({e})" if isinstance(e, ValueError) else "invalid value for its tag"
            raise yaml.constructor.ConstructorError(None, None, problem, node.start_mark) from None


_Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


class _Section:
    """Reads one mapping, refusing unknown keys with a did-you-mean."""

    def __init__(self, data: Any, where: str, allowed: Iterable[str]) -> None:
        self.where = where
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"{where or 'config'}: must be a mapping of keys to values")
        allowed = list(allowed)
        for key in data:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f"; did you mean '{close[0]}'?" if close else f"; allowed: {', '.join(allowed)}"
                raise ConfigError(f"{self.key(_shown(str(key)))}: unknown key{hint}")
        self.data = data

    def key(self, name: str) -> str:
        return f"{self.where}.{name}" if self.where else name

    def get(self, name: str, default: T, convert: Callable[[str, Any], T]) -> T:
        if name not in self.data or self.data[name] is None:
            return default
        return convert(self.key(name), self.data[name])


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: must be true or false (got {value!r})")


def _bool_or_auto(key: str, value: Any) -> bool | None:
    if value == "auto":
        return None
    if isinstance(value, bool):
        return value
    raise ConfigError(f"{key}: must be true, false or auto (got {value!r})")


def _int(lo: int, hi: int, choices: tuple[int, ...] = ()) -> Callable[[str, Any], int]:
    def convert(key: str, value: Any) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi
        if choices and value not in choices:
            ok = False
        if not ok:
            allowed = " or ".join(map(str, choices)) if choices else f"an integer from {lo} to {hi}"
            raise ConfigError(f"{key}: must be {allowed} (got {value!r})")
        return int(value)

    return convert


def _float(lo: float, hi: float) -> Callable[[str, Any], float]:
    def convert(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
            raise ConfigError(f"{key}: must be a number from {lo:g} to {hi:g} (got {value!r})")
        return float(value)

    return convert


def _str(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{key}: must be a non-empty string (got {value!r})")
    if "\0" in value:
        raise ConfigError(f"{key}: must not contain a NUL character")
    return value


def _device(key: str, value: Any) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ConfigError(f"{key}: must be a device name or index (got {value!r}); see `kws-daemon devices`")
    return _str(key, value) if isinstance(value, str) else value


_LISTEN = re.compile(r"(?:\[([0-9A-Fa-f:.]+)\]|([^\s:\[\]]+)):([0-9]{1,5})")


def _listen(key: str, value: Any) -> tuple[str, int] | None:
    if value == "":
        return None
    match = _LISTEN.fullmatch(value) if isinstance(value, str) else None
    if match is None or not 1 <= int(match[3]) <= 65535:
        raise ConfigError(
            f'{key}: must be a quoted "HOST:PORT" with a port from 1 to 65535, such as "127.0.0.1:9464" '
            f'or "[::1]:9464", or empty for no endpoint (got {value!r})'
        )
    return match[1] or match[2], int(match[3])


def _hook(where: str, data: Any) -> HookConfig:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{where}: a hook is a mapping such as {{command: ...}}, {{webhook: URL}} or {{jsonl: PATH}}"
        )
    kinds = [k for k in HOOK_KINDS if k in data]
    if len(kinds) != 1:
        unknown = [_shown(str(k)) for k in data if k not in (*HOOK_KINDS, "timeout_s")]
        if not kinds and unknown:
            raise ConfigError(
                f"{where}: unknown hook type '{unknown[0]}'; use one of {', '.join(HOOK_KINDS)}"
            )
        raise ConfigError(f"{where}: give exactly one of {', '.join(HOOK_KINDS)} (got {len(kinds)})")
    kind = kinds[0]
    section = _Section(data, where, (kind, "timeout_s"))
    timeout = section.get("timeout_s", 10.0, _float(0.1, 3600))
    value = data[kind]
    key = section.key(kind)
    target: str | tuple[str, ...]
    if kind == "command":
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            target = tuple(value)  # an empty argument ("") is legitimate
        elif isinstance(value, str) and value.strip():
            target = value
        else:
            raise ConfigError(f"{key}: must be a shell string or a non-empty list of strings (argv)")
        if any("\0" in v for v in ([value] if isinstance(value, str) else value)):
            raise ConfigError(f"{key}: must not contain a NUL character")
    elif kind == "webhook":
        url = _str(key, value)
        try:
            parsed = urlparse(url)
            ok = parsed.scheme in ("http", "https") and bool(parsed.hostname) and parsed.port != 0
        except ValueError:  # a bad port or IPv6 address
            ok = False
        if not ok:
            raise ConfigError(f"{key}: must be an http:// or https:// URL (got {url!r})")
        target = url
    else:
        target = _str(key, value)
    return HookConfig(kind=kind, target=target, timeout_s=timeout)


def _hooks(key: str, value: Any) -> tuple[HookConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of hooks")
    return tuple(_hook(f"{key}[{i}]", item) for i, item in enumerate(value))


def _keywords(key: str, value: Any) -> tuple[KeywordConfig, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key}: must be a non-empty list of keyword names or {{name, threshold, hooks}}")
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if isinstance(item, (str, int)) and not isinstance(item, bool):
            out.append(KeywordConfig(name=_str(where, str(item))))
            continue
        section = _Section(item, where, ("name", "threshold", "hooks"))
        name = section.get("name", None, lambda k, v: _str(k, str(v) if isinstance(v, int) else v))
        if name is None:
            raise ConfigError(f"{where}.name: is required")
        out.append(
            KeywordConfig(
                name=name,
                threshold=section.get("threshold", None, _float(0.0, 1.0)),
                hooks=section.get("hooks", (), _hooks),
            )
        )
    _unique(key, [k.name for k in out])
    return tuple(out)


def _unique(key: str, names: list[str]) -> None:
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"{key}: '{_shown(dupes[0])}' is listed more than once")


def _choice(choices: tuple[str, ...]) -> Callable[[str, Any], Any]:
    def convert(key: str, value: Any) -> Any:
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)} (got {value!r})")
        return value

    return convert


def _endpointer(data: Any) -> EndpointerConfig:
    section = _Section(
        data,
        "endpointer",
        ("silence_before_ms", "silence_after_ms", "min_word_ms", "max_word_ms", "quieter_db", "core_db"),
    )
    default = EndpointerConfig()
    config = EndpointerConfig(
        silence_before_ms=section.get("silence_before_ms", default.silence_before_ms, _int(0, 10000)),
        silence_after_ms=section.get("silence_after_ms", default.silence_after_ms, _int(30, 5000)),
        min_word_ms=section.get("min_word_ms", default.min_word_ms, _int(0, 10000)),
        max_word_ms=section.get("max_word_ms", default.max_word_ms, _int(100, 10000)),
        quieter_db=section.get("quieter_db", default.quieter_db, _float(0, 100)),
        core_db=section.get("core_db", default.core_db, _float(0, 100)),
    )
    if config.min_word_ms > config.max_word_ms:
        raise ConfigError("endpointer.min_word_ms: must not exceed endpointer.max_word_ms")
    return config


def _utterance(data: Any) -> UtteranceConfig:
    section = _Section(data, "utterance", ("silence_after_ms", "min_ms", "max_ms"))
    default = UtteranceConfig()
    config = UtteranceConfig(
        silence_after_ms=section.get("silence_after_ms", default.silence_after_ms, _int(30, 5000)),
        min_ms=section.get("min_ms", default.min_ms, _int(0, 60000)),
        max_ms=section.get("max_ms", default.max_ms, _int(100, 60000)),
    )
    if config.min_ms > config.max_ms:
        raise ConfigError("utterance.min_ms: must not exceed utterance.max_ms")
    return config


def _sounds(data: Any) -> SoundsConfig:
    section = _Section(data, "sounds", ("window_s", "hop_s", "gate_dbfs", "refractory_s"))
    default = SoundsConfig()
    return SoundsConfig(
        window_s=section.get("window_s", default.window_s, _float(0.0, 60.0)),
        hop_s=section.get("hop_s", default.hop_s, _float(0.1, 60.0)),
        gate_dbfs=section.get("gate_dbfs", default.gate_dbfs, _float(-120.0, 0.0)),
        refractory_s=section.get("refractory_s", default.refractory_s, _float(0.0, 3600.0)),
    )


def _sequences(key: str, value: Any) -> tuple[SequenceConfig, ...]:
    if not isinstance(value, list):
        raise ConfigError(f"{key}: must be a list of {{words: [first, second, ...], within_ms, hooks}}")
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        section = _Section(item, where, ("name", "words", "within_ms", "hooks"))
        words = section.get("words", None, _word_list)
        if words is None:
            raise ConfigError(f"{where}.words: is required (two or more keywords in order)")
        out.append(
            SequenceConfig(
                name=section.get("name", "+".join(words), _str),
                words=words,
                within_ms=section.get("within_ms", 2000, _int(100, 60000)),
                hooks=section.get("hooks", (), _hooks),
            )
        )
    _unique(key, [s.name for s in out])
    return tuple(out)


def _word_list(key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or len(value) < 2:
        raise ConfigError(f"{key}: must be a list of two or more keywords (got {value!r})")
    return tuple(_str(f"{key}[{j}]", str(w) if isinstance(w, int) else w) for j, w in enumerate(value))


def _near_misses(key: str, value: Any, base: Path | None) -> NearMissConfig:
    section = _Section(value, key, ("dir", "threshold", "max_mb"))
    directory = section.get("dir", None, _str)
    if directory is None:
        raise ConfigError(f"{key}.dir: is required (where the near-miss WAVs go)")
    path = Path(os.path.expanduser(directory))
    return NearMissConfig(
        dir=path if path.is_absolute() or base is None else base / path,
        threshold=section.get("threshold", 0.5, _float(0.0, 1.0)),
        max_mb=section.get("max_mb", 100.0, _float(0.1, 100000.0)),
    )


def _resolve_model(key: str, value: Any, base: Path | None) -> Path:
    """A model directory: absolute, relative to the config file or else to the working directory;
    `default` is the shipped model unless a directory of that name is there."""
    path = Path(os.path.expanduser(_str(key, value)))
    if path.is_absolute():
        return path
    candidates = [base / path] if base else []
    candidates.append(Path.cwd() / path)
    found = next((c for c in candidates if os.path.exists(c)), None)
    if found is None and str(path) == "default":
        return default_model_dir()
    return found or candidates[-1]


def _models(key: str, value: Any, base: Path | None) -> tuple[Path, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError(
            f"{key}: must be a list of model directories, such as [default, /var/lib/kws-daemon/hey-kitchen]"
        )
    paths = tuple(_resolve_model(f"{key}[{i}]", v, base) for i, v in enumerate(value))
    if len(set(paths)) != len(paths):
        raise ConfigError(f"{key}: names one model directory twice")
    return paths


def wyoming_uri(key: str, value: Any) -> str:
    """tcp://HOST:PORT or unix:///PATH, as the wyoming library's servers take them."""
    uri = _str(key, value)
    parsed = urlparse(uri)
    try:
        port = parsed.port
    except ValueError:
        port = None
    ok = (parsed.scheme == "tcp" and bool(parsed.hostname) and port is not None and port > 0) or (
        parsed.scheme == "unix" and parsed.path.startswith("/") and not parsed.netloc
    )
    if not ok:
        raise ConfigError(
            f"{key}: must be tcp://HOST:PORT (such as tcp://127.0.0.1:10400) or unix:///PATH (got {uri!r})"
        )
    return uri


def _serve(data: Any) -> ServeConfig:
    serve = _Section(
        data,
        "serve",
        (
            "uri",
            "zeroconf",
            "zeroconf_name",
            "max_connections",
            "idle_timeout_s",
            "batch",
            "max_batch",
            "batch_wait_ms",
            "workers",
            "worker_watchdog_s",
        ),
    )
    return ServeConfig(
        uri=serve.get("uri", ServeConfig.uri, wyoming_uri),
        zeroconf=serve.get("zeroconf", False, _bool),
        zeroconf_name=serve.get("zeroconf_name", None, _str),
        max_connections=serve.get("max_connections", 32, _int(1, 1024)),
        idle_timeout_s=serve.get("idle_timeout_s", 300.0, _float(1.0, 86400.0)),
        batch=serve.get("batch", None, _bool_or_auto),
        max_batch=serve.get("max_batch", 32, _int(1, 256)),
        batch_wait_ms=serve.get("batch_wait_ms", 5.0, _float(0.0, 100.0)),
        workers=serve.get("workers", 0, _int(0, 256)),
        worker_watchdog_s=serve.get("worker_watchdog_s", 10.0, _float(0.5, 600.0)),
    )


def parse(data: Any, source: Path | None = None) -> Config:
    """Builds a Config from already-parsed YAML data."""
    top = _Section(
        data,
        "",
        (
            "model",
            "models",
            "audio",
            "vad",
            "detector",
            "endpointer",
            "utterance",
            "sounds",
            "keywords",
            "sequences",
            "hooks",
            "near_misses",
            "stats_interval_s",
            "metrics",
            "serve",
        ),
    )
    base = source.parent if source else None
    audio = _Section(
        top.data.get("audio"),
        "audio",
        ("device", "input", "realtime", "loop", "sample_rate", "block_ms", "buffer_s"),
    )
    vad = _Section(
        top.data.get("vad"), "vad", ("enabled", "aggressiveness", "frame_ms", "hangover_ms", "pre_roll_ms")
    )
    det = _Section(
        top.data.get("detector"),
        "detector",
        ("mode", "window_ms", "hop_ms", "smoothing", "threshold", "refractory_ms", "threads"),
    )
    detector = DetectorConfig(
        mode=det.get("mode", None, _choice(MODES)),
        window_ms=det.get("window_ms", 1000, _int(100, 10000)),
        hop_ms=det.get("hop_ms", 100, _int(10, 2000)),
        smoothing=det.get("smoothing", 3, _int(1, 50)),
        threshold=det.get("threshold", None, _float(0.0, 1.0)),
        refractory_ms=det.get("refractory_ms", 1000, _int(0, 60000)),
        threads=det.get("threads", 1, _int(1, 64)),
    )
    metrics = _Section(top.data.get("metrics"), "metrics", ("listen",))
    if detector.window_ms % 10 or detector.hop_ms % 10:
        raise ConfigError("detector.window_ms and detector.hop_ms: must be multiples of 10 (the frame shift)")
    vad_config = VadConfig(
        enabled=vad.get("enabled", True, _bool),
        aggressiveness=vad.get("aggressiveness", 3, _int(0, 3)),
        frame_ms=vad.get("frame_ms", 30, _int(10, 30, (10, 20, 30))),
        hangover_ms=vad.get("hangover_ms", 500, _int(0, 10000)),
        pre_roll_ms=vad.get("pre_roll_ms", 300, _int(0, 5000)),
    )
    if "model" in top.data and "models" in top.data:
        raise ConfigError("model and models: give one (models: lists several, the first's front end shared)")
    models = top.get("models", None, lambda k, v: _models(k, v, base))
    return Config(
        model=models[0]
        if models
        else top.get("model", default_model_dir(), lambda k, v: _resolve_model(k, v, base)),
        more_models=models[1:] if models else (),
        audio=AudioConfig(
            device=audio.get("device", None, _device),
            input=audio.get("input", None, _str),
            realtime=audio.get("realtime", None, _bool),
            loop=audio.get("loop", False, _bool),
            sample_rate=audio.get("sample_rate", None, _int(8000, 192000)),
            block_ms=audio.get("block_ms", 100, _int(10, 200, (10, 20, 30, 40, 50, 60, 80, 100, 200))),
            buffer_s=audio.get("buffer_s", 10.0, _float(1.0, 600.0)),
        ),
        vad=vad_config,
        detector=detector,
        endpointer=_endpointer(top.data.get("endpointer")),
        utterance=_utterance(top.data.get("utterance")),
        sounds=_sounds(top.data.get("sounds")),
        keywords=top.get("keywords", None, _keywords),
        sequences=top.get("sequences", (), _sequences),
        hooks=top.get("hooks", (), _hooks),
        near_misses=top.get("near_misses", None, lambda k, v: _near_misses(k, v, base)),
        stats_interval_s=top.get("stats_interval_s", 0.0, _float(0.0, 86400.0)),
        metrics=MetricsConfig(listen=metrics.get("listen", None, _listen)),
        serve=_serve(top.data.get("serve")),
        source=source,
    )


def load(path: str | Path) -> Config:
    p = Path(path)
    try:
        text = p.read_text()
    except IsADirectoryError:
        raise ConfigError(f"{p}: is a directory, not a config file") from None
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{p}: cannot be read ({e})") from None
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{p}: YAML syntax error{where}: {problem}") from None
    except RecursionError:
        raise ConfigError(f"{p}: YAML nested too deeply") from None
    try:
        return parse(data, source=p.resolve())
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from None


def writable_by_others(config: Config) -> str | None:
    """A warning when users other than the file's owner can write a config that defines command hooks:
    whoever can write it can run commands as the daemon's user."""
    hooks = [
        *config.hooks,
        *(h for k in config.keywords or () for h in k.hooks),
        *(h for seq in config.sequences for h in seq.hooks),
    ]
    if config.source is None or not any(h.kind == "command" for h in hooks):
        return None
    try:
        mode = config.source.stat().st_mode
    except OSError:
        return None
    if not mode & (stat.S_IWGRP | stat.S_IWOTH):
        return None
    return (
        f"{config.source} defines command hooks but is writable by its group or others "
        f"(mode {stat.S_IMODE(mode):04o}), who could run commands as this daemon's user; "
        f"fix: chmod go-w {config.source}"
    )
