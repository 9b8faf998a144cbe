"""Tests of the ``tmn`` head: shapes, size, padding invariance, PeakL, the loss and a learning check."""
from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

from sercache.heads import HEADS, Batch, StreamBatch
from sercache.heads.tmn import TensorMixerHead, focal_loss, masked_mse, peak_labels

D_AUDIO, D_TEXT, N_CLASSES = 12, 10, 4
TINY = {"fusion_dim": 32, "patch_size": 8, "mixer_dim": 32, "depth": 2}


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors gain nothing from intra-op threads, and on a busy CPU they cost seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_head(**kwargs: object) -> TensorMixerHead:
    torch.manual_seed(0)
    return HEADS["tmn"](dims={"audio": D_AUDIO, "text": D_TEXT}, n_classes=N_CLASSES, **{**TINY, **kwargs})


def make_batch(audio: list[torch.Tensor], text: list[torch.Tensor], y: torch.Tensor,
               soft: torch.Tensor | None = None, va: torch.Tensor | None = None) -> Batch:
    """Pad per-utterance ``(frames, dim)`` tensors with random values (padding must not matter)."""
    def pad(items: list[torch.Tensor]) -> StreamBatch:
        longest = max(len(t) for t in items)
        x = torch.randn(len(items), longest, items[0].shape[-1])
        mask = torch.zeros(len(items), longest, dtype=torch.bool)
        for i, t in enumerate(items):
            x[i, :len(t)], mask[i, :len(t)] = t, True
        return StreamBatch(x, mask)

    return Batch({"audio": pad(audio), "text": pad(text)}, y, soft=soft, va=va)


def random_batch(batch: int = 5) -> Batch:
    gen = torch.Generator().manual_seed(1)
    audio = [torch.randn(int(n), D_AUDIO, generator=gen) for n in torch.randint(3, 20, (batch,), generator=gen)]
    text = [torch.randn(int(n), D_TEXT, generator=gen) for n in torch.randint(2, 9, (batch,), generator=gen)]
    y = torch.randint(0, N_CLASSES, (batch,), generator=gen)
    return make_batch(audio, text, y, soft=torch.rand(batch, N_CLASSES, generator=gen).softmax(-1),
                      va=torch.rand(batch, 2, generator=gen))


def test_registered_contract() -> None:
    cls = HEADS["tmn"]
    assert cls is TensorMixerHead
    assert cls.roles == ("audio", "text") and cls.needs == frozenset({"soft", "va"}) and cls.regression
    assert {"fusion_dim", "patch_size", "mixer_dim", "depth", "token_expansion", "channel_expansion", "dropout",
            "peakl", "focal_gamma", "faithful_focal", "cls_weight", "reg_weight"} <= set(cls.hyperparameters())


def test_output_shapes() -> None:
    out = tiny_head()(random_batch(5))
    assert out.logits.shape == (5, N_CLASSES)
    assert out.regression is not None and out.regression.shape == (5, 2)


def test_parameter_count_of_the_published_size() -> None:
    head = HEADS["tmn"](dims={"audio": 1024, "text": 768}, n_classes=4)
    linear = lambda n_in, n_out: n_in * n_out + n_out  # noqa: E731 - weight + bias
    layer_norm = lambda d: 2 * d                       # noqa: E731 - scale + shift
    audio_proj = linear(1024, 256)                     # 262,400
    text_proj = linear(768, 256)                       # 196,864
    patches = (256 // 16) ** 2                         # 256 patches of 16*16 = 256 values
    patch_embed = linear(16 * 16, 512)                 # 131,584
    token_mixing = linear(patches, 4 * patches) + linear(4 * patches, patches)  # 263,168 + 262,400
    channel_mixing = linear(512, 256) + linear(256, 512)                         # 131,328 + 131,584
    block = layer_norm(512) + token_mixing + layer_norm(512) + channel_mixing    # 790,528
    expected = audio_proj + text_proj + patch_embed + 12 * block + layer_norm(512) + linear(512, 4 + 2)
    assert expected == 10_081_286
    assert sum(p.numel() for p in head.parameters()) == expected


def test_patches_follow_the_original_layout() -> None:
    head = tiny_head()
    image = torch.arange(2 * 32 * 32, dtype=torch.float32).reshape(2, 32, 32)
    patches = head._patches(image)
    assert patches.shape == (2, 16, 64)
    # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)': patch h*4+w is the 8x8 block at (h, w), row-major.
    for h in range(4):
        for w in range(4):
            block = image[:, h * 8:(h + 1) * 8, w * 8:(w + 1) * 8].reshape(2, 64)
            assert torch.equal(patches[:, h * 4 + w], block)


def test_fusion_dim_must_be_a_multiple_of_patch_size() -> None:
    with pytest.raises(ValueError, match="fusion_dim=30"):
        tiny_head(fusion_dim=30)


def test_padding_does_not_change_an_utterance() -> None:
    head = tiny_head().eval()
    gen = torch.Generator().manual_seed(2)
    audio = torch.randn(4, D_AUDIO, generator=gen)
    text = torch.randn(3, D_TEXT, generator=gen)
    y = torch.tensor([1])
    alone = head(make_batch([audio], [text], y))
    others_audio = [torch.randn(17, D_AUDIO, generator=gen), torch.randn(9, D_AUDIO, generator=gen)]
    others_text = [torch.randn(8, D_TEXT, generator=gen), torch.randn(5, D_TEXT, generator=gen)]
    padded = head(make_batch([others_audio[0], audio, others_audio[1]], [others_text[0], text, others_text[1]],
                             torch.tensor([0, 1, 2])))
    torch.testing.assert_close(padded.logits[1:2], alone.logits, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.regression[1:2], alone.regression, atol=1e-5, rtol=0)


def _peak_by_hand(y: list[float]) -> list[float]:
    k = len(y)
    r = math.tanh(-sum(v * math.log(v) for v in y if v > 0))
    peaked = [max(0.0, (v - r / k) / (1 - r)) for v in y]
    lowest = min(peaked)
    shifted = [v - lowest for v in peaked]
    return [v / sum(shifted) for v in shifted]


def test_peak_labels_hand_computed() -> None:
    # Row 1: entropy 0.89795 nats, r = tanh(0.89795) = 0.71530, r/K = 0.23843;
    # (y - r/K)/(1 - r) = (1.26998, 0.21625, -0.48623) -> ReLU -> (1.26998, 0.21625, 0) -> / 1.48623.
    # Row 2: nothing is clipped, so the rescaling cancels and the min subtraction decides:
    # (0.36, 0.33, 0.31) - 0.31 = (0.05, 0.02, 0) -> / 0.07.
    rows = [[0.6, 0.3, 0.1], [0.36, 0.33, 0.31]]
    got = peak_labels(torch.tensor(rows, dtype=torch.float64))
    expected = torch.tensor([_peak_by_hand(r) for r in rows], dtype=torch.float64)
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got, torch.tensor([[0.85450, 0.14550, 0.0], [5 / 7, 2 / 7, 0.0]],
                                                 dtype=torch.float64), atol=1e-4, rtol=0)


def test_peak_labels_edge_cases() -> None:
    one_hot = torch.eye(N_CLASSES)
    assert torch.equal(peak_labels(one_hot), one_hot)
    uniform = torch.full((2, N_CLASSES), 1 / N_CLASSES)
    torch.testing.assert_close(peak_labels(uniform), uniform)  # falls back to the votes
    # Two classes tied, the rest empty: the peaking step keeps the tie and the zeros.
    tied = torch.tensor([[0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(peak_labels(tied), tied)
    soft = torch.rand(64, N_CLASSES, generator=torch.Generator().manual_seed(3)).softmax(-1)
    mixed = torch.cat([soft, uniform, one_hot])
    peaked = peak_labels(mixed)
    assert not torch.isnan(peaked).any() and (peaked >= 0).all()
    torch.testing.assert_close(peaked.sum(-1), torch.ones(len(mixed)))
    # Sharper than the votes: the top class never loses mass.
    assert (peaked.amax(-1) >= mixed.amax(-1) - 1e-6).all()


def test_focal_per_sample_and_faithful_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.1, 0.3, 0.2]], dtype=torch.float64)
    targets = torch.tensor([[0.8, 0.2, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    gamma = 2.0
    per_sample, ces = [], []
    for row, target in zip(logits.tolist(), targets.tolist()):
        z = sum(math.exp(v) for v in row)
        p = [math.exp(v) / z for v in row]
        per_sample.append(sum(-t * (1 - pk) ** gamma * math.log(pk) for t, pk in zip(target, p)))
        ces.append(sum(-t * math.log(pk) for t, pk in zip(target, p)))
    ce = sum(ces) / len(ces)
    assert focal_loss(logits, targets, gamma).item() == pytest.approx(sum(per_sample) / 2, rel=1e-12)
    assert focal_loss(logits, targets, gamma, faithful=True).item() == pytest.approx(
        (1 - math.exp(-ce)) ** gamma * ce, rel=1e-12)


def test_focal_with_gamma_zero_is_cross_entropy() -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(8, N_CLASSES, generator=gen)
    y = torch.randint(0, N_CLASSES, (8,), generator=gen)
    torch.testing.assert_close(focal_loss(logits, F.one_hot(y, N_CLASSES).float(), gamma=0.0),
                               F.cross_entropy(logits, y))


def test_mse_ignores_unknown_targets() -> None:
    pred = torch.tensor([[0.2, 0.4], [0.9, 0.1], [0.5, 0.5]])
    target = torch.tensor([[0.0, float("nan")], [float("nan"), float("nan")], [1.0, 0.3]])
    expected = ((0.2 - 0.0) ** 2 + (0.5 - 1.0) ** 2 + (0.5 - 0.3) ** 2) / 3
    assert masked_mse(pred, target).item() == pytest.approx(expected)
    assert masked_mse(pred, torch.full_like(pred, float("nan"))).item() == 0.0


def test_loss_combines_focal_and_mse() -> None:
    head = tiny_head(cls_weight=0.6, reg_weight=0.4, focal_gamma=1.5)
    batch = random_batch(6)
    batch.va[0, 1] = float("nan")
    out = head(batch)
    expected = (0.6 * focal_loss(out.logits, peak_labels(batch.soft), 1.5)
                + 0.4 * masked_mse(out.regression, batch.va))
    torch.testing.assert_close(head.loss(out, batch), expected)
    # Without soft labels (or with peakl off) the targets are one-hot; without va, no MSE term.
    one_hot = F.one_hot(batch.y, N_CLASSES).float()
    batch.soft, batch.va = None, None
    torch.testing.assert_close(head.loss(out, batch), 0.6 * focal_loss(out.logits, one_hot, 1.5))
    faithful = tiny_head(faithful_focal=True)
    out = faithful(batch)
    torch.testing.assert_close(faithful.loss(out, batch), 0.7 * focal_loss(out.logits, one_hot, 2.0, faithful=True))


def test_learns_separable_synthetic_data() -> None:
    gen = torch.Generator().manual_seed(5)
    n = 32
    y = torch.arange(n) % N_CLASSES
    audio_means = torch.randn(N_CLASSES, D_AUDIO, generator=gen) * 2
    text_means = torch.randn(N_CLASSES, D_TEXT, generator=gen) * 2
    audio = [audio_means[c] + 0.3 * torch.randn(int(f), D_AUDIO, generator=gen)
             for c, f in zip(y, torch.randint(4, 15, (n,), generator=gen))]
    text = [torch.cat([text_means[c] + 0.3 * torch.randn(1, D_TEXT, generator=gen),
                       torch.randn(3, D_TEXT, generator=gen)]) for c in y]
    va = torch.stack([y / (N_CLASSES - 1), 1 - y / (N_CLASSES - 1)], 1).float()
    soft = 0.7 * F.one_hot(y, N_CLASSES).float() + 0.3 / N_CLASSES
    batch = make_batch(audio, text, y, soft=soft, va=va)
    head = tiny_head()
    optimizer = torch.optim.Adam(head.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        optimizer.zero_grad()
        loss = head.training_step(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0]
    head.eval()
    with torch.no_grad():
        assert (head(batch).logits.argmax(-1) == y).float().mean() > 0.9
