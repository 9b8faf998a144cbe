"""GLAM and its baselines (APCNN, MHCNN): exact sizes, segmenting, padding invariance, segment-level training."""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from sercache.heads import HEADS, Batch, StreamBatch
from sercache.heads.glam import segment_windows

NAMES = ("glam", "apcnn", "mhcnn")
N_MFCC, SEG, HOP = 26, 57, 6


@pytest.fixture(autouse=True, scope="module")
def single_thread() -> Iterator[None]:
    """These networks see a handful of small images per call: one intra-op thread is faster, and
    avoids OpenMP threads spinning against each other when other processes hold the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_segments(length: int, seg: int = SEG, hop: int = HOP) -> int:
    return 1 if length <= seg else math.ceil((length - seg) / hop) + 1


def make_batch(lengths: list[int], dim: int = N_MFCC, labels: list[int] | None = None,
               pad_value: float = 0.0, seed: int = 0) -> Batch:
    """Right-padded frames; padding positions hold ``pad_value`` so masking is what protects them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.full((len(lengths), max(lengths), dim), pad_value)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, dim, generator=g)
        mask[i, :n] = True
    y = torch.tensor(labels if labels is not None else [i % 4 for i in range(len(lengths))])
    return Batch(streams={"mfcc": StreamBatch(x, mask)}, y=y)


def build(name: str, dim: int = N_MFCC, n_classes: int = 4, **kw) -> torch.nn.Module:
    """A head on the reference GLAM window (57 frames every 6) unless told otherwise."""
    torch.manual_seed(0)
    kw = {"segment_frames": SEG, "hop_frames": HOP, **kw}
    return HEADS[name]({"mfcc": dim}, n_classes, **kw)


def test_registered_with_each_reference_recipe() -> None:
    """Windows in seconds -> frames of the MFCC stream; each head's own reference training recipe."""
    expected = {  # (segment frames, hop frames, mixup), training defaults that differ from GLAM's
        "glam": ((57, 6.25, 0.5), {"optimizer": "adam", "lr": 1e-3, "weight_decay": 1e-6, "batch_size": 32,
                                   "schedule": "exponential", "gamma": 0.95, "min_lr": 1e-6, "normalize": False}),
        "mhcnn": ((63, 31.25, 0.0), {"optimizer": "adam", "lr": 1e-3, "batch_size": 32, "schedule": "step",
                                     "step_size": 10, "gamma": 0.1}),
        "apcnn": ((63, 31.25, 0.0), {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                                     "weight_decay": 1e-4, "batch_size": 128, "schedule": "none"}),
    }
    for name, (window, recipe) in expected.items():
        cls = HEADS[name]
        assert cls.roles == ("mfcc",) and cls.batch_unit == "segment"
        model = cls({"mfcc": N_MFCC}, 4)   # frame_rate defaults to the MFCC stream's 31.25/s
        assert (model.segment_frames, model.hop_frames, model.mixup_alpha) == window
        defaults = cls.resolved_train_defaults()
        assert {k: defaults[k] for k in recipe} == recipe
        assert defaults["epochs"] == defaults["patience"] == 50 and defaults["grad_clip"] == 0.0
    # at another stream's rate (a 100/s spectrogram) the seconds hold: 2 s windows every 1 s
    apcnn = HEADS["apcnn"]({"mfcc": 161}, 4, frame_rate=100.0)
    assert (apcnn.segment_frames, apcnn.hop_frames) == (201, 100.0)


def test_fractional_hop_keeps_the_mean_hop_exact() -> None:
    starts, utt = segment_windows(torch.tensor([57 + 100]), 57, 6.25)
    s = starts.tolist()
    assert s[0] == 0 and s[-1] == 100 and len(s) == 17
    assert s[:5] == [0, 6, 13, 19, 25] and set(b - a for a, b in zip(s, s[1:])) <= {6, 7}


@pytest.mark.parametrize("name,count", [("glam", 904_078), ("apcnn", 93_573), ("mhcnn", 155_636)])
def test_parameter_counts_match_reference(name: str, count: int) -> None:
    model = build(name)
    assert sum(p.numel() for p in model.parameters()) == count


def test_glam_reference_shapes() -> None:
    model = build("glam")
    assert model.net.gmlp.proj_in[0].weight.shape == (728, 182)
    assert model.net.gmlp.sgu.norm.normalized_shape == (364,)
    assert model.net.fc.weight.shape == (4, 23_296)
    assert torch.all(model.net.gmlp.sgu.proj.bias == 1)
    assert model.net.gmlp.sgu.proj.weight.abs().max() <= 1e-3 / 128


def test_segment_windows_cover_every_frame() -> None:
    lengths = [0, 1, 30, 57, 58, 63, 64, 100, 301]
    starts, utt = segment_windows(torch.tensor(lengths), SEG, HOP)
    assert torch.bincount(utt, minlength=len(lengths)).tolist() == [n_segments(n) for n in lengths]
    for i, n in enumerate(lengths):
        s = starts[utt == i].tolist()
        if n <= SEG:
            assert s == [0]
            continue
        assert s[0] == 0 and s[-1] == n - SEG                      # last window ends at the last frame
        assert all(0 < b - a <= HOP for a, b in zip(s, s[1:]))     # hop spacing, last one possibly closer
        assert all(b - a == HOP for a, b in zip(s[:-2], s[1:-1]))


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_segment_index(name: str) -> None:
    lengths = [30, 57, 100, 64]   # shorter than, exactly, and longer than one segment
    batch = make_batch(lengths)
    model = build(name).eval()
    segs, utt = model.segments(batch.streams["mfcc"])
    assert segs.shape == (sum(n_segments(n) for n in lengths), 1, N_MFCC, SEG)
    assert torch.bincount(utt, minlength=4).tolist() == [n_segments(n) for n in lengths]
    x = batch.streams["mfcc"].x
    # Feature axis = height, time = width; the short utterance is zero-padded after its frames.
    assert torch.equal(segs[0, 0, :, :30], x[0, :30].T) and not segs[0, 0, :, 30:].any()
    assert torch.equal(segs[1, 0], x[1, :57].T)
    last_of_third = int((utt == 2).nonzero()[-1])
    assert torch.equal(segs[last_of_third, 0], x[2, 100 - SEG:100].T)
    with torch.no_grad():
        out = model(batch)
    assert out.logits.shape == (4, 4) and torch.isfinite(out.logits).all()


@pytest.mark.parametrize("name", NAMES)
def test_padding_never_changes_an_utterance(name: str) -> None:
    model = build(name).eval()
    short, long = make_batch([20], seed=1), make_batch([75], seed=2)
    both = make_batch([20, 75], pad_value=float("nan"))
    both.streams["mfcc"].x[0, :20] = short.streams["mfcc"].x[0]
    both.streams["mfcc"].x[1] = long.streams["mfcc"].x[0]
    with torch.no_grad():
        alone = torch.cat([model(short).logits, model(long).logits])
        together = model(both).logits
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", NAMES)
def test_input_proj_runs_on_ssl_frames(name: str) -> None:
    model = build(name, dim=1024, n_classes=5, input_proj=32).eval()
    batch = make_batch([20, 90], dim=1024)
    segs, _ = model.segments(batch.streams["mfcc"])
    assert segs.shape == (1 + n_segments(90), 1, 32, SEG)
    with torch.no_grad():
        assert model(batch).logits.shape == (2, 5)


def test_other_input_sizes() -> None:
    model = build("glam", dim=40, n_classes=3, segment_frames=63, hop_frames=10).eval()
    assert model.net.fc.in_features == 128 * (80 // 4) * (63 // 4)
    with torch.no_grad():
        assert model(make_batch([50, 200], dim=40)).logits.shape == (2, 3)


@pytest.mark.parametrize("name", NAMES)
def test_training_step_reaches_every_parameter(name: str) -> None:
    model = build(name).train()
    torch.manual_seed(1)
    loss = model.training_step(make_batch([40, 70], labels=[0, 3]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


def test_training_step_without_mixup_is_mean_segment_cross_entropy() -> None:
    model = build("glam", mixup_alpha=0.0).train()
    lengths, labels = [30, 57, 70], [2, 0, 1]
    batch = make_batch(lengths, labels=labels)
    x = batch.streams["mfcc"].x
    segs, targets = [], []
    for i, n in enumerate(lengths):   # windows cut by hand, in the head's order
        starts = [0] if n <= SEG else [min(k * HOP, n - SEG) for k in range(n_segments(n))]
        for s in starts:
            seg = torch.zeros(SEG, N_MFCC)
            seg[: min(SEG, n - s)] = x[i, s:min(s + SEG, n)]
            segs.append(seg.T[None])
            targets.append(labels[i])
    by_hand = F.cross_entropy(model.net(torch.stack(segs)), torch.tensor(targets))
    torch.testing.assert_close(model.training_step(batch), by_hand, atol=1e-5, rtol=1e-5)


def test_mixup_mixes_segments_and_labels_with_the_global_rng() -> None:
    model = build("apcnn").eval()   # eval: BatchNorm is fixed, so only the mixing varies
    batch = make_batch([60, 80, 100], labels=[0, 1, 2])
    segs, utt = model.segments(batch.streams["mfcc"])
    torch.manual_seed(5)
    lam = torch.distributions.Beta(torch.tensor(0.5), torch.tensor(0.5)).sample()
    perm = torch.randperm(len(segs))
    target = F.one_hot(batch.y[utt], 4).float()
    by_hand = F.cross_entropy(model.net(lam * segs + (1 - lam) * segs[perm]),
                              lam * target + (1 - lam) * target[perm])
    torch.manual_seed(5)
    torch.testing.assert_close(model.training_step(batch), by_hand)


def offset_batch(n: int, dim: int, seed: int) -> Batch:
    """MFCC-like frames of 8-23 frames; class 1 sits +1 higher in the first four coefficients."""
    g = torch.Generator().manual_seed(seed)
    lengths = [int(k) for k in torch.randint(8, 24, (n,), generator=g)]
    labels = [i % 2 for i in range(n)]
    batch = make_batch(lengths, dim=dim, labels=labels, seed=seed)
    stream = batch.streams["mfcc"]
    stream.x[batch.y.bool(), :, :4] += 1.0
    stream.x *= stream.mask[..., None]
    return batch


def test_glam_learns_a_constant_offset() -> None:
    """A couple of dozen Adam steps fit the offset and carry over to unseen utterances."""
    dim = 12
    train, held_out = offset_batch(12, dim, seed=0), offset_batch(12, dim, seed=1)
    model = build("glam", dim=dim, n_classes=2, segment_frames=16, hop_frames=8, mixup_alpha=0.0).train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(20):
        loss = model.training_step(train)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with torch.no_grad():
        assert (model.eval()(held_out).logits.argmax(-1) == held_out.y).float().mean() >= 0.9
