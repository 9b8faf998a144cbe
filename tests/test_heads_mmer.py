"""The MMER head: shapes, parameter count, padding invariance, auxiliary losses, learning."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sercache.heads import HEADS, Batch, StreamBatch
from sercache.heads.base import CHAR_VOCAB
from sercache.heads.mmer import BertBlock, MMERHead, supervised_contrastive_loss

SMALL = {"hidden": 32, "heads": 4, "ffn_dim": 64}
D_AUDIO, D_TEXT = 24, 20


def make_head(n_classes: int = 4, **kwargs: float) -> MMERHead:
    torch.manual_seed(0)
    return MMERHead({"audio": D_AUDIO, "text": D_TEXT}, n_classes, **{**SMALL, **kwargs})


def stream(lengths: list[int], dim: int, generator: torch.Generator) -> StreamBatch:
    """Random frames, padded with large values so leaked padding would show."""
    x = torch.full((len(lengths), max(lengths), dim), 50.0)
    mask = torch.zeros(len(lengths), max(lengths), dtype=torch.bool)
    for i, n in enumerate(lengths):
        x[i, :n] = torch.randn(n, dim, generator=generator)
        mask[i, :n] = True
    return StreamBatch(x, mask)


def make_batch(audio_lengths: list[int], text_lengths: list[int], labels: list[int],
               char_lengths: list[int] | None = None, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    chars = lengths = None
    if char_lengths is not None:
        chars = torch.zeros(len(char_lengths), max(char_lengths), dtype=torch.long)
        for i, n in enumerate(char_lengths):
            chars[i, :n] = torch.randint(1, len(CHAR_VOCAB), (n,), generator=g)
        lengths = torch.tensor(char_lengths)
    return Batch({"audio": stream(audio_lengths, D_AUDIO, g), "text": stream(text_lengths, D_TEXT, g)},
                 torch.tensor(labels), chars=chars, char_lengths=lengths)


def test_registered_with_contract() -> None:
    assert HEADS["mmer"] is MMERHead
    assert MMERHead.roles == ("audio", "text") and MMERHead.needs == frozenset({"chars"})
    assert MMERHead.hyperparameters() == {"hidden": 768, "heads": 12, "ffn_dim": 3072, "dropout": 0.1,
                                          "ctc_weight": 0.1, "supcon_weight": 0.1, "infonce_weight": 0.1,
                                          "temperature": 0.07, "augmented_text": False}
    defaults = MMERHead.resolved_train_defaults()
    assert (defaults["optimizer"], defaults["lr"], defaults["batch_size"]) == ("adamw", 5e-5, 16)


def test_output_shapes() -> None:
    head = make_head(n_classes=5)
    batch = make_batch([30, 12, 7], [6, 9, 3], [0, 1, 1], char_lengths=[5, 4, 2])
    out = head.train()(batch)
    assert out.logits.shape == (3, 5) and out.aux_loss is not None and out.aux_loss.shape == ()
    out = head.eval()(batch)
    assert out.logits.shape == (3, 5) and out.aux_loss is None and out.regression is None


def test_parameter_count_default_configuration() -> None:
    h, ffn, d_audio, n_classes, vocab = 768, 3072, 768, 4, len(CHAR_VOCAB)
    attention = (3 * h * h + 3 * h) + (h * h + h)    # MultiheadAttention in_proj (q, k, v) + out_proj
    feed_forward = (h * ffn + ffn) + (ffn * h + h)   # Linear(h->ffn), Linear(ffn->h)
    layer_norms = 2 * (2 * h)                        # after attention and after the FFN
    block = attention + feed_forward + layer_norms   # 7,087,872
    expected = (
        4 * block                                    # text self-attention + 3 cross-attention blocks
        + 2 * (d_audio * h + h)                      # A1, A2 projections (no text projection: d_text == h)
        + (2 * h * h + h)                            # gate Linear(2h->h)
        + (2 * h * h + h)                            # downsample of pooled fused Linear(2h->h)
        + ((d_audio + h) * n_classes + n_classes)    # classifier Linear(2h->4)
        + (h * vocab + vocab)                        # CTC Linear(h->29)
    )
    assert expected == 31_921_953
    head = MMERHead({"audio": 768, "text": 768}, n_classes)
    assert sum(p.numel() for p in head.parameters()) == expected


def test_text_projection_when_text_width_differs() -> None:
    head = MMERHead({"audio": 768, "text": 1024}, 4, **SMALL)
    assert isinstance(head.text_proj, torch.nn.Linear) and head.text_proj.in_features == 1024


@pytest.mark.parametrize("item", [0, 1])
def test_padding_does_not_change_an_items_logits(item: int) -> None:
    head = make_head().eval()
    audio_lengths, text_lengths = [9, 25, 40], [4, 11, 7]  # item 0 short in both, item 1 longest text
    batch = make_batch(audio_lengths, text_lengths, [0, 1, 2])
    audio, text = batch.streams["audio"], batch.streams["text"]
    n_frames, n_tokens = audio_lengths[item], text_lengths[item]
    alone = Batch({"audio": StreamBatch(audio.x[item:item + 1, :n_frames], audio.mask[item:item + 1, :n_frames]),
                   "text": StreamBatch(text.x[item:item + 1, :n_tokens], text.mask[item:item + 1, :n_tokens])},
                  batch.y[item:item + 1])
    with torch.no_grad():
        padded_logits = head(batch).logits[item]
        alone_logits = head(alone).logits[0]
    torch.testing.assert_close(padded_logits, alone_logits, atol=1e-5, rtol=0)


def test_ctc_aux_loss_matches_direct_computation() -> None:
    head = make_head(dropout=0.0, supcon_weight=0.0).train()
    batch = make_batch([30, 18, 22], [6, 9, 3], [0, 1, 2], char_lengths=[5, 7, 2])
    out = head(batch)
    log_probs = head.ctc(head.proj_a1(batch.streams["audio"].x)).log_softmax(-1).transpose(0, 1)
    ctc = F.ctc_loss(log_probs, batch.chars, batch.streams["audio"].mask.sum(-1), batch.char_lengths,
                     blank=0, zero_infinity=True)
    assert out.aux_loss is not None and torch.isfinite(out.aux_loss) and out.aux_loss > 0
    torch.testing.assert_close(out.aux_loss, 0.1 * ctc)


def test_ctc_skipped_without_chars() -> None:
    batch = make_batch([30, 18, 22, 12], [6, 9, 3, 5], [0, 1, 0, 1])
    assert batch.chars is None
    head = make_head(dropout=0.0).train()
    out = head(batch)
    fused = F.normalize(head._pooled_fusion(head.proj_a1(batch.streams["audio"].x),
                                            head.proj_a2(batch.streams["audio"].x),
                                            batch.streams["audio"].mask, batch.streams["text"]), dim=-1)
    assert out.aux_loss is not None
    torch.testing.assert_close(out.aux_loss, 0.1 * supervised_contrastive_loss(fused, batch.y, 0.07))
    assert make_head(supcon_weight=0.0).train()(batch).aux_loss is None


def reference_supcon(z: torch.Tensor, labels: list[int], temperature: float) -> float:
    """SupCon written out sample by sample."""
    losses = []
    for i in range(len(labels)):
        others = [a for a in range(len(labels)) if a != i]
        positives = [p for p in others if labels[p] == labels[i]]
        if not positives:
            continue
        denominator = sum(math.exp(float(z[i] @ z[a]) / temperature) for a in others)
        losses.append(sum(-math.log(math.exp(float(z[i] @ z[p]) / temperature) / denominator)
                          for p in positives) / len(positives))
    return sum(losses) / len(losses)


def test_supcon_matches_reference() -> None:
    z = F.normalize(torch.tensor([[1.0, 0.2, 0.0], [0.9, 0.1, 0.3], [0.0, 1.0, 0.1],
                                  [0.1, 0.8, -0.2], [-0.5, 0.1, 1.0], [0.3, -0.7, 0.4]], dtype=torch.float64), dim=-1)
    labels = [0, 0, 1, 1, 0, 2]  # label 2 has no positive: that anchor is skipped
    loss = supervised_contrastive_loss(z, torch.tensor(labels), 0.07)
    assert loss.item() == pytest.approx(reference_supcon(z, labels, 0.07), rel=1e-9)
    assert supervised_contrastive_loss(z[:3], torch.tensor([0, 1, 2]), 0.07).item() == 0.0


def test_no_aux_supcon_when_no_anchor_has_a_positive() -> None:
    head = make_head(ctc_weight=0.0).train()
    out = head(make_batch([12, 9, 10], [4, 5, 6], [0, 1, 2]))
    assert out.aux_loss is not None and out.aux_loss.item() == 0.0


def test_infonce_with_augmented_text_view() -> None:
    head = make_head(dropout=0.0, ctc_weight=0.0, supcon_weight=0.0).train()
    batch = make_batch([12, 9, 10], [4, 5, 6], [0, 1, 2])
    assert head(batch).aux_loss is None
    batch.streams["text_aug"] = stream([5, 3, 6], D_TEXT, torch.Generator().manual_seed(1))
    aux = head(batch).aux_loss
    assert aux is not None and torch.isfinite(aux) and aux > 0


def test_single_frame_audio_and_two_token_text_give_no_nan() -> None:
    head = make_head().train()
    batch = make_batch([1, 40, 17], [2, 12, 5], [0, 0, 1], char_lengths=[6, 10, 3])
    out = head(batch)
    loss = head.loss(out, batch)
    loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in head.parameters() if p.grad is not None)
    with torch.no_grad():
        assert torch.isfinite(head.eval()(batch).logits).all()


def test_block_with_a_fully_padded_memory_row_stays_finite() -> None:
    torch.manual_seed(0)
    block = BertBlock(hidden=32, heads=4, ffn_dim=64, dropout=0.0)
    query, memory = torch.randn(2, 3, 32), torch.randn(2, 5, 32)
    memory_mask = torch.tensor([[True, True, False, False, False], [False] * 5])
    out = block(query, memory, memory_mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:1], block(query[:1], memory[:1, :2], memory_mask[:1, :2]))


def test_learns_separable_data() -> None:
    torch.manual_seed(0)
    n, n_classes = 16, 4
    labels = torch.arange(n) % n_classes
    batch = make_batch([int(v) for v in torch.randint(5, 20, (n,))], [int(v) for v in torch.randint(3, 8, (n,))],
                       labels.tolist(), char_lengths=[3] * n)
    # Plant the class in both streams: a class-specific offset on every real frame.
    for role, dim in (("audio", D_AUDIO), ("text", D_TEXT)):
        s = batch.streams[role]
        offsets = 2.0 * torch.eye(n_classes, dim)[labels]
        s.x[s.mask] += offsets[:, None, :].expand_as(s.x)[s.mask]
    head = make_head()
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)

    def classification_loss() -> float:
        with torch.no_grad():
            return F.cross_entropy(head.eval()(batch).logits, batch.y).item()

    before = classification_loss()
    for _ in range(30):
        head.train()
        optimizer.zero_grad()
        head.training_step(batch).backward()
        optimizer.step()
    after = classification_loss()
    assert after < 0.5 * before
