"""One training epoch of ``gate`` on the same 200 utterances: from the cache vs recomputing encoders.

* recompute (the published way): inside the data loop, every epoch, a HuBERT-sized encoder, a
  wav2vec2-sized CTC ASR model (greedy transcripts) and a BERT-base-sized text encoder (12 x 768)
  run on each batch before the head's step. ``--size base``: HuBERT-base / wav2vec2-base (12 x 768);
  ``--size large``: HuBERT-large / wav2vec2-large (24 x 1024), the sizes the single-layer paper's
  users run;
* cache: the same head and steps, reading frames already extracted by ``sercache extract``
  with the same three models (its one-off cost is reported too).

All models are random (no hub here): their cost, not their accuracy, is being measured.

    python benchmarks/cache_vs_recompute.py [--n 200] [--size base|large]
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from _common import benchmark_parser, machine, sampled_rows, train_epoch, workdir

#: HubertConfig / Wav2Vec2Config fields of each size (BERT stays base-sized: the paper pairs large speech
#: encoders with BERT-base)
SIZES = {"base": {}, "large": {"hidden_size": 1024, "num_hidden_layers": 24, "num_attention_heads": 16,
                               "intermediate_size": 4096}}


def make_models(root: Path, size: str = "base") -> dict[str, Path]:
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        BertTokenizer,
        HubertConfig,
        HubertModel,
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    from sercache.synthetic.models import CTC_CHARS, WORDS

    torch.manual_seed(0)
    paths = {"ssl": root / f"hubert-{size}", "asr": root / f"wav2vec2-{size}-ctc", "text": root / "bert-base"}
    if not (paths["ssl"] / "config.json").exists():
        HubertModel(HubertConfig(**SIZES[size])).save_pretrained(paths["ssl"])
        Wav2Vec2FeatureExtractor(do_normalize=False).save_pretrained(paths["ssl"])
    if not (paths["asr"] / "config.json").exists():
        paths["asr"].mkdir(parents=True, exist_ok=True)
        (paths["asr"] / "vocab.json").write_text(json.dumps({c: i for i, c in enumerate(CTC_CHARS)}))
        tok = Wav2Vec2CTCTokenizer(str(paths["asr"] / "vocab.json"), word_delimiter_token="|")
        model = Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(CTC_CHARS), pad_token_id=0, **SIZES[size]))
        with torch.no_grad():
            model.lm_head.weight *= 10.0  # frame-dependent posteriors: transcripts with words in them
        model.save_pretrained(paths["asr"])
        Wav2Vec2Processor(Wav2Vec2FeatureExtractor(do_normalize=True), tok).save_pretrained(paths["asr"])
    if not (paths["text"] / "config.json").exists():
        paths["text"].mkdir(parents=True, exist_ok=True)
        letters = "abcdefghijklmnopqrstuvwxyz"
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters, *("##" + c for c in letters), "'"]
        (paths["text"] / "vocab.txt").write_text("\n".join(dict.fromkeys(vocab)) + "\n")
        BertTokenizer(str(paths["text"] / "vocab.txt")).save_pretrained(paths["text"])
        BertModel(BertConfig(vocab_size=len(dict.fromkeys(vocab)))).save_pretrained(paths["text"])
    return paths


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--size", choices=sorted(SIZES), default="base",
                    help="speech encoders: base (12 x 768) or large (24 x 1024); BERT-base either way")
    args = ap.parse_args()

    import numpy as np
    import soundfile as sf
    import torch
    from transformers import AutoModel, AutoModelForCTC, AutoProcessor, AutoTokenizer

    import sercache
    from sercache.extract.options import ExtractOptions
    from sercache.extract.runner import run_extract
    from sercache.features.encoder import normalize
    from sercache.heads import get_head
    from sercache.heads.base import Batch, StreamBatch
    from sercache.splits import get_preset
    from sercache.synthetic.corpus import SynthUtterance, write_iemocap_tree
    from sercache.training.data import InMemoryData, bucket_batches, labelled_utterances
    from sercache.training.roles import resolve_roles

    rows = sampled_rows(args.jsonl, args.n, 2)
    work = workdir(args.workdir, "cvr")
    corpus = work / f"corpus{args.n}"
    if not (corpus / "Session1").exists() and not any(corpus.glob("Session*")):
        write_iemocap_tree(corpus, [SynthUtterance(r["utt_id"], r["emotion"], r["duration_s"]) for r in rows])
    models = make_models(work / "models", args.size)
    audio_s = sum(r["duration_s"] for r in rows)
    print(f"# {len(rows)} utterances ({audio_s:.0f} s of audio); HuBERT-{args.size}-, wav2vec2-{args.size}-CTC- and "
          f"BERT-base-sized random models; gate, batch {args.batch_size}; {machine()}")

    cache_dir = work / f"cache-{args.size}-{args.n}"
    timing = work / f"extract_seconds-{args.size}-{args.n}.json"  # a rerun reuses the cache: keep the first run's one-off cost
    start = time.perf_counter()
    run_extract(ExtractOptions(root=corpus, corpus="iemocap", out=cache_dir, streams=("ssl", "asr", "text_asr"),
                               ssl_model=str(models["ssl"]), asr_model=str(models["asr"]),
                               text_model=str(models["text"]), progress=False))
    if not timing.exists():
        timing.write_text(json.dumps(time.perf_counter() - start))
    extract_seconds = json.loads(timing.read_text())

    cache = sercache.open_cache(cache_dir)
    preset = get_preset("iemocap4")
    roles = resolve_roles(cache, ("audio", "text"), (), {"text": "text_asr"}, {})
    table = labelled_utterances(cache, preset, roles)
    data = InMemoryData(cache, table, roles, preset)
    idx = np.arange(len(data))
    batches = bucket_batches(data.length_of(idx), args.batch_size, np.random.default_rng(0))

    def cache_epoch() -> float:
        torch.manual_seed(0)
        head = get_head("gate")(dims=data.dims, n_classes=4)
        return train_epoch(head, torch.optim.Adam(head.parameters(), lr=1e-5),
                           [lambda b=b: data.batch(idx[b]) for b in batches])

    ssl = AutoModel.from_pretrained(models["ssl"]).eval()
    asr = AutoModelForCTC.from_pretrained(models["asr"]).eval()
    proc = AutoProcessor.from_pretrained(models["asr"])
    tok = AutoTokenizer.from_pretrained(models["text"])
    bert = AutoModel.from_pretrained(models["text"]).eval()
    paths = dict(zip(cache.utterances.utt_id, cache.utterances.path))

    def pad(xs: list[torch.Tensor]) -> StreamBatch:
        t = max(len(x) for x in xs)
        out = torch.zeros(len(xs), t, xs[0].shape[-1])
        for i, x in enumerate(xs):
            out[i, : len(x)] = x
        return StreamBatch(out, torch.arange(t)[None] < torch.tensor([len(x) for x in xs])[:, None])

    def recompute_epoch() -> float:
        torch.manual_seed(0)
        head = get_head("gate")(dims={"audio": ssl.config.hidden_size, "text": bert.config.hidden_size}, n_classes=4)
        opt = torch.optim.Adam(head.parameters(), lr=1e-5)

        def recomputed(b: np.ndarray) -> Batch:
            audio, texts = [], []
            with torch.inference_mode():
                for i in idx[b]:
                    wave = sf.read(paths[data.utt_ids[i]], dtype="float32")[0]
                    audio.append(ssl(torch.from_numpy(wave)[None]).last_hidden_state[0])
                    ids = asr(torch.from_numpy(normalize(wave))[None]).logits.argmax(-1)
                    texts.append(proc.batch_decode(ids, skip_special_tokens=True)[0].lower())
                enc = tok(texts, padding=True, return_tensors="pt")
                hidden = bert(**enc).last_hidden_state
                text = [hidden[k, : int(enc["attention_mask"][k].sum())] for k in range(len(texts))]
            return Batch({"audio": pad([a.clone() for a in audio]), "text": pad([t.clone() for t in text])},
                         data.y[idx[b]])

        return train_epoch(head, opt, [lambda b=b: recomputed(b) for b in batches])

    cached = min(cache_epoch() for _ in range(3))
    recomputed = recompute_epoch()
    print(f"{'way':44s} {'seconds':>9s}")
    print(f"# encoders: {args.size}")
    print(f"{'one-off: sercache extract (ssl, asr, text_asr)':44s} {extract_seconds:9.1f}")
    print(f"{'epoch, encoders recomputed in the data loop':44s} {recomputed:9.1f}")
    print(f"{'epoch, from the cache (best of 3)':44s} {cached:9.2f}")
    print(f"cache is {recomputed / cached:.1f}x faster per epoch; the extraction pays for itself after "
          f"{extract_seconds / max(recomputed - cached, 1e-9):.1f} epochs")


if __name__ == "__main__":
    main()
