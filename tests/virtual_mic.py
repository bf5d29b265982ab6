"""A real-time-paced virtual microphone: a private PulseAudio server with a null sink whose monitor
is the default source. PortAudio reaches it as ALSA device 'pulse' (libasound2-plugins).

norewinds=1 caps how far the idle sink renders ahead of its clock (50 ms), so playback into the
sink arrives at the capture side paced like a live mic, bit-exact at 16 kHz mono s16.
Needs Debian's pulseaudio, pulseaudio-utils and libasound2-plugins; no root, D-Bus or sound card.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path


class VirtualMic:
    def __init__(self, rate: int = 16000) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vmic", dir="/tmp"))  # the socket path must stay short
        self.rate = rate
        self.env = dict(os.environ)
        self.env.update(
            PULSE_SERVER=f"unix:{self.dir}/native",
            PULSE_COOKIE=str(self.dir / "cookie"),
            PULSE_CLIENTCONFIG=str(self.dir / "client.conf"),
            HOME=str(self.dir),
        )
        self._server: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        """Why a virtual mic cannot run here, or None."""
        install = "(apt-get install libportaudio2 pulseaudio pulseaudio-utils libasound2-plugins)"
        for tool in ("pulseaudio", "pactl", "paplay"):
            if shutil.which(tool) is None:
                return f"{tool} not found {install}"
        if ctypes.util.find_library("portaudio") is None:
            return f"the PortAudio library is not installed {install}"
        if not glob.glob("/usr/lib/*/alsa-lib/libasound_module_pcm_pulse.so") + glob.glob(
            "/usr/lib/alsa-lib/libasound_module_pcm_pulse.so"
        ):
            return f"ALSA's pulse plugin (PortAudio's way to the server) is not installed {install}"
        return None

    def start(self) -> VirtualMic:
        """Starts the server; again after stop_server(), on the same socket path."""
        (self.dir / "default.pa").write_text(
            f"load-module module-native-protocol-unix auth-anonymous=1 socket={self.dir}/native\n"
            "load-module module-null-sink sink_name=vmic format=s16le "
            f"rate={self.rate} channels=1 norewinds=1\n"
            "set-default-sink vmic\nset-default-source vmic.monitor\n"
        )
        (self.dir / "client.conf").write_text("autospawn = no\nenable-shm = no\n")
        (self.dir / "cookie").write_bytes(os.urandom(256))
        server_env = dict(self.env, XDG_RUNTIME_DIR=str(self.dir), PULSE_RUNTIME_PATH=str(self.dir))
        self._server = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(self.dir / "default.pa"),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--realtime=no",
                "--high-priority=no",
                "--disable-shm=yes",
                "--use-pid-file=no",
                f"--log-target=file:{self.dir}/pulseaudio.log",
            ],
            env=server_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while self._pactl("info").returncode != 0:
            if time.monotonic() > deadline or self._server.poll() is not None:
                log = (
                    (self.dir / "pulseaudio.log").read_text()
                    if (self.dir / "pulseaudio.log").exists()
                    else ""
                )
                self.stop()
                raise RuntimeError(f"PulseAudio did not start: {log[-500:]}")
            time.sleep(0.05)
        return self

    def _pactl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["pactl", *args], env=self.env, capture_output=True, text=True, timeout=10)

    def wait_for_capture(self, timeout: float = 30) -> None:
        """Returns once a capture stream has stayed connected for 0.2 s (format probes come and go)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._pactl("list", "short", "source-outputs").stdout.strip():
                time.sleep(0.2)
                if self._pactl("list", "short", "source-outputs").stdout.strip():
                    return
            time.sleep(0.05)
        raise TimeoutError("no capture stream connected to the virtual mic")

    def kws(self, *args: str) -> subprocess.Popen[bytes]:
        """`kws-daemon ARGS` started on this mic's PulseAudio server, its output piped."""
        return subprocess.Popen(
            [sys.executable, "-m", "kws_daemon", *args],
            cwd=Path(__file__).resolve().parent.parent,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def play(self, wav: Path) -> None:
        """Plays into the mic at real-time pace; returns when the file has been played."""
        subprocess.run(["paplay", "--device=vmic", str(wav)], env=self.env, check=True, timeout=600)

    def stop_server(self, kill: bool = False) -> None:
        """Stops the server but keeps the directory: every capture stream loses its device at once, and
        start() brings a new server up on the same socket, as a device that comes back.
        kill=True is SIGKILL: the device vanishes without a goodbye."""
        if self._server is not None and self._server.poll() is None:
            os.killpg(self._server.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                self._server.wait(5)
            except subprocess.TimeoutExpired:
                os.killpg(self._server.pid, signal.SIGKILL)
                self._server.wait()

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> VirtualMic:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
