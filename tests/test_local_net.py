"""Γ (rovr.models.local.LocalNet): shapes, exact compositing, gradients, a tiny overfit."""

from __future__ import annotations

import pytest
import torch

from rovr.models.local import MIN_GAIN, SHIFT_PENALTY, LocalNet, LocalNetConfig, estimate_shifts, shift_frames

SMALL = LocalNetConfig(base_channels=8, depth=3)


def _inputs(B: int, k: int, H: int, W: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, 3, H, W, generator=g)
    mask = (torch.rand(B, 1, H, W, generator=g) < 0.3).float()
    cond = torch.rand(B, k, 3, H, W, generator=g)
    cond_masks = (torch.rand(B, k, 1, H, W, generator=g) < 0.3).float()
    return target, mask, cond, cond_masks


@pytest.mark.parametrize(("k", "H", "W"), [(1, 45, 61), (2, 64, 64), (3, 17, 9), (2, 3, 5)])
def test_shape_range_and_known_pixels_kept_exactly(k: int, H: int, W: int) -> None:
    torch.manual_seed(0)
    net = LocalNet(SMALL, k)
    target, mask, cond, cond_masks = _inputs(2, k, H, W)
    with torch.no_grad():
        out = net(target, mask, cond, cond_masks)
    assert out.shape == (2, 3, H, W)
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    known = (mask == 0).expand_as(out)
    assert torch.equal(out[known], target[known])
    # the holes are filled with the prediction, not the corrupted content
    assert not torch.equal(out[~known], target[~known])


def test_bool_masks_equal_float_masks() -> None:
    torch.manual_seed(0)
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(2, 2, 32, 40)
    a = net(target, mask, cond, cond_masks)
    b = net(target, mask.bool(), cond, cond_masks.bool())
    assert torch.equal(a, b)


def test_hole_contents_do_not_matter() -> None:
    """Whatever the holes of the target and of the conditioning frames hold, x̂ is the same."""
    torch.manual_seed(0)
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(2, 2, 24, 24)
    junk_t = torch.where(mask.bool(), torch.rand_like(target), target)
    junk_c = torch.where(cond_masks.bool(), torch.rand_like(cond), cond)
    assert torch.equal(net(target, mask, cond, cond_masks), net(junk_t, mask, junk_c, cond_masks))
    # but the visible content of a conditioning frame does matter
    other = torch.where(cond_masks.bool(), cond, torch.rand_like(cond))
    assert not torch.allclose(net(target, mask, cond, cond_masks), net(target, mask, other, cond_masks))


def test_default_config_runs_at_64() -> None:
    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(), 2)
    out = net(*_inputs(1, 2, 64, 64))
    assert out.shape == (1, 3, 64, 64)


def test_gradients_reach_every_parameter() -> None:
    torch.manual_seed(0)
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(2, 2, 40, 40)
    cond.requires_grad_(True)
    gt = torch.rand_like(target)
    loss = ((net(target, mask, cond, cond_masks) - gt) ** 2).mean()
    loss.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert float(p.grad.abs().sum()) > 0, name
    assert cond.grad is not None and float(cond.grad.abs().sum()) > 0


def test_wrong_k_or_shapes_raise() -> None:
    net = LocalNet(SMALL, 2)
    target, mask, cond, cond_masks = _inputs(1, 3, 16, 16)
    with pytest.raises(ValueError, match="k=2"):
        net(target, mask, cond, cond_masks)
    with pytest.raises(ValueError, match="k >= 1"):
        LocalNet(SMALL, 0)


def test_overfits_one_batch() -> None:
    """A few dozen Adam steps on one batch lower the hole MSE a lot (the holes are copies of cond[0])."""
    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=2), 2)
    target, mask, cond, cond_masks = _inputs(4, 2, 24, 24, seed=1)
    cond_masks.zero_()
    gt = torch.where(mask.bool(), cond[:, 0], target)  # the hole content is visible in cond[0]
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        loss = ((net(target, mask, cond, cond_masks) - gt) ** 2).sum() / (3 * mask.sum())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.3 * losses[0], losses[::8]


def test_repair_known_starts_as_the_papers_gamma_then_adds_its_residual() -> None:
    """``local.repair_known``: x̂ = clamp(x̄ + r_k, 0, 1) on the known pixels, the hole fill unchanged;
    with its zero-initialised head it is exactly the paper's Γ (same shared weights)."""
    torch.manual_seed(0)
    plain = LocalNet(SMALL, 2)
    repair = LocalNet(LocalNetConfig(base_channels=8, depth=3, repair_known=True), 2)
    missing, unexpected = repair.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(missing) == ["head_known.bias", "head_known.weight"] and not unexpected
    target, mask, cond, cond_masks = _inputs(2, 2, 24, 20)
    with torch.no_grad():
        ref = plain(target, mask, cond, cond_masks)
        assert torch.equal(repair(target, mask, cond, cond_masks), ref)
        assert repair.head_known is not None and repair.head_known.bias is not None
        repair.head_known.bias.copy_(torch.tensor([0.3, -0.2, 0.0]))  # r_k constant per channel
        out = repair(target, mask, cond, cond_masks)
    known = (mask == 0).expand_as(out)
    expect = (target + torch.tensor([0.3, -0.2, 0.0])[None, :, None, None]).clamp(0, 1)
    assert torch.allclose(out[known], expect[known], atol=1e-6)
    assert torch.equal(out[~known], ref[~known])


def test_repair_known_learns_to_undo_a_brightness_shift() -> None:
    """A darkened target (x̄ = x − 0.2 everywhere): the known-pixel error of the paper's Γ cannot
    move; with repair_known a few dozen Adam steps take most of it away."""
    target, mask, cond, cond_masks = _inputs(4, 2, 24, 24, seed=2)
    gt = target.clone()
    dark, cond_dark = (target - 0.2).clamp(0, 1), (cond - 0.2).clamp(0, 1)
    known = (mask == 0).expand_as(target)
    errors = {}
    for repair in (False, True):
        torch.manual_seed(0)
        net = LocalNet(LocalNetConfig(base_channels=8, depth=2, repair_known=repair), 2)
        opt = torch.optim.Adam(net.parameters(), lr=3e-3)
        curve = []
        for _ in range(40):
            out = net(dark, mask, cond_dark, cond_masks)
            loss = ((out - gt) ** 2).mean()
            curve.append(float(((out - gt) ** 2)[known].mean().detach()))
            opt.zero_grad()
            loss.backward()
            opt.step()
        errors[repair] = curve
    assert errors[False][-1] == pytest.approx(errors[False][0])  # known pixels kept exactly
    assert errors[True][-1] < 0.3 * errors[True][0], errors[True][::8]


def test_untrained_net_copies_what_the_conditioning_frames_show() -> None:
    """The copy prior: a fresh Γ fills a hole pixel with the mean of the frames that observe it."""
    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=2, align=False), k=2).eval()
    h = w = 16
    target = torch.rand(1, 3, h, w)
    tmask = torch.zeros(1, 1, h, w)
    tmask[..., 4:12, 4:12] = 1
    cond = torch.rand(1, 2, 3, h, w)
    cmask = torch.zeros(1, 2, 1, h, w)
    cmask[:, 0, :, 4:8] = 1  # frame 0 hides rows 4-7: only frame 1 shows them
    with torch.no_grad():
        out = net(target, tmask, cond, cmask)
    both = (cond[0, 0] + cond[0, 1]) / 2
    assert torch.allclose(out[0, :, 8:12, 4:12], both[:, 8:12, 4:12], atol=0.05)
    assert torch.allclose(out[0, :, 4:8, 4:12], cond[0, 1, :, 4:8, 4:12], atol=0.05)
    assert torch.equal(out[..., :4, :], target[..., :4, :])


# ----------------------------------------------------------------------------- alignment


def _scene(seed: int, side: int, margin: int) -> torch.Tensor:
    """A smooth random texture (1, 3, side + 2 margin, side + 2 margin) to crop shifted views from."""
    g = torch.Generator().manual_seed(seed)
    img = torch.rand(1, 3, side + 2 * margin, side + 2 * margin, generator=g)
    return torch.nn.functional.avg_pool2d(img, 3, 1, 1)


def _view(scene: torch.Tensor, side: int, r: int, dy: int, dx: int) -> torch.Tensor:
    """The side x side view of ``scene`` whose camera sits (dy, dx) from the centred one."""
    return scene[..., r + dy : r + dy + side, r + dx : r + dx + side]


def _brute_force_shift(
    x: torch.Tensor, m: torch.Tensor, c: torch.Tensor, n: torch.Tensor, r: int, min_overlap: float
) -> tuple[int, int]:
    """Direct evaluation of the alignment cost E(s) for every shift (the docstring's formula)."""
    H, W = x.shape[-2:]
    xg, cg = x.mean(0), c.mean(0)
    w, v = 1 - m[0], 1 - n[0]
    best, arg, zero = float("inf"), (0, 0), float("inf")
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            num = den = 0.0
            for y in range(max(0, -dy), min(H, H - dy)):
                for x_ in range(max(0, -dx), min(W, W - dx)):
                    ww = float(w[y, x_] * v[y + dy, x_ + dx])
                    num += ww * float(xg[y, x_] - cg[y + dy, x_ + dx]) ** 2
                    den += ww
            if den < min_overlap * H * W:
                continue
            cost = num / max(den, 1.0) + SHIFT_PENALTY * (dy * dy + dx * dx)
            if (dy, dx) == (0, 0):
                zero = cost
            if cost < best - 1e-9:
                best, arg = cost, (dy, dx)
    return arg if best < (1 - MIN_GAIN) * zero else (0, 0)


def test_estimated_shift_is_the_brute_force_minimum_of_the_masked_cost() -> None:
    g = torch.Generator().manual_seed(3)
    found = 0
    for trial in range(6):
        H, W = 9, 11
        x = torch.rand(3, H, W, generator=g)
        shift = torch.randint(-2, 3, (2,), generator=g).tolist()
        noise = 0.3 * trial / 5  # from a clean moved copy to one that hardly pins the motion down
        c = torch.roll(x, shift, dims=(1, 2)) + noise * torch.rand(3, H, W, generator=g)
        m = (torch.rand(1, H, W, generator=g) < 0.3).float()
        n = (torch.rand(1, H, W, generator=g) < 0.3).float()
        got = tuple(
            estimate_shifts(x[None], m[None], c[None, None], n[None, None], max_shift=3)[0, 0].tolist()
        )
        assert got == _brute_force_shift(x, m, c, n, 3, 0.25), trial
        found += got != (0, 0)
    assert found >= 2  # the comparison is not only between two "no shift" answers


def test_batched_shifts_up_to_the_search_radius_match_the_brute_force_minimum() -> None:
    """B = 2 targets × k = 3 frames on a non-square frame, true moves up to ±max_shift: the FFTs are
    padded only to H + max_shift, so a wrap-around would show first at the edge of the search."""
    g = torch.Generator().manual_seed(5)
    B, k, H, W, r = 2, 3, 10, 13, 4
    x = torch.rand(B, 3, H, W, generator=g)
    m = (torch.rand(B, 1, H, W, generator=g) < 0.2).float()
    moves = [[(r, -r), (-r, 2), (0, r)], [(-3, -r), (r, r), (1, -1)]]
    c = torch.stack(
        [torch.stack([torch.roll(x[b], mv, dims=(1, 2)) for mv in moves[b]]) for b in range(B)]
    ) + 0.02 * torch.rand(B, k, 3, H, W, generator=g)
    n = (torch.rand(B, k, 1, H, W, generator=g) < 0.2).float()
    got = estimate_shifts(x, m, c, n, max_shift=r)
    want = [
        [list(_brute_force_shift(x[b], m[b], c[b, j], n[b, j], r, 0.25)) for j in range(k)] for b in range(B)
    ]
    assert got.tolist() == want
    assert sum(s != [0, 0] for row in want for s in row) >= 4  # not only "no shift" answers


def test_fft_len_is_the_next_5_smooth_length() -> None:
    from rovr.models.local import _fft_len

    assert [_fft_len(n) for n in (1, 7, 11, 13, 72, 73, 97)] == [1, 8, 12, 15, 72, 75, 100]


def test_pure_noise_is_not_shifted() -> None:
    g = torch.Generator().manual_seed(4)
    x, c = torch.rand(4, 3, 32, 32, generator=g), torch.rand(4, 1, 3, 32, 32, generator=g)
    zeros = torch.zeros(4, 1, 32, 32)
    assert not estimate_shifts(x, zeros, c, zeros[:, None], max_shift=4).any()


def test_known_translations_are_recovered_despite_holes() -> None:
    side, r = 48, 6
    scene = _scene(0, side, r)
    target = _view(scene, side, r, 0, 0)
    moves = [(0, 0), (3, -2), (-6, 5), (6, 6)]  # where each view's camera sits relative to the target's
    cond = torch.stack([_view(scene, side, r, dy, dx) for dy, dx in moves], dim=1)
    tmask = torch.zeros(1, 1, side, side)
    tmask[..., 5:20, 8:30] = 1
    cmask = torch.zeros(1, len(moves), 1, side, side)
    cmask[..., 25:40, 10:35] = 1
    got = estimate_shifts(target, tmask, cond, cmask, max_shift=r)
    assert got[0].tolist() == [[-dy, -dx] for dy, dx in moves]


def test_shift_frames_moves_pixels_and_marks_the_uncovered_border_as_holes() -> None:
    f = torch.arange(2 * 5 * 6, dtype=torch.float32).view(1, 2, 5, 6)
    m = torch.zeros(1, 1, 5, 6)
    m[..., 1, 1] = 1
    out, om = shift_frames(f, m, torch.tensor([[1, -2]]))  # out[y, x] = f[y + 1, x - 2]
    assert torch.equal(out[..., :4, 2:], f[..., 1:, :4] * (1 - m[..., 1:, :4]))
    assert torch.equal(om[..., 4, :], torch.ones(1, 1, 6)) and torch.equal(
        om[..., :, :2], torch.ones(1, 1, 5, 2)
    )
    assert om[0, 0, 0, 3] == 1  # the hole at (1, 1) lands at (0, 3)
    assert float(om.sum()) == 5 * 6 - 4 * 4 + 1


def test_aligned_copy_prior_fills_holes_from_a_panned_frame() -> None:
    """An untrained Γ with alignment rebuilds a hole exactly from frames seen by a moving camera."""
    torch.manual_seed(0)
    side, r = 32, 4
    scene = _scene(1, side, r)
    target = _view(scene, side, r, 0, 0)
    cond = torch.stack([_view(scene, side, r, 3, -2), _view(scene, side, r, -4, 4)], dim=1)
    tmask = torch.zeros(1, 1, side, side)
    tmask[..., 10:20, 10:22] = 1
    cmask = torch.zeros(1, 2, 1, side, side)
    corrupted = target * (1 - tmask)
    aligned = LocalNet(LocalNetConfig(base_channels=8, depth=2, max_shift=0.2), k=2).eval()
    plain = LocalNet(LocalNetConfig(base_channels=8, depth=2, align=False), k=2).eval()
    plain.load_state_dict(aligned.state_dict())
    with torch.no_grad():
        err_aligned = (aligned(corrupted, tmask, cond, cmask) - target).abs().max()
        err_plain = (plain(corrupted, tmask, cond, cmask) - target).abs().max()
    assert float(err_aligned) < 0.02 < float(err_plain)


def test_precomputed_shifts_give_the_same_reconstruction() -> None:
    """Callers may estimate each frame's shift once (brute force); Γ's output must not change."""
    torch.manual_seed(0)
    side, r = 32, 4
    scene = _scene(2, side, r)
    target = _view(scene, side, r, 0, 0)
    frames = torch.stack([_view(scene, side, r, d, -d) for d in (-3, 0, 2, 4)], dim=1)
    tmask = torch.zeros(1, 1, side, side)
    tmask[..., 4:12, 6:20] = 1
    fmask = (torch.rand(1, 4, 1, side, side) < 0.2).float()
    net = LocalNet(LocalNetConfig(base_channels=8, depth=2, max_shift=0.2), k=2).eval()
    all_shifts = net.shifts(target, tmask, frames, fmask)
    assert all_shifts is not None and all_shifts.shape == (1, 4, 2)
    pair = torch.tensor([0, 3])
    with torch.no_grad():
        a = net(target, tmask, frames[:, pair], fmask[:, pair])
        b = net(target, tmask, frames[:, pair], fmask[:, pair], all_shifts[:, pair])
    assert torch.equal(a, b)
    assert (
        LocalNet(LocalNetConfig(base_channels=8, depth=2, align=False), k=2).shifts(
            target, tmask, frames, fmask
        )
        is None
    )


def test_large_cpu_inference_batches_are_split_without_changing_the_output(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """No-grad CPU batches above CPU_BATCH_PIXELS run in cache-sized parts (shifts split with them);
    the output is the one-pass output, and a batch with gradients is never split."""
    import rovr.models.local as local

    torch.manual_seed(0)
    net = LocalNet(LocalNetConfig(base_channels=8, depth=2, max_shift=0.2), k=2).eval()
    target, mask, cond, cond_masks = _inputs(5, 2, 16, 16, seed=3)
    shifts = torch.randint(-3, 4, (5, 2, 2))
    with torch.no_grad():
        whole = net(target, mask, cond, cond_masks, shifts)
        one_by_one = torch.cat(
            [
                net(
                    target[i : i + 1],
                    mask[i : i + 1],
                    cond[i : i + 1],
                    cond_masks[i : i + 1],
                    shifts[i : i + 1],
                )
                for i in range(5)
            ]
        )
    calls: list[int] = []
    net.stem.register_forward_hook(lambda m, inp, out: calls.append(inp[0].shape[0]))
    monkeypatch.setattr(local, "CPU_BATCH_PIXELS", 2 * 16 * 16)  # two frames a pass
    with torch.no_grad():
        split = net(target, mask, cond, cond_masks, shifts)
    assert calls == [2, 2, 1]
    torch.testing.assert_close(split, whole, atol=1e-6, rtol=0)
    torch.testing.assert_close(split, one_by_one, atol=1e-6, rtol=0)
    calls.clear()
    net(target, mask, cond, cond_masks, shifts).sum().backward()  # training: one pass
    assert calls == [5]
