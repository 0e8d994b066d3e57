"""The CPU demo (``launch/demo.py``): a needle-in-a-haystack task that MemAug solves and the
no-MemAug control (decayed tokens only) cannot, trained from scratch on the tiny model.

Modules, in data-flow order: ``data`` (mp4 datasets, tokenizer, frozen-tower features),
``dataset`` (features + records -> model Samples, kept-frame bound), ``train`` (the loop),
``evaluate`` (option scoring on held-out videos), ``report`` (table, heatmaps).
"""
