"""The ``partition`` fold protocol: a corpus's official partition, from the manifest's ``partition`` column.

MSP-Podcast ships one (``Split_Set``: Train, Development, Test1, Test2 and, in recent releases,
Test3), and its papers report on it: train on Train, select on Development, test on each test set.
Here every test partition is one fold (named after it: ``--fold Test1``), all with the same training
and validation sides. Values are matched without case: ``train``; ``development``/``dev``/
``validation``/``valid``; anything starting with ``test``. Rows of other partitions are not used.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sercache.splits.registry import Protocol, register_protocol

if TYPE_CHECKING:
    import pandas as pd

    from sercache.splits.protocols import Fold

COLUMN = "partition"
VALID_NAMES = ("development", "dev", "validation", "valid")


def partition_folds(df: pd.DataFrame, **_: Any) -> list[Fold]:
    """Train on the ``Train`` rows, validate on ``Development``, test on each ``Test*`` partition.

    Raises:
        ProtocolError: no ``partition`` column, or no training, validation or test rows in it.
    """
    from sercache.splits.protocols import Fold, ProtocolError, _natural

    values = df[COLUMN].astype(str) if COLUMN in df.columns else None
    if values is None or (values == "").all():
        raise ProtocolError(f"protocol partition needs a {COLUMN!r} column (an official partition, e.g. "
                            "`sercache extract --corpus msp-podcast` fills it from Split_Set); this cache has none: "
                            "use another --protocol")
    lower = values.str.lower()
    train, valid = df[lower == "train"], df[lower.isin(VALID_NAMES)]
    tests = _natural([v for v in values.unique() if v.lower().startswith("test")])
    missing = [what for what, ok in (("Train", len(train)), ("Development", len(valid)), ("Test*", tests)) if not ok]
    if missing:
        raise ProtocolError(f"protocol partition: no labelled utterance in the {' or '.join(missing)} partition "
                            f"(partitions here: {', '.join(_natural(list(values.unique())))}); check --labels, or "
                            "use another --protocol")
    seen = set(train.speaker.astype(str)) | set(valid.speaker.astype(str))
    folds = []
    for name in tests:
        test = df[values == name]
        speakers = set(test.speaker.astype(str))
        # unknown speakers ('') on the test side could be anyone: independence is then not claimed
        independent = "" not in speakers and not speakers & seen
        folds.append(Fold(name, train.utt_id.tolist(), valid.utt_id.tolist(), test.utt_id.tolist(), independent,
                          f"official partition: test {name} ({len(test)} utterances); validation: Development "
                          f"({len(valid)}); training: Train ({len(train)})", meta={COLUMN: name}))
    return folds


register_protocol(Protocol(
    "partition", "the corpus's official partition (MSP-Podcast's Split_Set): train Train, validate Development, "
    "one fold per Test set", partition_folds, validation="never"))
