"""Long recordings in bounded memory: read, downmix and resample block by block.

A 3-hour file read whole at 44.1 kHz stereo is 3.8 GB of float32 before downmixing, and
``resample_poly`` works in float64, so reading it as a short file is read would need well over
10 GB. Here only the 16 kHz mono result (691 MB for 3 hours) is held whole; each block of the
input is read, checked, downmixed and resampled on its own, with enough context on each side that
every output sample equals the one resampling the whole signal gives.
"""
from __future__ import annotations

from math import ceil, gcd
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from sercache.errors import SercacheError

#: Files longer than this (seconds, at their own rate) are read block by block.
LONG_AUDIO_SECONDS = 600.0
#: Input seconds per block.
BLOCK_SECONDS = 60.0


class AudioDataError(SercacheError, ValueError):
    """Samples a long file cannot be used with (``load_audio`` reports it as an AudioError)."""


def resample_blocks(read_block, n: int, rate: int, target_rate: int, out: np.ndarray) -> None:  # noqa: ANN001
    """Fill ``out`` with ``resample_poly(x, up, down)`` of the ``n``-sample signal ``x``, one block at a time.

    ``read_block(start, stop)`` returns ``x[start:stop]`` as float (mono). Output sample ``j`` sits at
    input position ``j * down / up``, so a block starting at a multiple of ``down`` starts at an output
    sample; ``context`` input samples on each side (zeros beyond the signal, as ``resample_poly`` pads)
    cover the filter's half-length.
    """
    g = gcd(rate, target_rate)
    up, down = target_rate // g, rate // g
    half = 10 * max(up, down)  # resample_poly's default filter half-length, on the upsampled grid
    context = down * (ceil(half / up / down) + 1)
    block = down * max(1, int(BLOCK_SECONDS * rate) // down)
    for start in range(0, n, block):
        stop = min(n, start + block)
        lo, hi = start - context, stop + context
        window = np.zeros(hi - lo, dtype=np.float64)
        window[max(0, -lo): (min(n, hi) - lo)] = read_block(max(0, lo), min(n, hi))
        y = resample_poly(window, up, down)
        first = context * up // down  # output index of ``start`` inside this window
        j0 = start * up // down
        j1 = min(len(out), -(-stop * up // down))
        out[j0:j1] = y[first: first + (j1 - j0)]


def load_long(path: Path, info: sf._SoundFileInfo, target_rate: int) -> tuple[np.ndarray, list[str]]:
    """``(samples, notes)`` of a long file: float32 mono at ``target_rate``; raises ValueError on NaN/inf."""
    n, rate, channels = int(info.frames), int(info.samplerate), int(info.channels)
    notes: list[str] = []
    with sf.SoundFile(str(path)) as fh:
        def read_block(start: int, stop: int) -> np.ndarray:
            fh.seek(start)
            data = fh.read(stop - start, dtype="float32", always_2d=True)
            if not np.isfinite(data).all():
                raise AudioDataError(f"audio holds {int((~np.isfinite(data)).sum())} NaN/inf samples between "
                                     f"{start / rate:.0f} s and {stop / rate:.0f} s; re-export the file")
            return data.mean(axis=1) if channels > 1 else data[:, 0]

        if rate == target_rate:
            out = np.empty(n, dtype=np.float32)
            step = int(BLOCK_SECONDS * rate)
            for start in range(0, n, step):
                out[start: min(n, start + step)] = read_block(start, min(n, start + step))
        else:
            out = np.empty(-(-n * (target_rate // gcd(rate, target_rate)) // (rate // gcd(rate, target_rate))),
                           dtype=np.float32)
            resample_blocks(read_block, n, rate, target_rate, out)
            notes.append(f"resampled {rate}->{target_rate} Hz")
    if channels > 1:
        notes.insert(0, f"downmixed {channels} channels")
    return out, notes
