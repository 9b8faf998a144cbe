"""Batching, padding and long-utterance chunking of wav2vec2-family encoders."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sercache.extract.batching import PlanItem, plan_batches
from sercache.features.base import AudioItem, BatchPolicy
from sercache.features.encoder import AudioEncoder, ConvFrontend, plan_chunks
from sercache.features.ssl import SSLExtractor


def _waves(lengths: list[int], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def test_conv_frontend_matches_hubert_geometry(models):
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(models["ssl"])
    fe = ConvFrontend.of(cfg)
    assert fe.stride == 320 and fe.receptive_field == 400
    model = AutoModel.from_pretrained(models["ssl"])
    for n in (400, 401, 719, 720, 16000, 12345):
        assert fe.n_frames(n) == int(model._get_feat_extract_output_lengths(torch.tensor(n)))
    assert fe.n_frames(399) == 0


@pytest.mark.parametrize("kind", ["ssl", "ssl_group"])
def test_batched_output_equals_batch_one(models, kind):
    """The runner's batches reproduce per-utterance outputs for both front-end kinds."""
    lengths = [16000, 16000, 12345, 9000, 16000, 7000]
    ext = SSLExtractor(str(models[kind]), "all", dtype="float32", batch_seconds=10.0)
    items = [AudioItem(f"u{i}", "", w) for i, w in enumerate(_waves(lengths))]
    policy = ext.batch_policy()
    assert policy.pad_safe is (kind == "ssl")
    batches = plan_batches([PlanItem(it.utt_id, len(it.samples), len(it.samples) / 16000) for it in items], policy)
    assert max(len(b) for b in batches) > 1  # something really is batched
    if kind == "ssl_group":  # group norm: a batch only ever holds equal lengths (no padding)
        assert all(len({it.length for it in b}) == 1 for b in batches)
    else:
        assert any(len({it.length for it in b}) > 1 for b in batches)  # padded batches happen
    by_id = {it.utt_id: it for it in items}
    batched = {}
    for b in batches:
        for rec in ext.extract([by_id[p.utt_id] for p in b]).records:
            batched[rec.utt_id] = rec
    for it in items:
        single = ext.extract([it]).records[0]
        for name, arr in single.frames.items():
            np.testing.assert_allclose(batched[it.utt_id].frames[name], arr, atol=2e-5, rtol=1e-4)
        np.testing.assert_allclose(batched[it.utt_id].per_utterance["pooled_mean"], single.per_utterance["pooled_mean"],
                                   atol=2e-5, rtol=1e-4)


def test_group_norm_would_change_under_padding(models):
    """Why the rule exists: padding a group-norm encoder changes the real frames."""
    from transformers import AutoConfig, AutoModel

    cfg = AutoConfig.from_pretrained(models["ssl_group"])
    enc = AudioEncoder(AutoModel.from_pretrained(models["ssl_group"]).eval(), cfg, lambda o: [o.last_hidden_state])
    short, long = _waves([8000, 16000])
    alone = enc.forward([short])[0][0]
    padded = np.zeros(16000, np.float32)
    padded[:8000] = (short - short.mean()) / np.sqrt(short.var() + 1e-7)
    with torch.inference_mode():
        out = enc.model(torch.from_numpy(padded)[None]).last_hidden_state[0, : len(alone)]
    assert float((out - alone).abs().max()) > 1e-2
    with pytest.raises(ValueError, match="group-norm"):
        enc.forward([short, long])


def test_plan_chunks_cover_every_frame_once():
    fe = ConvFrontend((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2))
    for n in (16000 * 60, 16000 * 60 + 123, 16000 * 31):
        chunks = plan_chunks(n, 16000 * 10, 16000 * 3, fe)
        assert chunks[0].start == 0 and chunks[-1].stop == n
        assert all(c.start % 320 == 0 for c in chunks)
        kept = [f for c in chunks for f in range(c.keep_from, c.keep_to)]
        assert kept == list(range(fe.n_frames(n)))
        for c in chunks:  # each kept frame lies inside its chunk's own frames
            assert c.first_frame <= c.keep_from and c.keep_to <= c.first_frame + fe.n_frames(c.stop - c.start)


def test_long_utterance_is_chunked_and_stitched(models):
    """A 60 s utterance: full frame count; away from the seams, stitched = unchunked.

    Hidden state 0 (conv features + positional conv) has a local receptive field, so it must
    match the unchunked output exactly away from the seams; deeper layers attend globally and
    are only checked for shape and finiteness.
    """
    n = 16000 * 60 + 777
    wave = _waves([n])[0]
    chunked = SSLExtractor(str(models["ssl"]), "0,2", dtype="float32", chunk_seconds=10.0, overlap_seconds=4.0)
    whole = SSLExtractor(str(models["ssl"]), "0,2", dtype="float32", chunk_seconds=120.0)
    a = chunked.extract([AudioItem("long", "", wave)]).records[0]
    b = whole.extract([AudioItem("long", "", wave)]).records[0]
    n_frames = chunked.frontend.n_frames(n)
    assert a.frames["layer_0"].shape == b.frames["layer_0"].shape == (n_frames, 32)
    assert a.frames["layer_2"].shape == (n_frames, 32) and np.isfinite(a.frames["layer_2"]).all()
    seams = [c.keep_from for c in plan_chunks(n, 160000, 64000, chunked.frontend)[1:]]
    margin = 20  # frames: the 16-frame positional conv reaches 8 frames each side; room to spare
    far = np.ones(n_frames, bool)
    for s in seams:
        far[max(0, s - margin): s + margin] = False
    np.testing.assert_allclose(a.frames["layer_0"][far], b.frames["layer_0"][far], atol=1e-4)
    assert far.sum() > 0.8 * n_frames  # most frames are compared


def test_cpu_default_is_one_utterance_per_batch(models):
    ext = SSLExtractor(str(models["ssl"]), device="cpu")
    assert ext.batch_policy().max_items == 1
    items = [PlanItem(f"u{i}", 16000, 1.0) for i in range(5)]
    assert [len(b) for b in plan_batches(items, ext.batch_policy())] == [1] * 5


def test_plan_is_deterministic_and_longest_first():
    items = [PlanItem(f"u{i}", n, n / 16000) for i, n in enumerate([16000, 48000, 32000, 48000, 8000, 700000])]
    policy = BatchPolicy(budget_seconds=7.0, pad_safe=True, max_items=8, chunk_seconds=30.0)
    plan = plan_batches(items, policy)
    assert plan == plan_batches(list(reversed(items)), policy)
    assert [[p.utt_id for p in b] for b in plan] == [["u5"], ["u1", "u3"], ["u2", "u0", "u4"]]
    for b in plan:
        assert len(b) * b[0].seconds <= 7.0 or len(b) == 1
