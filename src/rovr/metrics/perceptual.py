"""The perceptual distance L_P and the reconstruction loss L_R of paper Eq. 1 (§6.1).

Two backends behind :class:`PerceptualMetric`:

- ``'lpips-vgg'`` (the paper's): LPIPS on an ImageNet VGG16. The calibrated linear layers ship
  inside the ``lpips`` package; the VGG16 backbone weights (torchvision's
  ``vgg16-397923af.pth``) are read from ``metric.vgg_weights``, else the torch hub cache, else
  downloaded where a network exists. Never run with random backbone weights.
- ``'ssim'``: the weight-free fallback L_P = 1 − SSIM (:mod:`rovr.metrics.image`).

:func:`build_perceptual` picks the backend from :class:`~rovr.config.MetricConfig`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import tempfile
import urllib.error
import urllib.request
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import VGG16_Weights

from rovr.errors import ConfigError
from rovr.metrics.image import ssim_map

if TYPE_CHECKING:
    from rovr.config import MetricConfig

log = logging.getLogger(__name__)

VGG16_URL: str = VGG16_Weights.IMAGENET1K_V1.url
"""torchvision's ImageNet VGG16 weights, the backbone LPIPS-VGG was calibrated on."""
VGG16_FILE = VGG16_URL.rsplit("/", 1)[-1]
"""Its file name in the torch hub cache: ``vgg16-397923af.pth``."""
_VGG16_SHA256_PREFIX = VGG16_FILE.rsplit("-", 1)[-1].removesuffix(".pth")  # torchvision names files by hash
_DOWNLOAD_TIMEOUT_S = 30.0
BACKENDS = ("auto", "lpips-vgg", "ssim")


class PerceptualMetric(nn.Module, ABC):
    """A frozen perceptual distance L_P: (B, 3, H, W) × 2 in [0, 1] → (B,), differentiable in the inputs.

    Parameters never require grad and the module stays in eval mode even inside a parent that
    is switched to training.
    """

    name: str

    @abstractmethod
    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Distances (B,) between x and y, both (B, 3, H, W) in [0, 1]; 0 for identical images."""

    def train(self, mode: bool = True) -> PerceptualMetric:
        """Ignore ``mode``: a metric is always in eval mode."""
        return super().train(False)

    def freeze(self) -> PerceptualMetric:
        """Set requires_grad False on every parameter and switch to eval mode."""
        for p in self.parameters():
            p.requires_grad_(False)
        return self.eval()


class SSIMDistance(PerceptualMetric):
    """Weight-free fallback L_P(x, y) = 1 − mean SSIM map (11×11 Gaussian window, σ = 1.5).

    The mean is over the full map (symmetric border padding), so holes at the frame border
    count as much as holes inside it.
    """

    name = "ssim"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 1 - ssim_map(x, y).mean(dim=(1, 2, 3))


class LPIPSVGG(PerceptualMetric):
    """LPIPS with a VGG16 trunk (Zhang et al. 2018), the φ and w_l of paper Eq. 1.

    L_P(x, y) = Σ_l 1/(H_l W_l) Σ_{h,w} ‖w_l ⊙ (φ̂_l(x)_{hw} − φ̂_l(y)_{hw})‖²,
    φ̂_l = channel-normalised VGG16 features after relu1_2 … relu5_3.

    The constructor builds the architecture only (random weights, no file I/O); use
    :func:`load_lpips_vgg` to get the weighted metric.
    """

    name = "lpips-vgg"

    def __init__(self) -> None:
        super().__init__()
        import lpips

        with warnings.catch_warnings():  # lpips builds torchvision's vgg16 with the deprecated `pretrained=`
            warnings.filterwarnings("ignore", "The parameter 'pretrained' is deprecated", UserWarning)
            warnings.filterwarnings("ignore", "Arguments other than a weight enum", UserWarning)
            self.lpips = lpips.LPIPS(net="vgg", pretrained=False, pnet_rand=True, verbose=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x, y, normalize=True).flatten()  # (B, 1, 1, 1) → (B,)

    def vgg_keys(self) -> dict[str, str]:
        """Map of this module's backbone keys to torchvision VGG16 keys ('lpips.net.slice1.0.weight' → 'features.0.weight')."""
        return {f"lpips.net.{k}": "features." + k.split(".", 1)[1] for k in self.lpips.net.state_dict()}


def _read_weights(path: Path, what: str) -> dict[str, torch.Tensor]:
    """Read a tensor state dict from a .pth file (restricted unpickler) or raise a one-line ConfigError."""
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for a bad file (pickle, zip, EOF, runtime)
        reason = (str(e).splitlines() or [type(e).__name__])[0][:200]
        raise ConfigError(f"{what} '{path}' cannot be read ({reason}); replace the file") from None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ConfigError(f"{what} '{path}' is not a state dict of tensors; replace the file")
    return sd


def _lpips_linear_path() -> Path:
    """The calibrated LPIPS-VGG linear layers shipped inside the lpips package."""
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / "vgg.pth"


def load_lpips_vgg(vgg_path: str | Path) -> LPIPSVGG:
    """LPIPS-VGG with its calibrated linear layers (from the lpips package) and VGG16 from ``vgg_path``.

    ``vgg_path`` holds torchvision's VGG16 state dict (keys ``features.N.*``; classifier keys are
    ignored) or only its ``features`` (keys ``N.*``). A file that cannot be read, misses a
    layer, has a wrong shape or non-finite values raises a one-line ConfigError.
    Returns the frozen metric on the CPU.
    """
    vgg_path = Path(vgg_path)
    lin_path = _lpips_linear_path()
    vgg = _read_weights(vgg_path, "VGG16 weights file")  # read both files before the (slow) build
    lin = _read_weights(lin_path, "LPIPS linear-layer file")
    metric = LPIPSVGG()
    params = dict(metric.named_parameters())  # shared modules (lpips.lins[i] is lpips.lin{i}) listed once
    if {f"lpips.{k}" for k in lin} != {k for k in params if k.startswith("lpips.lin")}:
        raise ConfigError(f"LPIPS linear-layer file '{lin_path}' does not fit LPIPS-VGG; reinstall lpips")
    new = {f"lpips.{k}": v for k, v in lin.items()}

    if not any(k.startswith("features.") for k in vgg):
        vgg = {f"features.{k}": v for k, v in vgg.items()}
    for own, theirs in metric.vgg_keys().items():
        w = vgg.get(theirs)
        if w is None or w.shape != params[own].shape:
            got = "missing" if w is None else f"shape {tuple(w.shape)}"
            raise ConfigError(
                f"VGG16 weights file '{vgg_path}' does not hold torchvision VGG16 weights ('{theirs}' {got}, "
                f"expected {tuple(params[own].shape)}); provide {VGG16_FILE}"
            )
        if w.is_floating_point() and not bool(torch.isfinite(w).all()):
            raise ConfigError(
                f"VGG16 weights file '{vgg_path}' holds NaN/inf in '{theirs}'; replace the file"
            )
        new[own] = w
    for k, p in params.items():
        if k not in new:  # every parameter comes from one of the two files
            raise ConfigError(f"LPIPS-VGG parameter '{k}' has no weights in '{vgg_path}' or '{lin_path}'")
        if new[k].shape != p.shape:
            raise ConfigError(f"LPIPS linear-layer file '{lin_path}' does not fit LPIPS-VGG; reinstall lpips")
        with torch.no_grad():
            p.copy_(new[k])
    metric.freeze()
    return metric


def _download(url: str, dst: Path, sha256_prefix: str, timeout: float = _DOWNLOAD_TIMEOUT_S) -> None:
    """Download ``url`` to ``dst`` atomically, checking the SHA-256 prefix; raises OSError/ValueError on failure."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent)
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as f, urllib.request.urlopen(url, timeout=timeout) as r:
            # said once the server answers: without a network only the fallback notice is printed
            log.info("downloading %s to %s", url, dst)
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        if not digest.hexdigest().startswith(sha256_prefix):
            raise ValueError(f"checksum mismatch for {url}")
        os.replace(tmp, dst)
    finally:
        Path(tmp).unlink(missing_ok=True)


def hub_vgg16_path() -> Path:
    """Where torchvision keeps VGG16 ImageNet weights: ``torch.hub.get_dir()/checkpoints/vgg16-397923af.pth``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / VGG16_FILE


def find_vgg16_weights(cfg: MetricConfig, download: bool = True) -> tuple[Path | None, str]:
    """Locate the VGG16 weights: ``cfg.vgg_weights``, else the hub cache, else a download into it.

    Returns (path or None, a one-line account of where it looked). An explicit
    ``cfg.vgg_weights`` that does not exist is a ConfigError, never a silent fallback.
    """
    if cfg.vgg_weights:
        p = Path(cfg.vgg_weights).expanduser()
        if not p.is_file():
            raise ConfigError(
                f"metric.vgg_weights '{p}' does not exist; pass the path of {VGG16_FILE} or leave it empty"
            )
        return p, f"metric.vgg_weights={p}"
    hub = hub_vgg16_path()
    if hub.is_file():
        return hub, str(hub)
    looked = f"metric.vgg_weights (unset), {hub}"
    if not download:
        return None, looked + " (download not attempted)"
    if VGG16_URL in _FAILED_DOWNLOADS:  # tried once in this process already: do not wait on the network again
        return None, f"{looked}, download from {VGG16_URL} ({_FAILED_DOWNLOADS[VGG16_URL]})"
    try:
        _download(VGG16_URL, hub, _VGG16_SHA256_PREFIX)
    except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        _FAILED_DOWNLOADS[VGG16_URL] = str(reason)
        return None, f"{looked}, download from {VGG16_URL} ({reason})"
    return hub, f"{hub} (downloaded)"


#: Fallback notices already given in this process.
_NOTICES: set[str] = set()

#: Downloads that failed in this process (url -> reason), so a run without network tries once.
_FAILED_DOWNLOADS: dict[str, str] = {}


def build_perceptual(
    cfg: MetricConfig, device: torch.device | str = "cpu", download: bool = True
) -> PerceptualMetric:
    """The perceptual metric L_P chosen by ``cfg.perceptual``, frozen, in eval mode, on ``device``.

    'ssim' → :class:`SSIMDistance`; 'lpips-vgg' → :class:`LPIPSVGG`, a ConfigError when its VGG16
    weights are not found; 'auto' → LPIPS-VGG when weights are found, else SSIM and one
    warning line. ``download=False`` never touches the network (e.g. on non-zero ranks).
    """
    choice = cfg.perceptual
    if choice not in BACKENDS:
        raise ConfigError(
            f"config value 'metric.perceptual' must be one of {list(BACKENDS)} (got {choice!r})"
        )
    if choice == "ssim":
        return SSIMDistance().freeze().to(device)
    try:
        import lpips  # noqa: F401
    except ImportError:
        if choice == "lpips-vgg":
            raise ConfigError(
                "metric.perceptual='lpips-vgg' needs the lpips package; pip install 'rovr[lpips]' "
                "or set metric.perceptual=ssim"
            ) from None
        log.warning(
            "lpips package not installed; using the weight-free perceptual fallback L_P = 1 - SSIM "
            "(pip install 'rovr[lpips]' for the paper's LPIPS-VGG)"
        )
        return SSIMDistance().freeze().to(device)
    path, looked = find_vgg16_weights(cfg, download=download)
    if path is None:
        if choice == "lpips-vgg":
            raise ConfigError(
                f"metric.perceptual='lpips-vgg' but VGG16 weights were not found (looked at {looked}); "
                f"put {VGG16_FILE} in {hub_vgg16_path().parent}, set metric.vgg_weights=PATH, "
                "or set metric.perceptual=ssim"
            )
        notice = log.warning if "vgg" not in _NOTICES else log.debug  # one notice line per process
        _NOTICES.add("vgg")
        notice(
            "VGG16 weights for LPIPS not found (looked at %s); using the weight-free perceptual fallback "
            "L_P = 1 - SSIM. For the paper's LPIPS-VGG put %s in %s or set metric.vgg_weights=PATH",
            looked,
            VGG16_FILE,
            hub_vgg16_path().parent,
        )
        return SSIMDistance().freeze().to(device)
    log.info("perceptual metric: LPIPS-VGG, VGG16 weights from %s", looked)
    return load_lpips_vgg(path).to(device)


def reconstruction_loss(
    x_hat: torch.Tensor, x: torch.Tensor, metric: PerceptualMetric, lam: float
) -> torch.Tensor:
    """L_R of paper Eq. 1: λ · mean_b L_P(x̂_b, x_b) + (1 − λ) · MSE(x̂, x).

    Args:
        x_hat, x: (B, 3, H, W) in [0, 1], reconstruction and ground truth.
        metric: the perceptual distance L_P (the first term of Eq. 1).
        lam: λ in [0, 1] (see :func:`lambda_schedule`).

    Returns:
        A scalar. The MSE is the mean over batch, channels and pixels. With λ = 0 the metric is
        not evaluated.
    """
    mse = F.mse_loss(x_hat, x)
    if lam == 0:
        return mse
    return lam * metric(x_hat, x).mean() + (1 - lam) * mse


def lambda_schedule(step: int, steps: int, lambda_max: float, rate: float) -> float:
    """The perceptual weight λ of Eq. 1 during pretraining (§6.1), from 0 at step 0 to λ_max at ``steps``.

    λ(s) = λ_max (1 − e^{−r s/S}) / (1 − e^{−r}),  s clipped to [0, S].

    r > 0 rises quickly then saturates; r < 0 starts slowly and rises late (e^{|r| s/S} growth);
    r = 0 is the linear limit λ_max s/S.
    """
    if steps < 1:
        raise ValueError(f"lambda_schedule needs steps >= 1 (got {steps})")
    s = min(max(step, 0), steps) / steps
    if rate == 0:
        return lambda_max * s
    return lambda_max * math.expm1(-rate * s) / math.expm1(-rate)
