"""One script installs the apt packages; README.md tells users to run it and .ci/run runs it."""

from __future__ import annotations

import subprocess

from tests.conftest import ROOT

SCRIPT = ROOT / "scripts" / "install-system-deps"
TEST_PACKAGES = {
    "pulseaudio",
    "pulseaudio-utils",
    "libasound2-plugins",
    "espeak-ng",
    "sox",
    "systemd",
    "haproxy",
}


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=30)


def test_the_script_names_the_runtime_and_the_test_packages() -> None:
    assert _script("--runtime", "--print").stdout.split() == ["libportaudio2"]
    assert set(_script("--print").stdout.split()) == {"libportaudio2", *TEST_PACKAGES}
    bogus = _script("--bogus")
    assert bogus.returncode == 2
    assert bogus.stderr == "install-system-deps: unknown option '--bogus' (see --help)\n"


def test_readme_and_ci_use_the_script() -> None:
    readme = (ROOT / "README.md").read_text()
    quick_start = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    assert "sudo scripts/install-system-deps" in quick_start
    assert all(package in quick_start for package in {"libportaudio2", *TEST_PACKAGES})
    assert "\nscripts/install-system-deps\n" in (ROOT / ".ci" / "run").read_text()
