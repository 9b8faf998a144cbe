"""Every registered head: contract, shapes, padding invariance; gate/cmgi/probe specifics."""
from __future__ import annotations

import inspect

import pytest
import torch

from sercache.heads import HEADS, get_head
from sercache.heads.base import Batch, StreamBatch

DIMS = {"audio": 24, "text": 16, "mfcc": 12}
#: Small hyperparameters so every head runs in milliseconds.
SMALL = {
    "gate": {}, "cmgi": {}, "linear": {}, "mlp": {"hidden": 16}, "svm": {}, "logreg": {},
    "wsum": {"n_layers": 3, "hidden": 16},
    "glam": {"segment_frames": 16, "hop_frames": 4}, "apcnn": {"segment_frames": 16, "hop_frames": 4},
    "mhcnn": {"segment_frames": 16, "hop_frames": 4},
    "tmn": {"fusion_dim": 32, "patch_size": 8, "mixer_dim": 32, "depth": 2},
    "mmer": {"hidden": 32, "heads": 4, "ffn_dim": 64},
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def make_batch(cls, hyper: dict, lengths: list[int], seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    streams = {}
    for role in cls.required_roles({**cls.hyperparameters(), **hyper}):
        t = max(lengths)
        if role in cls.multi_layer_roles:
            x = torch.randn(len(lengths), hyper.get("n_layers", 2), t, DIMS[role], generator=g)
        else:
            x = torch.randn(len(lengths), t, DIMS[role], generator=g)
        mask = torch.arange(t)[None] < torch.tensor(lengths)[:, None]
        streams[role] = StreamBatch(x, mask)
    y = torch.arange(len(lengths)) % 4
    return Batch(streams, y, soft=torch.nn.functional.one_hot(y, 4).float(), va=torch.rand(len(lengths), 2),
                 chars=torch.randint(1, 29, (len(lengths), 3), generator=g), char_lengths=torch.full((len(lengths),), 3))


def test_cli_lists_every_registered_head():
    from sercache.cli import _head_names

    assert _head_names() == sorted(HEADS) == sorted(SMALL)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_contract(name):
    cls = get_head(name)
    assert cls.name == name and cls.summary and cls.roles
    params = inspect.signature(cls.__init__).parameters
    for k, p in params.items():
        if k not in ("self", "dims", "n_classes"):
            assert p.kind == p.KEYWORD_ONLY and p.default is not p.empty, f"{name}.{k} needs a keyword default"
    assert {"optimizer", "lr", "batch_size", "epochs"} <= set(cls.resolved_train_defaults())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_shapes_and_padding_invariance(name):
    """An utterance's outputs do not depend on the padding added around it in a batch."""
    torch.manual_seed(0)
    cls = get_head(name)
    head = cls(dims=DIMS, n_classes=4, **SMALL[name]).eval()
    short = make_batch(cls, SMALL[name], [7], seed=1)
    padded = make_batch(cls, SMALL[name], [7, 40], seed=2)
    for role, s in short.streams.items():  # the short item, now padded next to a longer one
        p = padded.streams[role]
        if s.x.dim() == 4:
            p.x[0, :, :7] = s.x[0]
            p.x[0, :, 7:] = 1e3  # loud padding: any leak shows
        else:
            p.x[0, :7] = s.x[0]
            p.x[0, 7:] = 1e3
    with torch.no_grad():
        alone, together = head(short), head(padded)
    assert together.logits.shape == (2, 4)
    torch.testing.assert_close(together.logits[:1], alone.logits, atol=1e-4, rtol=1e-4)
    if cls.regression:
        assert together.regression.shape == (2, 2)
    if cls.closed_form:  # fitted by scikit-learn (see test_classical.py), no gradient step
        return
    head.train()
    loss = head.training_step(make_batch(cls, SMALL[name], [5, 9, 30, 12]))
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()


def test_gate_and_cmgi_parameter_counts():
    dims = {"audio": 1024, "text": 768}
    text_proj = 768 * 1024 + 1024
    gate = 2048 * 1024 + 1024
    classifier = 2048 * 4 + 4
    qkv = 3 * (1024 * 1024 + 1024)
    assert n_params(get_head("gate")(dims=dims, n_classes=4)) == text_proj + gate + classifier == 2_893_828
    assert n_params(get_head("gate")(dims=dims, n_classes=4, share_gate=False)) == text_proj + 2 * gate + classifier
    assert n_params(get_head("gate")(dims=dims, n_classes=4, align="pool")) == 2_893_828
    assert n_params(get_head("cmgi")(dims=dims, n_classes=4)) == text_proj + qkv + gate + classifier == 6_042_628
    assert n_params(get_head("cmgi")(dims=dims, n_classes=4, self_attn=True)) == 6_042_628 + qkv


def test_cmgi_faithful_padding_reproduces_the_unmasked_original():
    """With faithful_padding, padding changes the outputs (as in the original code); masked, it does not."""
    torch.manual_seed(0)
    cls = get_head("cmgi")
    faithful = cls(dims=DIMS, n_classes=4, faithful_padding=True).eval()
    short = make_batch(cls, {}, [7], seed=1)
    padded = make_batch(cls, {}, [7, 40], seed=2)
    for role in ("audio", "text"):
        padded.streams[role].x[0, :7] = short.streams[role].x[0]
        padded.streams[role].x[0, 7:] = 0.0
    with torch.no_grad():
        diff = (faithful(padded).logits[0] - faithful(short).logits[0]).abs().max()
    assert diff > 1e-3


def test_gate_alignment_is_parameter_free_attention():
    """align="attention" output equals the formula written out: softmax(X Y^T / sqrt(d)) Y, gate, mean."""
    torch.manual_seed(0)
    head = get_head("gate")(dims={"audio": 8, "text": 8}, n_classes=3).eval()
    x, t = torch.randn(1, 5, 8), torch.randn(1, 3, 8)
    mask = lambda n: torch.ones(1, n, dtype=torch.bool)  # noqa: E731
    batch = Batch({"audio": StreamBatch(x, mask(5)), "text": StreamBatch(t, mask(3))}, torch.tensor([0]))
    y = head.text_proj(t)
    c_a = torch.softmax(x @ y.transpose(1, 2) / 8 ** 0.5, -1) @ y
    c_t = torch.softmax(y @ x.transpose(1, 2) / 8 ** 0.5, -1) @ x
    w = head.gate_audio.proj
    g_a = torch.sigmoid(w(torch.cat([x, c_a], -1)))
    g_t = torch.sigmoid(w(torch.cat([y, c_t], -1)))
    fused = torch.cat([(x * g_a + c_a * (1 - g_a)).mean(1), (y * g_t + c_t * (1 - g_t)).mean(1)], -1)
    with torch.no_grad():
        torch.testing.assert_close(head(batch).logits, head.classifier(fused))


def _masked_attention(q, k, v, key_mask):  # noqa: ANN001, ANN202 - the textbook formula, for the tests below
    scores = (q @ k.transpose(1, 2)) / q.shape[-1] ** 0.5
    return torch.softmax(scores.masked_fill(~key_mask[:, None], float("-inf")), -1) @ v


def _textbook(head, batch: Batch) -> torch.Tensor:  # noqa: ANN001
    """gate / cmgi written out the naive way: attention, then ``Linear([x; c])`` on every frame."""
    a, t = batch.streams["audio"], batch.streams["text"]
    x, y = a.x, head.text_proj(t.x)
    w_a, w_t = (head.gate_audio.proj, head.gate_text.proj) if head.name == "gate" else (head.gate.proj, head.gate.proj)
    if head.name == "gate":
        c_a, c_t = _masked_attention(x, y, y, t.mask), _masked_attention(y, x, x, a.mask)
    else:
        cr = head.cross
        c_a = _masked_attention(cr.q(x), cr.k(y), cr.v(y), t.mask)
        c_t = _masked_attention(cr.q(y), cr.k(x), cr.v(x), a.mask)
    sa = getattr(head, "self_attention", None)
    if sa is not None:  # cmgi's Table 1 version: the gate's inputs are self-attended
        x, y = _masked_attention(sa.q(x), sa.k(x), sa.v(x), a.mask), _masked_attention(sa.q(y), sa.k(y), sa.v(y), t.mask)
    g_a, g_t = torch.sigmoid(w_a(torch.cat([x, c_a], -1))), torch.sigmoid(w_t(torch.cat([y, c_t], -1)))

    def mean(z: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return (z * m[..., None]).sum(1) / m.sum(1, keepdim=True)

    fused = torch.cat([mean(x * g_a + c_a * (1 - g_a), a.mask), mean(y * g_t + c_t * (1 - g_t), t.mask)], -1)
    return head.classifier(fused)


@pytest.mark.parametrize(("name", "hyper"), [("gate", {}), ("gate", {"share_gate": False}), ("cmgi", {}),
                                             ("cmgi", {"self_attn": True})])
def test_gate_and_cmgi_equal_the_naive_formula_in_outputs_and_gradients(name, hyper):
    """Projecting text tokens before attention (W_c A v = A v W_c^T) changes the cost, not the head."""
    torch.manual_seed(0)
    head = get_head(name)(dims={"audio": 24, "text": 16}, n_classes=4, **hyper)
    batch = make_batch(type(head), {}, [9, 30, 17], seed=3)  # padded audio frames and text tokens
    fast = head(batch).logits
    fast.square().sum().backward()
    fast_grads = {n: p.grad.clone() for n, p in head.named_parameters()}
    head.zero_grad()
    naive = _textbook(head, batch)
    naive.square().sum().backward()
    torch.testing.assert_close(fast, naive, atol=1e-5, rtol=1e-5)
    for n, p in head.named_parameters():
        torch.testing.assert_close(fast_grads[n], p.grad, atol=1e-5, rtol=1e-4, msg=f"gradient of {n}")


class _SoftmaxSizes(torch.overrides.TorchFunctionMode):
    """Records the size of every tensor a softmax is taken of (attention scores), as the head runs."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        if func in (torch.softmax, torch.Tensor.softmax, torch.nn.functional.softmax):
            self.sizes.append(args[0].numel())
        return func(*args, **(kwargs or {}))


def _long_audio_batch(n_audio: int = 200, n_text: int = 12) -> Batch:
    """Two items, long audio (one padded) and a few text tokens: the shape of predicting a long recording."""
    g = torch.Generator().manual_seed(5)
    lengths = {"audio": [n_audio, n_audio - 37], "text": [n_text, n_text - 5]}
    streams = {}
    for role, ls in lengths.items():
        x = torch.randn(2, max(ls), DIMS[role], generator=g)
        streams[role] = StreamBatch(x, torch.arange(max(ls))[None] < torch.tensor(ls)[:, None])
    return Batch(streams, torch.tensor([0, 1]))


@pytest.mark.parametrize(("name", "hyper"), [("gate", {}), ("cmgi", {}), ("cmgi", {"self_attn": True}),
                                             ("cmgi", {"self_attn": True, "faithful_padding": True})])
def test_gate_and_cmgi_evaluate_long_inputs_in_blocks(name, hyper, monkeypatch):
    """In evaluation no attention holds frames x frames (or tokens x all frames) scores, and the outputs are the
    unblocked training path's: the evaluation of a 2-hour recording (predict) in bounded memory."""
    from sercache.heads import base, gate

    torch.manual_seed(0)
    head = get_head(name)(dims=DIMS, n_classes=4, **hyper)
    batch, frames = _long_audio_batch(), 200
    with torch.no_grad(), _SoftmaxSizes() as unblocked:
        whole = head.train()(batch).logits  # dropout 0: training's path is the unblocked computation
    if hyper.get("self_attn"):
        assert max(unblocked.sizes) == 2 * frames * frames  # the recorder sees the scores it must bound
    monkeypatch.setattr(gate, "EVAL_FRAME_BLOCK", 32)
    monkeypatch.setattr(base, "EVAL_SCORE_ELEMENTS", 1024)
    with torch.no_grad(), _SoftmaxSizes() as blocked:
        out = head.eval()(batch).logits
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)
    assert blocked.sizes and max(blocked.sizes) <= 1024 < max(unblocked.sizes)
    if hyper.get("self_attn"):  # the self-attention's frames x frames, two query rows at a time
        assert len(blocked.sizes) >= frames // 2


class _LargestTensor(torch.overrides.TorchFunctionMode):
    """Records the largest tensor any torch function returns (intermediates included), as the head runs."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: ANN001, ANN204
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize(("n_audio", "n_text", "budget"), [(200, 12, 1024), (200, 12, 1), (150, 90, 2048)])
def test_mmer_evaluates_long_inputs_a_block_of_frames_at_a_time(n_audio, n_text, budget, monkeypatch):
    """In evaluation MMER reads the frames a block at a time (a running softmax over the blocks for the token
    queries, the frame-query attention and feed-forward per block) and gives the unblocked path's logits; nothing
    it computes is larger than the budget allows (issue 23: predict of a long recording in bounded memory)."""
    from sercache.heads import base

    torch.manual_seed(0)
    head = get_head("mmer")(dims=DIMS, n_classes=4, hidden=32, heads=4, ffn_dim=64, dropout=0.0)
    batch = _long_audio_batch(n_audio, n_text)
    with torch.no_grad(), _LargestTensor() as unblocked:
        whole = head.eval()(batch).logits  # the budget's default: a short input takes the unblocked path
    monkeypatch.setattr(base, "EVAL_SCORE_ELEMENTS", budget)
    with torch.no_grad(), _LargestTensor() as blocked:
        out = head.eval()(batch).logits
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)
    # nothing larger than the budget, or than the text's own fused sequence (tokens x 2 hidden), whatever the frames
    text_wide = 2 * n_text * 2 * 32
    assert blocked.largest <= max(budget, text_wide) < unblocked.largest
    longer = _long_audio_batch(2 * n_audio, n_text)
    with torch.no_grad(), _LargestTensor() as twice_the_frames:
        head(longer)
    assert twice_the_frames.largest == blocked.largest


def test_mmer_blocks_keep_an_item_without_real_frames_as_the_unblocked_path_does(monkeypatch):
    from sercache.heads import base

    torch.manual_seed(0)
    head = get_head("mmer")(dims=DIMS, n_classes=4, hidden=32, heads=4, ffn_dim=64, dropout=0.0).eval()
    batch = _long_audio_batch(120, 8)
    batch.streams["audio"].mask[1] = False  # every frame of the second item is padding
    with torch.no_grad():
        whole = head(batch).logits
        monkeypatch.setattr(base, "EVAL_SCORE_ELEMENTS", 500)
        out = head(batch).logits
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("budget", [1, 62, 200, 10_000])  # a row alone over budget, 1 row, 3 rows, all at once
def test_attend_rows_equals_attend_for_any_block(budget, monkeypatch):
    from sercache.heads import base

    g = torch.Generator().manual_seed(1)
    q, k, v = torch.randn(2, 23, 8, generator=g), torch.randn(2, 31, 8, generator=g), torch.randn(2, 31, 5, generator=g)
    mask = torch.arange(31)[None] < torch.tensor([31, 12])[:, None]
    whole = base.attend(q, k, v, mask)
    monkeypatch.setattr(base, "EVAL_SCORE_ELEMENTS", budget)
    with _SoftmaxSizes() as sizes:
        blocked = base.attend_rows(q, k, v, mask)
    torch.testing.assert_close(blocked, whole, atol=1e-6, rtol=1e-6)
    assert max(sizes.sizes) <= max(budget, 2 * 31) and len(sizes.sizes) == -(-23 // max(1, budget // 62))


def test_wsum_weights_start_uniform_and_need_matching_layers():
    head = get_head("wsum")(dims={"audio": 8}, n_classes=4, n_layers=5)
    assert head.layer_distribution == pytest.approx([0.2] * 5)
    bad = Batch({"audio": StreamBatch(torch.randn(2, 3, 4, 8), torch.ones(2, 4, dtype=torch.bool))},
                torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="5 layers"):
        head(bad)


def test_unknown_head_lists_valid_ones():
    with pytest.raises(KeyError, match="valid heads: apcnn, cmgi, gate"):
        get_head("gated")
