#!/bin/sh
# Install floorsync on a host: the steps of deploy/README.md's "Install" section, as one script,
# so the steps that are documented are the steps that are tested (tests/deploy/test_install.py).
#   deploy/install.sh edge      a scanner or reader host: the edge extra only, no web stack
#   deploy/install.sh server    the central host of a site
#   deploy/install.sh central   a central replica of a network of sites (deploy/multisite/):
#                               the server, PostgreSQL and cluster extras, the unit templates
#                               floorsync-central@.service (HTTP) and floorsync-replica@.service
#                               (NATS consumer), /etc/floorsync/central-1.env and replica-1.env
# Environment:
#   DESTDIR         install under this root instead of / (packaging, and the tests). Then no user
#                   is created, no file is given group floorsync (that needs root), no venv is
#                   made unless FLOORSYNC_VENV=yes (its scripts would name DESTDIR), and neither
#                   systemctl nor udevadm is run.
#   FLOORSYNC_VENV  yes/no: make /opt/floorsync/venv and install the pinned dependencies into it
#                   (default: yes without DESTDIR, no with it).
#   FLOORSYNC_SOURCE  what pip installs as floorsync itself (default: this checkout).
#   PYTHON          the interpreter for the venv (default: python3).
# Existing configuration (/etc/floorsync/edge.toml, server.env) is never overwritten.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
role=${1:-}
case "$role" in
edge|server|central) ;;
*) echo "usage: $0 edge|server|central" >&2; exit 2 ;;
esac

D=${DESTDIR:-}
if [ -n "$D" ]; then
    own=
    venv=${FLOORSYNC_VENV:-no}
else
    if [ "$(id -u)" != 0 ]; then
        echo "install: run as root (or set DESTDIR to install under another root)" >&2
        exit 1
    fi
    own="-g floorsync"
    venv=${FLOORSYNC_VENV:-yes}
    if ! id -u floorsync >/dev/null 2>&1; then
        useradd --system --home-dir /var/lib/floorsync --shell /usr/sbin/nologin floorsync
    fi
fi

# /etc/floorsync holds the device's broker password or the service's tokens: group floorsync only.
install -d -m 0755 "$D/etc" "$D/etc/systemd/system"
# shellcheck disable=SC2086  # $own is empty or two words
install -d -m 0750 $own "$D/etc/floorsync"

if [ "$venv" = yes ]; then
    # The pinned, hashed dependencies of the role's extra first, then floorsync without deps:
    # nothing unpinned is resolved on the host (deploy/constraints/, `make lock`).
    "${PYTHON:-python3}" -m venv "$D/opt/floorsync/venv"
    "$D/opt/floorsync/venv/bin/pip" install --require-hashes --no-deps \
        -r "$here/constraints/$role.txt"
    "$D/opt/floorsync/venv/bin/pip" install --no-deps "${FLOORSYNC_SOURCE:-$here/..}"
fi

config() {  # config SOURCE TARGET: deploy/SOURCE, mode 0640, unless the operator's copy exists
    if [ -e "$D/etc/floorsync/$2" ]; then
        echo "install: keeping /etc/floorsync/$2"
    else
        # shellcheck disable=SC2086
        install -m 0640 $own "$here/$1" "$D/etc/floorsync/$2"
        echo "install: wrote /etc/floorsync/$2 from deploy/$1: edit it"
    fi
}

unit=floorsync-$role.service
units=$here/systemd
if [ "$role" = edge ]; then
    config examples/handheld.toml edge.toml
    install -d -m 0755 "$D/etc/udev" "$D/etc/udev/rules.d" "$D/etc/modules-load.d"
    install -m 0644 "$here/udev/99-floorsync.rules" "$D/etc/udev/rules.d/"
    install -m 0644 "$here/modules-load/floorsync.conf" "$D/etc/modules-load.d/"
elif [ "$role" = server ]; then
    config examples/server.env server.env
else
    # replica 1; a further replica is a copy of this file with its lines "per replica" changed
    config multisite/env/central-1.env central-1.env
    config multisite/env/replica-1.env replica-1.env
    unit=floorsync-central@.service
    units=$here/multisite/systemd
    install -m 0644 "$units/floorsync-replica@.service" "$D/etc/systemd/system/"
fi
install -m 0644 "$units/$unit" "$D/etc/systemd/system/"

if [ -z "$D" ]; then
    if [ "$role" = edge ]; then
        systemctl restart systemd-modules-load.service
        udevadm control --reload
        udevadm trigger --subsystem-match=tty --subsystem-match=input
    fi
    systemctl daemon-reload
    if [ "$role" = central ]; then
        echo "install: then: systemctl enable --now floorsync-central@1 floorsync-replica@1"
    else
        echo "install: then: systemctl enable --now $(echo "$unit" | sed 's/\.service$//')"
    fi
fi
