"""Synthetic stand-ins for offline tests, the demo and benchmarks.

* :mod:`.models`: tiny *random* Hugging Face models (HuBERT, wav2vec2 CTC, BERT) saved with
  ``save_pretrained`` and loaded back through the same ``from_pretrained`` path as real ones.
* :mod:`.corpus`: corpora written in real on-disk layouts (IEMOCAP release tree, CSV),
  with speech-like audio whose pitch, energy and rate depend on the emotion.

Nothing here is a real model or real speech; it exists so every code path can run without
the model hub or a licensed corpus.
"""
