"""Continued MLM pretraining, fine-tuning, publishing and inference for clinical ModernBERT encoders.

Packages, by lifecycle (each opens with a README.md naming its stages in order):

    common/     shared machinery: typed configs from YAML, errors, run files, runtime, CLI, attention, loading
    data/       source files -> documents -> packed rows
    pretrain/   recipe -> model and tokenizer -> phases on the Trainer -> summary and plot
    finetune/   task config -> examples and splits -> windows -> Trainer per seed -> results over seeds
    publish/    a run's records -> model card -> staged folder -> the Hub
    inference/  a file of notes -> packed batches -> embeddings or predictions

Imports point one way: the scripts (train_mlm.py, finetune.py) use the lifecycles; pretrain, finetune and
inference use data and common; publish reads what pretrain and finetune record; nothing imports back
(tests/unit/common/test_imports.py fails on a circle; `python tests/import_graph.py` prints the graph).
"""
