#!/usr/bin/env bash
# Run the main job end to end on a real video and show what reaches MQTT.
#
#   scripts/demo.sh                 build a demo clip from scikit-image's public-domain
#                                   astronaut photo (fetched from PyPI) and run on it
#   scripts/demo.sh VIDEO           run on a video file of your own
#
# Sets up a venv (.venv) with all three backends, pulls the starter models,
# starts a Mosquitto broker on a free loopback port, subscribes to the
# device's topics and runs `edge-runtime run` until the video ends.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
video="${1:-}"
work=.demo
mkdir -p "$work"

if [[ -n "$video" && ! -f "$video" ]]; then
    echo "scripts/demo.sh: video '$video' not found; give the path of an existing file" >&2
    exit 2
fi

# OS packages: the broker and its command-line client.
if ! command -v mosquitto >/dev/null && [[ ! -x /usr/sbin/mosquitto ]] || ! command -v mosquitto_sub >/dev/null; then
    echo "==> installing mosquitto and mosquitto-clients"
    sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends mosquitto mosquitto-clients
fi
mosquitto_bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)

if [[ ! -x .venv/bin/python ]]; then
    echo "==> creating .venv"
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
fi
echo "==> installing edge-runtime[all]"
.venv/bin/pip install -q -e '.[all]'

echo "==> pulling the starter models"
.venv/bin/edge-runtime models pull --starter

if [[ -z "$video" ]]; then
    video="$work/astronaut_demo.mp4"
    if [[ ! -f "$video" ]]; then
        echo "==> building a demo clip from scikit-image's astronaut photo"
        .venv/bin/python scripts/make_demo_clip.py --output "$video"
    fi
fi

port=$(.venv/bin/python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/mosquitto.conf" <<CONF
listener $port 127.0.0.1
allow_anonymous true
persistence false
CONF

echo "==> starting mosquitto on 127.0.0.1:$port"
"$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
broker_pid=$!
subscriber_pid=
cleanup() {
    [[ -n "$subscriber_pid" ]] && kill "$subscriber_pid" 2>/dev/null || true
    kill "$broker_pid" 2>/dev/null || true
}
trap cleanup EXIT
sleep 0.5

echo "==> subscribing to edge-runtime/demo/# (messages are printed below as they arrive)"
mosquitto_sub -h 127.0.0.1 -p "$port" -V mqttv5 -v -t 'edge-runtime/demo/#' &
subscriber_pid=$!
sleep 0.3

echo "==> edge-runtime run --source $video"
.venv/bin/edge-runtime run --source "$video" --broker "mqtt://127.0.0.1:$port" --device-id demo --window 5
sleep 0.5
echo "==> done: the video ended and the last window was published"
