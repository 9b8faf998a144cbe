"""A public base for pooled heads: a new one subclasses PooledHead, which owns its pooling."""
from __future__ import annotations

import torch

from sercache.heads import PooledHead, get_head
from sercache.heads.base import Batch, HeadOutput, StreamBatch
from sercache.training import pooled


class MeanOnlyHead(PooledHead):  # not registered: a head a user might write, with its own default pooling
    name = "mean-only"

    def __init__(self, dims: dict[str, int], n_classes: int, *, pooling: str = "mean", with_text: bool = False) -> None:
        super().__init__(dims, with_text=with_text, pooling=pooling)
        self.classifier = torch.nn.Linear(self.width, n_classes)

    def forward(self, batch: Batch) -> HeadOutput:
        return HeadOutput(self.classifier(self.pooled(batch)))


def test_the_pooled_heads_share_the_public_base():
    for name in ("linear", "mlp", "svm", "logreg"):
        assert issubclass(get_head(name), PooledHead), name


def test_a_pooled_head_owns_its_pooling():
    assert MeanOnlyHead.pooling_of({}) == "mean" and MeanOnlyHead.pooling_of({"pooling": "meanstd"}) == "meanstd"
    assert get_head("linear").pooling_of({}) == "meanstd"
    assert MeanOnlyHead.statistics("meanstd") == ("mean", "std") and MeanOnlyHead.statistics("mean") == ("mean",)
    head = MeanOnlyHead({"audio": 3, "text": 2}, 4, with_text=True)
    assert head.width == 5 and MeanOnlyHead.required_roles({"with_text": True}) == ("audio", "text")
    x = {r: StreamBatch(torch.ones(2, 1, d), torch.ones(2, 1, dtype=torch.bool)) for r, d in (("audio", 3), ("text", 2))}
    assert head(Batch(x, torch.zeros(2, dtype=torch.long))).logits.shape == (2, 4)


def test_the_loader_asks_the_head_for_its_pooling(monkeypatch):
    asked = []
    monkeypatch.setattr(pooled, "PooledData", lambda cache, table, roles, preset, pooling, device: asked.append(pooling))
    pooled.load_fold(None, None, {}, None, MeanOnlyHead, {})
    pooled.load_fold(None, None, {}, None, get_head("linear"), {"pooling": "mean"})
    assert asked == ["mean", "mean"]
