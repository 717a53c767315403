"""edge-convert's command line: help text, format detection and errors raised before any export."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from converters.cli import build_parser, main
from converters.deps import require
from converters.errors import MissingDependencyError, UnknownFormatError
from converters.sources import detect_format


def test_help_names_units_and_defaults(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    text = capsys.readouterr().out

    assert exit_info.value.code == 0
    assert "--trust-pickle" in text
    assert "--preprocessing-in-graph" in text
    assert "--features-output" in text
    assert "in pixels" in text
    assert "max absolute difference of fp32 outputs" in text
    assert "(default: 0.0001)" in text
    assert "min top-1 agreement" in text
    assert "--force" in text


def test_every_option_has_help():
    parser = build_parser()

    missing = [action.dest for action in parser._actions if not action.help]

    assert missing == []


def test_unknown_format_rejected(tmp_path: Path, capsys):
    source = tmp_path / "notes.bin"
    source.write_text("this is not a model\n")

    code = main([str(source), "-o", str(tmp_path / "out"), "--no-progress"])
    error = capsys.readouterr().err

    assert code == 1
    assert "unknown model format" in error
    assert "keras-h5" in error
    assert not (tmp_path / "out").exists()


def test_untrusted_pickle_rejected(tmp_path: Path, capsys):
    source = tmp_path / "model.pt"
    source.write_bytes(pickle.dumps({"weights": [1.0, 2.0]}, protocol=2))

    code = main([str(source), "-o", str(tmp_path / "out"), "--no-progress"])
    error = capsys.readouterr().err

    assert code == 1
    assert "--trust-pickle" in error
    assert "not pinned in the catalog" in error


def test_missing_dependency_names_extra():
    with pytest.raises(MissingDependencyError) as error:
        require("edge_convert_no_such_module", "run a test step")

    assert "edge-runtime[convert]" in str(error.value)
    assert "run a test step" in str(error.value)


def test_bad_input_size_option(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--input-size", "224"])

    assert exit_info.value.code == 2
    assert "WIDTHxHEIGHT" in capsys.readouterr().err


@pytest.mark.parametrize("value, message", [("98", "98 is outside 0..1"), ("high", "'high' is not a number")])
def test_int8_tolerance_must_be_a_fraction(tmp_path: Path, capsys, value: str, message: str):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--tolerance-int8", value])

    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_precision_option(tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "m.onnx"), "-o", str(tmp_path / "out"), "--precisions", "fp32,int4"])

    assert exit_info.value.code == 2
    assert "fp32,fp16,int8" in capsys.readouterr().err


def test_detect_format_of_real_files(fer_files, age_onnx, tmp_path: Path):
    (tmp_path / "mtcnn").mkdir()
    for name in ("pnet", "rnet", "onet"):
        (tmp_path / "mtcnn" / f"{name}.pt").write_bytes(b"PK\x03\x04")

    assert detect_format(fer_files["h5"]) == "keras-h5"
    assert detect_format(fer_files["tflite"]) == "tflite"
    assert detect_format(age_onnx) == "onnx"
    assert detect_format(tmp_path / "mtcnn") == "mtcnn-facenet"


def test_detect_format_rejects_incomplete_directory(tmp_path: Path):
    (tmp_path / "pnet.pt").write_bytes(b"")

    with pytest.raises(UnknownFormatError) as error:
        detect_format(tmp_path)

    assert "rnet.pt" in str(error.value)
