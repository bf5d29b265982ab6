#!/usr/bin/env bash
# Installs kws-daemon as a systemd service: a virtual environment in /opt/kws-daemon/venv, a system
# user kws-daemon in group audio, the default config in /etc/kws-daemon/config.yaml (kept if present),
# and the unit, enabled and (re)started.
#
#   sudo scripts/install-service.sh              install, or upgrade in place
#   sudo scripts/install-service.sh --wyoming    the same, with the Wyoming server unit
#                                                (kws-daemon-wyoming.service) instead of the microphone one
#   sudo scripts/install-service.sh --uninstall  stop and remove the units and /opt/kws-daemon
#
# PYTHON picks the interpreter for the venv (default python3, 3.10 or newer); KWS_PACKAGE what pip
# installs into it (default: the source tree this script is in).
set -euo pipefail
umask 022 # the venv must be readable by the service user whatever root's umask is

PREFIX=/opt/kws-daemon
CONFIG=/etc/kws-daemon/config.yaml
UNITS=/etc/systemd/system
SERVICE_USER=kws-daemon
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

die() {
    echo "install-service: $*" >&2
    exit 1
}

usage() {
    sed -n '2,12s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"
}

uninstall() {
    local unit
    for unit in kws-daemon.service kws-daemon-wyoming.service; do
        if systemctl list-unit-files "$unit" >/dev/null 2>&1; then
            systemctl disable --now "$unit" || true
        fi
        rm -f "$UNITS/$unit"
    done
    systemctl daemon-reload
    rm -rf "$PREFIX"
    echo "removed the kws-daemon service and $PREFIX"
    echo "kept $(dirname "$CONFIG"), /var/lib/kws-daemon and the user $SERVICE_USER; remove them by hand if unwanted"
}

install_service() {
    local unit=$1 python=${PYTHON:-python3}
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
        || die "$python is missing or older than 3.10 (set PYTHON=...)"
    case $(readlink -f "$(command -v "$python")") in
        /root/* | /home/*) die "$python lives in a home directory, which the service cannot reach (set PYTHON=/usr/bin/python3)" ;;
    esac
    [ -f "$here/systemd/kws-daemon.service" ] || die "run this script from a kws-daemon source tree"

    echo "installing kws-daemon into $PREFIX/venv"
    "$python" -m venv "$PREFIX/venv" || die "cannot create a virtual environment (apt install python3-venv)"
    "$PREFIX/venv/bin/pip" install --quiet --upgrade pip
    "$PREFIX/venv/bin/pip" install --quiet --upgrade "${KWS_PACKAGE:-$here}"

    if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
        useradd --system --user-group --groups audio --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin --comment "kws-daemon keyword spotting" "$SERVICE_USER"
    fi
    usermod --append --groups audio "$SERVICE_USER"

    install -d -m 0755 "$(dirname "$CONFIG")"
    if [ -e "$CONFIG" ]; then
        echo "keeping the existing $CONFIG"
    else
        # group-readable by the service only: hooks may carry webhook tokens
        install -m 0640 -o root -g "$SERVICE_USER" "$here/systemd/config.yaml" "$CONFIG"
        echo "wrote $CONFIG"
    fi
    runuser -u "$SERVICE_USER" -- "$PREFIX/venv/bin/kws-daemon" check-config "$CONFIG" \
        || die "$CONFIG does not load as the service user (fix it, then run this script again)"

    install -m 0644 "$here/systemd/$unit" "$UNITS/$unit"
    systemctl daemon-reload
    systemctl enable "$unit"
    systemctl restart "$unit"
    if [ "$unit" = kws-daemon-wyoming.service ]; then
        cat <<EOF
kws-daemon serves Wyoming on the address of serve.uri in $CONFIG (default tcp://127.0.0.1:10400;
set serve.uri: tcp://0.0.0.0:10400 for Home Assistant on another machine). Watch it with:
  systemctl status $unit
  journalctl -u $unit -f
In Home Assistant: Settings > Devices & services > Add integration > Wyoming Protocol, host and port.
Edit $CONFIG, then: sudo systemctl restart $unit
EOF
        return
    fi
    cat <<EOF
kws-daemon is running. Watch it with:
  systemctl status kws-daemon
  journalctl -u kws-daemon -f
  curl -s http://127.0.0.1:9464/metrics | grep ^kws_
Edit $CONFIG, then: sudo systemctl reload kws-daemon
EOF
}

case "${1:-}" in
    -h | --help) usage ;;
    --uninstall | --wyoming | "")
        [ "$(id -u)" -eq 0 ] || die "must run as root (sudo $0 $*)"
        command -v systemctl >/dev/null || die "systemctl not found: this needs a systemd system"
        case "${1:-}" in
            --uninstall) uninstall ;;
            --wyoming) install_service kws-daemon-wyoming.service ;;
            *) install_service kws-daemon.service ;;
        esac
        ;;
    *) die "unknown option '$1' (see --help)" ;;
esac
