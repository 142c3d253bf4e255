#!/bin/sh
# Set up what `make demo` and `make test` need on a fresh Debian host: Python 3.11+ with venv
# and headers (evdev compiles a small C extension), and mosquitto for the tests and benchmark.
# Installs system packages only when missing, and only as root or with password-less sudo.
#   deploy/bootstrap.sh python      -> prints the Python interpreter to use
#   deploy/bootstrap.sh mosquitto   -> makes sure mosquitto is installed
#   deploy/bootstrap.sh nats        -> makes sure nats-server is installed (the replica tests start
#                                      their own nodes and clusters on free ports)
#   deploy/bootstrap.sh faketime    -> makes sure libfaketime is installed (the fault campaign
#                                      steps an edge's clock back; without it that fault is skipped)
#   deploy/bootstrap.sh systemd     -> makes sure systemd-analyze is installed (tests/deploy check the
#                                      units with it; installing the package starts nothing)
#   deploy/bootstrap.sh chromium    -> makes sure Debian's chromium is installed (tests/web drive it
#                                      headless through playwright's client; no browser download)
#   deploy/bootstrap.sh postgresql  -> makes sure a PostgreSQL server answers at FLOORSYNC_TEST_PG
#                                      (default postgres@127.0.0.1:5432): installs and starts it if
#                                      missing or stopped (the tests create and drop their databases)
set -eu

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo "$@"
    else
        echo "bootstrap: need '$*' but cannot install system packages (not root, no sudo)." >&2
        echo "bootstrap: install them yourself, then run make again." >&2
        exit 1
    fi
}

apt_install() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

find_python() {
    for candidate in python3.13 python3.12 python3.11 python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
           "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$candidate"; return 0
        fi
    done
    return 1
}

case "${1:-}" in
python)
    py=$(find_python) || { apt_install python3 >&2; py=$(find_python); }
    if ! "$py" -c 'import venv, ensurepip' 2>/dev/null || ! command -v cc >/dev/null 2>&1 ||
       [ ! -f "$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')/Python.h" ]; then
        apt_install python3-venv python3-dev gcc
    fi
    echo "$py"
    ;;
mosquitto)
    if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
        echo "bootstrap: installing mosquitto (tests start their own on free ports)" >&2
        apt_install mosquitto
    fi
    ;;
nats)
    if ! command -v nats-server >/dev/null 2>&1 && [ ! -x /usr/sbin/nats-server ]; then
        echo "bootstrap: installing nats-server (the replica tests start their own on free ports)" >&2
        apt_install nats-server
    fi
    ;;
faketime)
    found=
    for lib in /usr/lib/*/faketime/libfaketime.so.1 /usr/lib/faketime/libfaketime.so.1 \
            /usr/local/lib/faketime/libfaketime.so.1; do
        [ -e "$lib" ] && found=$lib
    done
    if [ -z "$found" ]; then
        echo "bootstrap: installing libfaketime (the fault campaign steps an edge's clock back)" >&2
        apt_install libfaketime
    fi
    ;;
systemd)
    if ! command -v systemd-analyze >/dev/null 2>&1; then
        echo "bootstrap: installing systemd (systemd-analyze checks the units in deploy/systemd)" >&2
        apt_install systemd
    fi
    ;;
chromium)
    if ! command -v chromium >/dev/null 2>&1 && [ ! -x /usr/bin/chromium ]; then
        echo "bootstrap: installing chromium (tests/web drive the dashboard in it, headless)" >&2
        apt_install chromium
    fi
    ;;
postgresql)
    url=${FLOORSYNC_TEST_PG:-postgresql://postgres@127.0.0.1:5432/postgres}
    if ! command -v pg_isready >/dev/null 2>&1; then
        echo "bootstrap: installing PostgreSQL (the store's contract tests run on it)" >&2
        apt_install postgresql
    fi
    if ! pg_isready -q -d "$url"; then
        echo "bootstrap: starting PostgreSQL" >&2
        as_root service postgresql start >&2 || true
        tries=0
        until pg_isready -q -d "$url"; do
            tries=$((tries + 1))
            if [ "$tries" -ge 30 ]; then
                echo "bootstrap: PostgreSQL does not answer (FLOORSYNC_TEST_PG, or 127.0.0.1:5432);" >&2
                echo "bootstrap: start it, or point FLOORSYNC_TEST_PG at one where tests may create databases" >&2
                exit 1
            fi
            sleep 1
        done
    fi
    if ! psql "$url" -qAtc 'SELECT 1' >/dev/null 2>&1; then
        echo "bootstrap: PostgreSQL answers but refuses the tests' connection (postgres@127.0.0.1 with" >&2
        echo "bootstrap: trust auth, or FLOORSYNC_TEST_PG: a role that may create databases)" >&2
        exit 1
    fi
    ;;
*)
    echo "usage: $0 python|mosquitto|nats|faketime|systemd|chromium|postgresql" >&2; exit 2 ;;
esac
