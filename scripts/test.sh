#!/usr/bin/env bash
# Set up everything the test suite needs and run it.
#
#   scripts/test.sh                 full suite, converters included (first run
#                                   installs torch/TensorFlow: ~10 GB, a few minutes)
#   scripts/test.sh --device-only   runtime tests only, in a light venv
#   scripts/test.sh -- -k mqtt      extra arguments after -- go to pytest
#
# OS packages (mosquitto, systemd-analyze) are installed with apt-get when
# missing; that needs root or sudo.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

mode=full
pytest_args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --device-only) mode=device; shift ;;
        --) shift; pytest_args=("$@"); break ;;
        -h|--help) sed -n '2,11p' "$0"; exit 0 ;;
        *) echo "scripts/test.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
done

install_os_packages() {
    local missing=()
    command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]] || missing+=(mosquitto)
    command -v mosquitto_sub >/dev/null || missing+=(mosquitto-clients)
    command -v systemd-analyze >/dev/null || missing+=(systemd)
    if [[ ${#missing[@]} -eq 0 ]]; then
        return
    fi
    echo "==> installing OS packages: ${missing[*]}"
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

make_venv() {
    local venv="$1" extras="$2"
    if [[ ! -x "$venv/bin/python" ]]; then
        echo "==> creating $venv"
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q --upgrade pip
    fi
    echo "==> installing edge-runtime[$extras] into $venv"
    "$venv/bin/pip" install -q -e ".[$extras]"
}

install_os_packages

if [[ $mode == device ]]; then
    make_venv .venv dev
    exec .venv/bin/python -m pytest -m "not convert" "${pytest_args[@]}"
fi

make_venv .venv-convert convert,dev
echo "==> installing the reference pipelines of bench/compare.py into .venv-convert"
.venv-convert/bin/pip install -q --no-deps --require-hashes -r bench/references/requirements.txt
exec .venv-convert/bin/python -m pytest "${pytest_args[@]}"
