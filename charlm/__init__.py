"""charlm: character- and bigram-level LSTM language models on TensorFlow 2 (ud730 assignment 6).

The Python API (TensorFlow is imported on first use, so ``import charlm`` is cheap)::

    import charlm
    run = charlm.train(corpus="tinyshakespeare", checkpoint_dir="checkpoints/shakespeare",
                       preset="fast", time_limit=300)
    print(charlm.sample("checkpoints/shakespeare", prime="ROMEO:", length=200, seed=1)[0])
    score, _ = charlm.evaluate("checkpoints/shakespeare", split="valid")
    print(score.bits_per_char, score.perplexity)

The package reads in the order the data flows: ``data`` (text -> vocabulary -> tokens ->
batches), ``fast`` (the speed machinery), ``nn`` (cells and the model), ``run`` (the run folder),
``use`` (sampling, scoring, export), ``training``, ``mirror`` (ud730 problem 3).
"""
import importlib

__version__ = "0.1.0"

_API = {
    "train": "training.trainer", "Trainer": "training.trainer", "TrainResult": "training.trainer",
    "sample": "use.sampling", "Sampler": "use.sampling",
    "evaluate": "use.scoring", "Scorer": "use.scoring", "Score": "use.scoring",
    "export": "use.export",
    "load_model": "run.checkpoint", "find_latest_run": "run.checkpoint",
    "CharLM": "nn.model", "LSTMCell": "nn.cells", "GRUCell": "nn.cells", "RNNCell": "nn.cells",
    "BatchGenerator": "data.batches",
    "Vocabulary": "data.vocab", "Tokenizer": "data.vocab",
    "ModelConfig": "config", "TrainConfig": "config", "PRESETS": "config", "build_configs": "config",
    "load_corpus": "data.corpora", "read_text_file": "data.corpora", "download": "data.corpora",
    "prepare": "data.prepared",
    "DATASETS": "data.corpora",
    "CharlmError": "errors",
    "mirror_text": "mirror.use", "train_mirror": "mirror.trainer", "evaluate_mirror": "mirror.use",
    "Mirror": "mirror.use",
}

__all__ = sorted(_API)


def __getattr__(name):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module 'charlm' has no attribute {name!r}")
