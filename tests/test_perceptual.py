"""L_P backends, VGG16 weight lookup, Eq. 1 and the λ schedule (rovr.metrics.perceptual).

No real VGG16 ImageNet weights exist offline, so the LPIPS-VGG tests check the loading
mechanics with randomly initialised torchvision VGG16 features saved the way torchvision
stores them (keys ``features.N.*``).
"""

from __future__ import annotations

import logging
import math
import urllib.error
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity
from torchvision.models.vgg import cfgs, make_layers

from rovr.config import MetricConfig
from rovr.errors import ConfigError
from rovr.metrics import perceptual as P
from rovr.metrics.perceptual import (
    PerceptualMetric,
    SSIMDistance,
    build_perceptual,
    lambda_schedule,
    reconstruction_loss,
)

LOGGER = "rovr.metrics.perceptual"


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test sees a process that has not yet tried a download or given the fallback notice."""
    monkeypatch.setattr(P, "_NOTICES", set())
    monkeypatch.setattr(P, "_FAILED_DOWNLOADS", {})


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """Random VGG16 weights as torchvision saves them: ``features.N.*`` (+ a classifier key to ignore)."""
    torch.manual_seed(0)
    features = make_layers(cfgs["D"])  # exactly torchvision.models.vgg16().features
    sd = {f"features.{k}": v.clone() for k, v in features.state_dict().items()}
    sd["classifier.6.bias"] = torch.zeros(1000)
    path = tmp_path_factory.mktemp("vgg") / P.VGG16_FILE
    torch.save(sd, path, _use_new_zipfile_serialization=False)  # the 2017 file's legacy format
    return path, sd


@pytest.fixture(scope="module")
def lpips_metric(vgg_file: tuple[Path, dict[str, torch.Tensor]]) -> PerceptualMetric:
    pytest.importorskip("lpips", reason="the lpips package (rovr[lpips]) is not installed")
    path, _ = vgg_file
    return build_perceptual(
        MetricConfig(perceptual="lpips-vgg", vgg_weights=str(path)), "cpu", download=False
    )


@pytest.fixture
def empty_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert P.hub_vgg16_path() == tmp_path / "torch" / "hub" / "checkpoints" / P.VGG16_FILE
    return tmp_path / "torch"


def _images(B: int = 2, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.avg_pool2d(torch.rand(B, 3, size + 2, size + 2, generator=g), 3, stride=1)
    return x, (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(0, 1)


def _assert_frozen(metric: PerceptualMetric) -> None:
    assert not metric.training
    assert all(not p.requires_grad for p in metric.parameters())
    torch.nn.Sequential(metric).train()  # a parent switched to training leaves the metric in eval
    assert not any(m.training for m in metric.modules())


# ----------------------------------------------------------------------------- LPIPS-VGG


def test_lpips_vgg_loads_the_given_weights(
    lpips_metric: PerceptualMetric, vgg_file: tuple[Path, dict[str, torch.Tensor]]
) -> None:
    _, saved = vgg_file
    assert isinstance(lpips_metric, P.LPIPSVGG) and lpips_metric.name == "lpips-vgg"
    state = lpips_metric.state_dict()
    keys = lpips_metric.vgg_keys()
    assert len(keys) == 26  # 13 conv layers of VGG16, weight + bias
    for own, theirs in keys.items():
        assert torch.equal(state[own], saved[theirs]), own
    lin = torch.load(P._lpips_linear_path(), map_location="cpu", weights_only=True)
    assert len(lin) == 5
    for k, v in lin.items():
        assert torch.equal(state[f"lpips.{k}"], v), k
        assert torch.equal(state[f"lpips.lins.{k[3]}.model.1.weight"], v), k  # the alias forward() uses
    _assert_frozen(lpips_metric)


def test_lpips_vgg_distance_properties(lpips_metric: PerceptualMetric) -> None:
    x, y = _images()
    x.requires_grad_(True)
    d = lpips_metric(x, y)
    assert d.shape == (2,)
    assert (d > 0).all()
    torch.testing.assert_close(lpips_metric(x, x), torch.zeros(2), atol=1e-7, rtol=0)
    d.sum().backward()
    assert x.grad is not None and float(x.grad.abs().sum()) > 0


def test_lpips_vgg_equals_the_lpips_package_with_the_same_backbone(
    lpips_metric: PerceptualMetric,
    vgg_file: tuple[Path, dict[str, torch.Tensor]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Reference: lpips.LPIPS built by the package itself, its torchvision VGG16 replaced by ours."""
    import lpips
    import lpips.pretrained_networks as pn

    _, saved = vgg_file
    features = make_layers(cfgs["D"])
    features.load_state_dict(
        {k.removeprefix("features."): v for k, v in saved.items() if k.startswith("features.")}
    )
    monkeypatch.setattr(pn.tv, "vgg16", lambda **kwargs: SimpleNamespace(features=features))
    ref = lpips.LPIPS(net="vgg", pretrained=True, verbose=False)
    x, y = _images(3, 48, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(lpips_metric(x, y), ref(x, y, normalize=True).flatten())


def test_auto_finds_weights_in_torch_home(
    vgg_file: tuple[Path, dict[str, torch.Tensor]], empty_torch_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path, saved = vgg_file
    hub = P.hub_vgg16_path()
    hub.parent.mkdir(parents=True)
    hub.symlink_to(path)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        metric = build_perceptual(MetricConfig(perceptual="auto"), "cpu", download=False)
    assert metric.name == "lpips-vgg"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(str(hub) in r.getMessage() for r in caplog.records)
    state = metric.state_dict()
    assert all(torch.equal(state[own], saved[theirs]) for own, theirs in metric.vgg_keys().items())


def test_features_only_state_dict_is_accepted(
    vgg_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    """A file of ``vgg16().features`` alone (keys ``N.*``) loads the same weights."""
    _, saved = vgg_file
    path = tmp_path / "features.pth"
    torch.save({k.removeprefix("features."): v for k, v in saved.items() if k.startswith("features.")}, path)
    metric = P.load_lpips_vgg(path)
    state = metric.state_dict()
    assert all(torch.equal(state[own], saved[theirs]) for own, theirs in metric.vgg_keys().items())


def test_wrong_weights_are_one_line_config_errors(
    vgg_file: tuple[Path, dict[str, torch.Tensor]], tmp_path: Path
) -> None:
    _, saved = vgg_file
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a torch file at all" * 10)
    not_tensors = tmp_path / "not_tensors.pth"
    torch.save({"features.0.weight": [1, 2, 3]}, not_tensors)
    wrong_shape = tmp_path / "wrong_shape.pth"
    torch.save({**saved, "features.28.weight": torch.zeros(512, 512, 1, 1)}, wrong_shape)
    for path, match in [
        (garbage, "cannot be read"),
        (not_tensors, "not a state dict"),
        (wrong_shape, "features.28"),
    ]:
        with pytest.raises(ConfigError, match=match) as err:
            build_perceptual(MetricConfig(perceptual="auto", vgg_weights=str(path)), "cpu", download=False)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_corrupt_file_in_hub_cache_is_an_error_not_a_fallback(empty_torch_home: Path) -> None:
    assert P.VGG16_FILE == "vgg16-397923af.pth" and P._VGG16_SHA256_PREFIX == "397923af"
    hub = P.hub_vgg16_path()
    hub.parent.mkdir(parents=True)
    hub.write_bytes(b"\x80\x02truncated")
    with pytest.raises(ConfigError, match="cannot be read"):
        build_perceptual(MetricConfig(perceptual="auto"), "cpu", download=False)


# ----------------------------------------------------------------------------- missing weights


def test_auto_without_weights_falls_back_to_ssim_with_one_notice(
    empty_torch_home: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        metric = build_perceptual(MetricConfig(perceptual="auto"), "cpu", download=False)
    assert isinstance(metric, SSIMDistance) and metric.name == "ssim"
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "\n" not in msg
    assert str(P.hub_vgg16_path()) in msg and "metric.vgg_weights" in msg and P.VGG16_FILE in msg
    _assert_frozen(metric)


def test_failed_download_falls_back(
    empty_torch_home: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(*args: object, **kwargs: object) -> None:
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(P.urllib.request, "urlopen", offline)
    with caplog.at_level(logging.INFO, logger=LOGGER):
        metric = build_perceptual(MetricConfig(perceptual="auto"), "cpu", download=True)
    assert metric.name == "ssim"
    # one line in all: no "downloading ..." announced for a download that never started
    assert len(caplog.records) == 1 and "no network here" in caplog.records[0].getMessage()
    assert list(P.hub_vgg16_path().parent.iterdir()) == []  # no partial file left behind


def test_download_is_atomic_and_checks_the_hash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import hashlib

    src = tmp_path / "src.bin"
    src.write_bytes(b"weights" * 1000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    dst = tmp_path / "hub" / "checkpoints" / "w.pth"
    with pytest.raises(ValueError, match="checksum"):
        P._download(src.as_uri(), dst, "00000000" if not digest.startswith("0") else "ffffffff")
    assert not dst.exists() and list(dst.parent.iterdir()) == []
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        P._download(src.as_uri(), dst, digest[:8])
    assert dst.read_bytes() == src.read_bytes()
    assert [r.getMessage() for r in caplog.records] == [f"downloading {src.as_uri()} to {dst}"]


def test_explicit_lpips_without_weights_is_an_error(empty_torch_home: Path) -> None:
    with pytest.raises(ConfigError, match="VGG16 weights were not found") as err:
        build_perceptual(MetricConfig(perceptual="lpips-vgg"), "cpu", download=False)
    assert "\n" not in str(err.value)


def test_missing_explicit_path_and_unknown_backend_are_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="metric.vgg_weights"):
        build_perceptual(
            MetricConfig(perceptual="auto", vgg_weights=str(tmp_path / "nope.pth")), download=False
        )
    with pytest.raises(ConfigError, match="metric.perceptual"):
        build_perceptual(MetricConfig(perceptual="lpips-alex"), download=False)


# ----------------------------------------------------------------------------- SSIM fallback


def test_ssim_fallback_properties() -> None:
    metric = build_perceptual(MetricConfig(perceptual="ssim"), "cpu")
    assert metric.name == "ssim"
    _assert_frozen(metric)
    x, _ = _images(2, 40)
    torch.testing.assert_close(metric(x, x), torch.zeros(2), atol=1e-6, rtol=0)
    g = torch.Generator().manual_seed(5)
    noise = torch.randn(x.shape, generator=g)
    d = [metric(x, (x + s * noise).clamp(0, 1)) for s in (0.01, 0.05, 0.1, 0.3)]
    for a, b in zip(d, d[1:]):
        assert (a < b).all()
    # value: 1 - mean of skimage's full SSIM map (borders included)
    y = (x + 0.1 * noise).clamp(0, 1)
    for b in range(2):
        _, full = structural_similarity(
            x[b].permute(1, 2, 0).double().numpy(), y[b].permute(1, 2, 0).double().numpy(),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
            channel_axis=2, full=True,
        )  # fmt: skip
        assert float(metric(x, y)[b]) == pytest.approx(1 - full.mean(), abs=1e-4)
    xg = x.clone().requires_grad_(True)
    metric(xg, y).sum().backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0


# ----------------------------------------------------------------------------- Eq. 1 and λ


def test_reconstruction_loss_matches_hand_computation() -> None:
    x, x_hat = _images(3, 24, seed=7)
    metric = SSIMDistance()
    a, b = x.double().numpy(), x_hat.double().numpy()
    mse = np.mean((a - b) ** 2)
    lp = []
    for i in range(3):
        _, full = structural_similarity(
            a[i].transpose(1, 2, 0), b[i].transpose(1, 2, 0),
            gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0,
            channel_axis=2, full=True,
        )  # fmt: skip
        lp.append(1 - full.mean())
    for lam in (0.0, 0.25, 0.9, 1.0):
        want = lam * np.mean(lp) + (1 - lam) * mse
        got = reconstruction_loss(x_hat, x, metric, lam)
        assert got.ndim == 0
        assert float(got) == pytest.approx(want, abs=1e-5)


def test_reconstruction_loss_at_lambda_zero_skips_the_metric() -> None:
    class Exploding(PerceptualMetric):
        name = "exploding"

        def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            raise AssertionError("metric evaluated at λ = 0")

    x, x_hat = _images(2, 16)
    torch.testing.assert_close(reconstruction_loss(x_hat, x, Exploding(), 0.0), ((x_hat - x) ** 2).mean())


@pytest.mark.parametrize("rate", [5.0, 1.0, -3.0, 0.0])
def test_lambda_schedule_endpoints_and_shape(rate: float) -> None:
    steps, lmax = 200, 0.9
    values = [lambda_schedule(s, steps, lmax, rate) for s in range(steps + 1)]
    assert values[0] == 0.0
    assert values[-1] == pytest.approx(lmax, abs=1e-12)
    assert all(b >= a for a, b in zip(values, values[1:]))
    assert lambda_schedule(-5, steps, lmax, rate) == 0.0
    assert lambda_schedule(steps + 50, steps, lmax, rate) == pytest.approx(lmax, abs=1e-12)
    half = lambda_schedule(steps // 2, steps, lmax, rate)
    if rate == 0:
        assert half == pytest.approx(lmax / 2)
    else:
        assert half == pytest.approx(lmax * (1 - math.exp(-rate / 2)) / (1 - math.exp(-rate)), rel=1e-12)
        assert (half > lmax / 2) == (rate > 0)


def test_lambda_schedule_rejects_zero_steps() -> None:
    with pytest.raises(ValueError, match="steps"):
        lambda_schedule(0, 0, 0.9, 5.0)


def test_fallback_notice_and_download_attempt_happen_once_per_process(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    calls = []

    def offline(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise urllib.error.URLError("no network here")

    monkeypatch.setattr(P.urllib.request, "urlopen", offline)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(3):
            assert build_perceptual(MetricConfig(perceptual="auto"), "cpu", download=True).name == "ssim"
    assert len(calls) == 1
    assert len([r for r in caplog.records if r.levelno >= logging.WARNING]) == 1
