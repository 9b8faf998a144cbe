"""Rebuild the extractor that made a cached stream, from the stream's recorded provenance.

``sercache predict`` must compute features for new audio exactly as the cache did, so the
extractor is built from what the stream's ``identity`` recorded (model folder or id, layers,
storage dtype, compute precision, chunking, spectral parameters), never from today's defaults,
and the rebuilt extractor's own identity is then compared with the recorded one: a model
whose weights (or feature-extractor settings) changed since is refused, naming both.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from sercache.features.base import Extractor
from sercache.features.models import ModelError
from sercache.store.provenance import describe_difference


class WeightsChangedError(ModelError):
    """A model's weights differ from those the cache was extracted with."""


def _model_source(stream: str, option: str, recorded: str, override: str | None) -> str:
    """The model to load: the recorded one, or the user's replacement; missing folders refused here."""
    model = override or recorded
    path = Path(model).expanduser()
    looks_local = override is not None or path.is_absolute() or model.startswith((".", "~"))
    if looks_local and not path.is_dir():
        raise ModelError(
            f"stream {stream!r} was extracted with the {option} model {recorded!r}; it is missing: looked in "
            f"{path.resolve()} (moved or deleted?). Give its new folder with --model {stream}=FOLDER (the weights "
            "are checked against the cache's fingerprint).")
    return model


def missing_models(provenances: dict[str, dict[str, Any]], models: dict[str, str] | None = None) -> list[str]:
    """Why each stream's model folder is missing (the recorded one, or its ``--model`` replacement), one line each.

    Checked for every stream before any model loads: a run whose model folders moved has them all
    named at once, not one per attempt after a long load.
    """
    from sercache.features.streams import kind_of_identity

    found = []
    for stream, provenance in provenances.items():
        ident = dict(provenance.get("identity", {}))
        entry = kind_of_identity(ident)
        if entry is None or entry.model_option is None:
            continue
        try:
            _model_source(stream, entry.model_option, str(ident.get("model", "")), (models or {}).get(stream))
        except ModelError as exc:
            found.append(str(exc))
    return found


def _hub_hint(model: str) -> str:
    try:
        from huggingface_hub import constants

        where = constants.HF_HUB_CACHE
    except Exception:  # noqa: BLE001 - only for the message
        where = "the Hugging Face cache"
    return f"looked for the hub model {model!r} in {where} and on the hub"


def extractor_for(stream: str, provenance: dict[str, Any], *, device: str = "cpu", model: str | None = None,
                  allow_different_weights: bool = False) -> Extractor:
    """The extractor that reproduces ``stream``'s features, checked against its provenance.

    Args:
        stream: the stream's name in the cache (for messages).
        provenance: the stream's ``{"identity": ..., "details": ...}`` record.
        device: where model-backed extractors run.
        model: a replacement folder for the recorded model (a moved folder); its weights are still checked.
        allow_different_weights: accept a model whose weights fingerprint differs from the recorded one.

    Raises:
        ModelError: the model is missing, or its weights (or any other recorded setting) differ.
    """
    from sercache.features.streams import Runtime, kind_of_identity

    ident = dict(provenance.get("identity", {}))
    entry = kind_of_identity(ident)
    if entry is None:
        raise ModelError(f"stream {stream!r} is of kind {ident.get('kind')!r}, which predict cannot recompute")
    ident = entry.completed(ident)  # a stream recorded before a setting existed gets the value it meant
    config = entry.config.from_json(ident)
    runtime = Runtime(device=device, batch_seconds=0.0)
    if entry.model_option is None:
        built: Extractor = entry.build(config, runtime)
        _check_identity(stream, ident, built.identity(), False, False)
        return built
    if ident.get("precision") == "fp16" and not str(device).startswith("cuda"):
        raise ModelError(f"stream {stream!r} was computed in fp16 on a GPU; the CPU cannot reproduce it: "
                         "predict with --device cuda")
    source = _model_source(stream, entry.model_option, str(ident.get("model", "")), model)
    config.model = source  # type: ignore[attr-defined]
    try:
        built = entry.build(config, runtime)
    except (OSError, ValueError) as exc:  # ModelError is a ValueError
        where = "" if Path(source).expanduser().is_dir() else f" ({_hub_hint(source)})"
        raise ModelError(f"stream {stream!r} needs the {entry.model_option} model {source!r}{where}: {exc}") from None
    _check_identity(stream, ident, built.identity(), model is not None, allow_different_weights)
    return built


def _check_identity(stream: str, recorded: dict[str, Any], rebuilt: dict[str, Any], moved: bool,
                    allow_different_weights: bool) -> None:
    """Refuse anything that would change the numbers; a moved folder may differ in its path only."""
    skip = {"weights"} | ({"model"} if moved else set())
    diff = describe_difference({k: v for k, v in recorded.items() if k not in skip},
                               {k: v for k, v in rebuilt.items() if k not in skip})
    if diff:
        raise ModelError(f"stream {stream!r} cannot be recomputed as the cache computed it: {diff}")
    old, new = recorded.get("weights"), rebuilt.get("weights")
    if old != new and not allow_different_weights:
        raise WeightsChangedError(
            f"the model {rebuilt.get('model')!r} of stream {stream!r} has other weights than the cache was extracted "
            f"with: cache fingerprint {old}, model now {new}. Features (and predictions) would differ from what the "
            "heads were trained on; restore the original weights, or pass --allow-different-weights to predict anyway.")
