"""The public Python API: the four stages as functions, with the CLI's options as keywords."""
from __future__ import annotations

import numpy as np
import soundfile as sf


def test_extract_train_report_load_run_from_python(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    rng = np.random.default_rng(0)
    lines = ["utt_id,path,label,speaker"]
    for i in range(32):
        label, pitch = (("neu", 150), ("hap", 220), ("sad", 330), ("ang", 500))[i % 4]
        tone = np.sin(2 * np.pi * pitch * np.arange(8000) / 16000)
        sf.write(root / f"u{i}.wav", (0.3 * tone + 0.01 * rng.standard_normal(8000)).astype("float32"), 16000)
        lines.append(f"u{i},u{i}.wav,{label},spk{(i // 4) % 4}")
    (root / "manifest.csv").write_text("\n".join(lines) + "\n")
    import sercache.extract.runner  # noqa: F401 - binds sercache.extract to the subpackage: it must still work

    report = sercache.extract(root, corpus="csv", out=tmp_path / "cache", streams=("mfcc", "logmel"))
    assert report.stored == 64  # 32 utterances x 2 streams
    run, results = sercache.train(tmp_path / "cache", "logreg", out=tmp_path / "run", labels="iemocap4",
                                  streams={"audio": "mfcc,logmel"}, seeds=1)
    assert len(results) == 4 and all(r["ok"] for r in results)  # lospk over 4 speakers: the default for CSV
    loaded = sercache.load_run(run)
    assert loaded.config["protocol"] == "lospk" and len(loaded.metrics) == 4
    assert loaded.metrics.ua.mean() > 0.9  # four tones, far apart
    table = sercache.report([run], n_boot=50)
    assert "logreg" in table and "protocol: lospk" in table
