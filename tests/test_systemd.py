"""The systemd unit as CI checks it (systemd-analyze verify and security), its default config, and
the install script."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, kws

UNIT = ROOT / "systemd" / "kws-daemon.service"
WYOMING_UNIT = ROOT / "systemd" / "kws-daemon-wyoming.service"
CHECK = ROOT / "systemd" / "check-unit"
INSTALL = ROOT / "scripts" / "install-service.sh"
needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (apt install systemd)"
)


def check_unit(unit: Path) -> tuple[int, str]:
    result = subprocess.run([str(CHECK), str(unit)], capture_output=True, text=True, timeout=60)
    return result.returncode, result.stdout + result.stderr


def find(pattern: str, text: str) -> re.Match[str]:
    match = re.search(pattern, text, re.M)
    assert match, f"{pattern!r} not in:\n{text}"
    return match


@needs_systemd_analyze
@pytest.mark.parametrize("unit", [UNIT, WYOMING_UNIT], ids=lambda u: u.name)
def test_unit_verifies_and_exposure_is_at_most_2_5(unit: Path) -> None:
    code, output = check_unit(unit)
    assert code == 0, output
    assert float(find(r"exposure: ([0-9.]+) \(limit 2.5\)$", output)[1]) <= 2.5


@needs_systemd_analyze
def test_check_fails_on_a_weakened_unit(tmp_path: Path) -> None:
    hardening = re.compile(r"^(Protect|Private|Restrict|SystemCall|Capability|NoNewPrivileges|Device)", re.M)
    weak = tmp_path / "kws-daemon.service"
    weak.write_text("\n".join(line for line in UNIT.read_text().splitlines() if not hardening.match(line)))
    code, output = check_unit(weak)
    assert code == 1, output
    assert float(find(r"exposure: ([0-9.]+)", output)[1]) > 2.5


@needs_systemd_analyze
@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("Type=notify", "Typ=notify"), "Unknown key 'Typ'"),
        (("ExecStart=/opt/", "ExecStart=opt/"), "Neither a valid executable name nor an absolute path"),
    ],
)
def test_check_fails_on_what_verify_only_warns_about(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    broken = tmp_path / "kws-daemon.service"
    broken.write_text(UNIT.read_text().replace(*change, 1))
    code, output = check_unit(broken)
    assert code == 1
    assert message in output


def test_default_config_is_valid() -> None:
    result = kws("check-config", str(ROOT / "systemd" / "config.yaml"))
    assert result.returncode == 0, result.stderr
    assert b": OK (model " in result.stdout


def test_install_script_and_unit_agree_on_paths() -> None:
    script, unit = INSTALL.read_text(), UNIT.read_text()
    exec_start = find(r"^ExecStart=(\S+) run --config (\S+)$", unit)
    assert exec_start[1] == find(r"^PREFIX=(\S+)$", script)[1] + "/venv/bin/kws-daemon"
    assert exec_start[2] == find(r"^CONFIG=(\S+)$", script)[1] == "/etc/kws-daemon/config.yaml"
    assert find(r"^User=(\S+)$", unit)[1] == find(r"^SERVICE_USER=(\S+)$", script)[1] == "kws-daemon"
    wyoming = WYOMING_UNIT.read_text()
    assert find(r"^ExecStart=(\S+) serve --config (\S+)$", wyoming).groups() == exec_start.groups()
    assert find(r"^User=(\S+)$", wyoming)[1] == "kws-daemon" and "--wyoming" in script


def test_install_script_parses_and_explains_itself() -> None:
    assert subprocess.run(["bash", "-n", str(INSTALL)], timeout=30).returncode == 0
    result = subprocess.run([str(INSTALL), "--help"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0
    assert "--uninstall" in result.stdout
    result = subprocess.run([str(INSTALL), "--bogus"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 1
    assert result.stderr == "install-service: unknown option '--bogus' (see --help)\n"
