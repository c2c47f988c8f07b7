import pytest

from tuneforge.errors import ModelError
from tuneforge.models import parse_ref


def test_default_ref():
    assert parse_ref("default").kind == "default"


def test_folder_and_gguf_refs(tmp_path):
    (tmp_path / "m.gguf").write_bytes(b"x")
    assert parse_ref(str(tmp_path)).kind == "folder"
    assert parse_ref(str(tmp_path / "m.gguf")).kind == "gguf"


@pytest.mark.parametrize("text", ["HuggingFaceTB/SmolLM2-135M-Instruct", "org/model.v2"])
def test_hub_ids(text):
    assert parse_ref(text).kind == "hub"


@pytest.mark.parametrize("text", ["/nonexistent", "./missing", "weights.gguf", "not a ref"])
def test_missing_paths_name_the_path(text):
    with pytest.raises(ModelError, match="no such file or folder"):
        parse_ref(text)


def test_file_that_is_not_a_model(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hi")
    with pytest.raises(ModelError, match="notes.txt: is a file but not a .gguf"):
        parse_ref(str(path))
