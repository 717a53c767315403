#!/usr/bin/env bash
# Install edge-runtime as a systemd service.
#
# Steps: create a virtual environment in /opt/edge-runtime/venv, install the
# package with the extras for the board, install the unit, its drop-ins and
# /etc/edge-runtime/config.yaml, pull the starter models into the service's
# state directory, then enable and start the service.
#
# --prefix DIR installs into an image root instead of the running system: the
# paths move under DIR, and nothing touches the live service manager (the
# unit is enabled with `systemctl --root=DIR`, which only writes symlinks).
# --dry-run prints every command and writes nothing.

set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SOURCE_TREE=$(dirname "$SCRIPT_DIR")
UNIT_NAME=edge-runtime.service

# The ExecStart= line of the unit and the paths below must agree.
INSTALL_DIR=/opt/edge-runtime
VENV_DIR=$INSTALL_DIR/venv
UNIT_DIR=/etc/systemd/system
CONFIG_DIR=/etc/edge-runtime
STATE_DIR=/var/lib/edge-runtime
# With DynamicUser=yes systemd keeps the state directory here and makes
# STATE_DIR a symbolic link to it.
PRIVATE_STATE_DIR=/var/lib/private/edge-runtime

prefix=/
board=auto
extras=
python=python3
package_source=
config_file=$SCRIPT_DIR/config.yaml
models=
do_venv=1
do_models=1
do_enable=1
dry_run=0

usage() {
    cat <<EOF
Usage: $0 [options]

Options:
  --prefix DIR       install under DIR instead of / (an image root); default /
  --board NAME       pi, jetson or generic; default: detected from the device tree
  --extras LIST      pip extras, comma-separated (onnx, openvino, tflite, all);
                     default: onnx,tflite on pi and jetson, all on generic
  --python PATH      interpreter that creates the virtual environment; default python3
  --source SPEC      what pip installs; default: the source tree at $SOURCE_TREE
  --config FILE      configuration copied to $CONFIG_DIR/config.yaml when none
                     exists there; default: $SCRIPT_DIR/config.yaml
  --models "A B"     catalog names pulled into the model store; default: the
                     starter set (edge-runtime models pull --starter)
  --no-venv          skip creating the virtual environment and installing the package
  --no-models        skip pulling models
  --no-enable        install the unit but do not enable or start it
  --dry-run          print the commands instead of running them
  -h, --help         show this help
EOF
}

die() {
    echo "install.sh: error: $*" >&2
    exit 1
}

log() {
    echo "==> $*"
}

# Print a command, then run it unless this is a dry run.
run() {
    printf '+'
    printf ' %q' "$@"
    printf '\n'
    if [ "$dry_run" -eq 0 ]; then
        "$@"
    fi
}

parse_args() {
    while [ $# -gt 0 ]; do
        case "$1" in
            --prefix) [ $# -ge 2 ] || die "--prefix needs a directory"; prefix=$2; shift 2 ;;
            --board) [ $# -ge 2 ] || die "--board needs pi, jetson or generic"; board=$2; shift 2 ;;
            --extras) [ $# -ge 2 ] || die "--extras needs a list such as onnx,tflite"; extras=$2; shift 2 ;;
            --python) [ $# -ge 2 ] || die "--python needs an interpreter path"; python=$2; shift 2 ;;
            --source) [ $# -ge 2 ] || die "--source needs a path or pip requirement"; package_source=$2; shift 2 ;;
            --config) [ $# -ge 2 ] || die "--config needs a file"; config_file=$2; shift 2 ;;
            --models) [ $# -ge 2 ] || die "--models needs a space-separated list of names"; models=$2; shift 2 ;;
            --no-venv) do_venv=0; shift ;;
            --no-models) do_models=0; shift ;;
            --no-enable) do_enable=0; shift ;;
            --dry-run) dry_run=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage >&2; die "unknown option '$1'" ;;
        esac
    done
}

# Print pi, jetson or generic for the board this script runs on.
detect_board() {
    local model=
    if [ -r /sys/firmware/devicetree/base/model ]; then
        model=$(tr -d '\0' < /sys/firmware/devicetree/base/model)
    fi

    case "$model" in
        *"Raspberry Pi"*) echo pi; return ;;
        *Jetson*|*NVIDIA*) echo jetson; return ;;
    esac
    if [ -e /etc/nv_tegra_release ]; then
        echo jetson
        return
    fi
    echo generic
}

# Print the default pip extras of a board. PyPI has no OpenVINO wheel for
# 32-bit ARM, and on Jetson the GPU build of ONNX Runtime comes from NVIDIA's
# own index, so both ARM boards get the CPU backends from PyPI.
default_extras() {
    case "$1" in
        pi|jetson) echo onnx,tflite ;;
        generic) echo all ;;
    esac
}

# Print PATH inside the target root, that is $prefix joined with PATH.
target() {
    if [ "$prefix" = / ]; then
        echo "$1"
    else
        echo "${prefix%/}$1"
    fi
}

install_venv() {
    local venv requirement
    venv=$(target "$VENV_DIR")
    requirement="${package_source}[${extras}]"

    log "virtual environment $venv with $requirement"
    run "$python" -m venv "$venv"
    # Pulling MTCNN reads its files from an sdist, and pip prepares an sdist's
    # metadata here without build isolation, which needs setuptools and wheel.
    run "$venv/bin/python" -m pip install --upgrade pip setuptools wheel
    run "$venv/bin/python" -m pip install "$requirement"
}

install_unit() {
    local unit_dir dropin_dir
    unit_dir=$(target "$UNIT_DIR")
    dropin_dir=$unit_dir/$UNIT_NAME.d

    log "unit $unit_dir/$UNIT_NAME"
    run install -D -m 0644 "$SCRIPT_DIR/$UNIT_NAME" "$unit_dir/$UNIT_NAME"

    # The extras "all" and "openvino" both bring OpenVINO, whose JIT needs
    # MemoryDenyWriteExecute=no.
    case ",$extras," in
        *,openvino,*|*,all,*)
            log "drop-in for OpenVINO's JIT (MemoryDenyWriteExecute=no)"
            run install -D -m 0644 "$SCRIPT_DIR/drop-ins/openvino.conf" "$dropin_dir/openvino.conf"
            ;;
    esac

    if [ "$board" = jetson ]; then
        log "drop-in for Jetson GPU and DLA device nodes"
        run install -D -m 0644 "$SCRIPT_DIR/drop-ins/jetson.conf" "$dropin_dir/jetson.conf"
    fi
}

install_config() {
    local config_dir
    config_dir=$(target "$CONFIG_DIR")

    # The transient service user has no fixed uid, so the file stays
    # world-readable; secrets go through LoadCredential= (see config.yaml).
    if [ -e "$config_dir/config.yaml" ]; then
        log "keeping the existing $config_dir/config.yaml"
    else
        log "configuration $config_dir/config.yaml"
        run install -D -m 0644 "$config_file" "$config_dir/config.yaml"
    fi
}

pull_models() {
    local venv state_dir selection
    venv=$(target "$VENV_DIR")
    state_dir=$(target "$STATE_DIR")

    # $models is a space-separated list, so it is split on purpose.
    # shellcheck disable=SC2206
    selection=(${models:---starter})
    if [ "$prefix" = / ]; then
        # Pull as the service's own transient user and state directory, so
        # the files belong to that user exactly as if the service had pulled them.
        log "models into $state_dir/models (as the service user)"
        run systemd-run --quiet --wait --pipe --collect \
            --property=DynamicUser=yes --property=StateDirectory=edge-runtime \
            "$VENV_DIR/bin/edge-runtime" models pull "${selection[@]}"
    else
        # In an image root the service has never run, so lay the directory
        # out as systemd does for DynamicUser=yes. On the first start systemd
        # changes the ownership of the files to the transient user, since
        # they belong to root.
        local private_dir
        private_dir=$(target "$PRIVATE_STATE_DIR")
        log "models into $private_dir/models"
        run install -d -m 0700 "$(dirname "$private_dir")"
        run install -d -m 0750 "$private_dir"
        run ln -sfn "private/$(basename "$private_dir")" "$state_dir"
        run env STATE_DIRECTORY="$private_dir" "$venv/bin/edge-runtime" models pull "${selection[@]}"
    fi
}

enable_service() {
    if [ "$prefix" = / ]; then
        log "enabling and starting $UNIT_NAME"
        run systemctl daemon-reload
        run systemctl enable --now "$UNIT_NAME"
    else
        log "enabling $UNIT_NAME in $prefix"
        run systemctl --root="$prefix" enable "$UNIT_NAME"
    fi
}

main() {
    parse_args "$@"

    if [ "$board" = auto ]; then
        board=$(detect_board)
    fi
    case "$board" in
        pi|jetson|generic) ;;
        *) die "unknown board '$board'; use pi, jetson or generic" ;;
    esac

    extras=${extras:-$(default_extras "$board")}
    package_source=${package_source:-$SOURCE_TREE}
    [ -f "$config_file" ] || die "config file $config_file not found; pass an existing file to --config"
    if [ "$prefix" = / ] && [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
        die "installing into / needs root; run it with sudo, or pass --prefix DIR or --dry-run"
    fi

    log "board $board, extras $extras, prefix $prefix$([ "$dry_run" -eq 1 ] && echo ', dry run')"

    if [ "$do_venv" -eq 1 ]; then
        install_venv
    fi
    install_unit
    install_config
    if [ "$do_models" -eq 1 ]; then
        pull_models
    fi
    if [ "$do_enable" -eq 1 ]; then
        enable_service
    fi

    log "done; follow the service with: journalctl -u $UNIT_NAME -f"
}

main "$@"
