from __future__ import annotations

from pathlib import Path

import pytest

from runtime.engines.model_dir import is_missing_local_model, missing_local_model


@pytest.mark.parametrize("name, missing", [
    ("/no/such/model", True),
    ("./no-such-model", True),
    ("../no-such-model", True),
    ("~/no-such-model-here", True),
    ("MARIO-Math-Reasoning/AlphaMath-7B", False),  # a hub id: the loader decides
    ("gpt2", False),
])
def test_path_like_names_that_are_not_directories(name: str, missing: bool) -> None:
    assert is_missing_local_model(name) is missing


def test_existing_directory_and_file(tmp_path: Path) -> None:
    assert not is_missing_local_model(tmp_path)
    (tmp_path / "weights.bin").write_bytes(b"")
    assert is_missing_local_model(tmp_path / "weights.bin")  # a file is not a model directory
    assert is_missing_local_model(str(tmp_path / "weights.bin"))


def test_message_names_the_path_and_only_for_a_missing_one(tmp_path: Path) -> None:
    assert missing_local_model(tmp_path) is None
    assert missing_local_model("gpt2") is None
    assert missing_local_model(tmp_path / "ckpt") == f"cannot load model {tmp_path / 'ckpt'}: no such directory"
