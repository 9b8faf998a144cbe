"""Length-sorted batches under a budget of padded audio seconds."""
from __future__ import annotations

from dataclasses import dataclass

from sercache.features.base import BatchPolicy


@dataclass(frozen=True)
class PlanItem:
    utt_id: str
    length: int      # samples at 16 kHz (audio) or characters (text)
    seconds: float   # audio seconds (0 for text)


def plan_batches(items: list[PlanItem], policy: BatchPolicy) -> list[list[PlanItem]]:
    """Group utterances into batches, longest first (an out-of-memory shows up at once).

    * Utterances longer than ``policy.chunk_seconds`` are always alone (they are chunked).
    * A batch's cost is its size times its longest item, in seconds; it stays within
      ``policy.budget_seconds`` (a budget of 0 means no seconds budget, only ``max_items``).
    * Without ``pad_safe``, only utterances of exactly equal length share a batch.

    The plan depends only on the items and the policy, so an interrupted run that is
    resumed forms the same batches for the remaining utterances (byte-identical outputs).
    """
    ordered = sorted(items, key=lambda it: (-it.length, it.utt_id))
    batches: list[list[PlanItem]] = []
    current: list[PlanItem] = []

    def fits(item: PlanItem) -> bool:
        if not current or len(current) >= policy.max_items:
            return False
        if not policy.pad_safe and item.length != current[0].length:
            return False
        return policy.budget_seconds <= 0 or (len(current) + 1) * current[0].seconds <= policy.budget_seconds

    for item in ordered:
        if item.seconds > policy.chunk_seconds:
            batches.append([item])
            continue
        if fits(item):
            current.append(item)
        else:
            if current:
                batches.append(current)
            current = [item]
    if current:
        batches.append(current)
    return batches
