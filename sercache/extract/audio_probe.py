"""Probing a manifest's audio (headers, checksums) before extraction; the manifest itself is sercache.corpora.base."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pandas as pd

from sercache.features.audio import AudioError, probe_audio
from sercache.store.records import ExtractionProblem

__all__ = ["probe_all"]


def probe_all(table: pd.DataFrame, problems: list[ExtractionProblem], threads: int = 4) -> pd.DataFrame:
    """Fill duration, sample rate, channels and checksum from each file's header and bytes.

    A file that cannot be probed keeps its row (its labels are still valid) with NaN
    duration, and gets a problem naming the path; extraction then records it per stream.
    """
    def one(path: str) -> Any:
        try:
            return probe_audio(path)
        except AudioError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=threads) as pool:
        results = list(pool.map(one, table.path.tolist()))
    table = table.copy()
    for i, (uid, path, res) in enumerate(zip(table.utt_id, table.path, results)):
        if isinstance(res, AudioError):
            problems.append(ExtractionProblem(uid, path, "audio", str(res)))
            continue
        table.loc[i, ["num_samples", "sample_rate", "channels", "duration_s"]] = [
            res.num_samples, res.sample_rate, res.channels, res.duration_s]
        table.loc[i, "audio_sha1"] = res.sha1
    return table
