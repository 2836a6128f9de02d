"""Run configuration: what the model is (``ModelConfig``) and how it is trained (``TrainConfig``).

Both are plain dataclasses saved as JSON in the checkpoint folder, so ``sample``/``eval`` rebuild
the model from the folder alone.  Presets are named overrides of these defaults; explicit flags
override a preset.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from charlm.errors import CharlmError
from charlm.fast.precision import PRECISIONS
from charlm.data.splits import SPLITS
from charlm.data.vocab import BYTE_FALLBACKS


# Weight initialisations: "notebook", ud730's truncated normal (mean -0.1, sd 0.1); "uniform",
# +-0.08; "orthogonal", Glorot-uniform input and output weights with orthogonal recurrent rows
# (Keras' LSTM defaults).
INITS = ("notebook", "uniform", "orthogonal")
# Recurrent cells: the LSTM, the GRU and the Elman RNN (charlm.nn.cells).
CELLS = ("lstm", "gru", "rnn")
# Learning-rate schedules (charlm.training.optim): "step", ud730's decay by decay_rate every decay_steps;
# "budget", a short warm-up then a linear decay to zero that ends with the run's budget (the
# time limit, or the step count).
SCHEDULES = ("step", "budget")
# Dropout masks: "step", a new mask at every time step (Zaremba et al. 2014); "sequence", one mask
# per batch row for the whole window (variational dropout, Gal & Ghahramani 2016), which draws
# far fewer random numbers.
DROPOUT_MASKS = ("step", "sequence")
# Output layers (charlm.nn.softmax): "auto" is adaptive above AUTO_TOKENS tokens, resolved by the
# trainer once it knows the vocabulary (config.json keeps the choice).
SOFTMAXES = ("full", "adaptive", "auto")


@dataclass
class ModelConfig:
    kind: str = "char"            # "char" or "bigram" (see charlm.data.vocab)
    hidden: int = 64              # LSTM units per layer; 0: chosen with the softmax (charlm.nn.softmax.WIDTH)
    layers: int = 1
    embedding_size: int = 0       # 0: one-hot input (the notebook's char model); -1: chosen with
                                  # the softmax (charlm.nn.softmax.EMBEDDING)
    dropout: float = 0.0          # on non-recurrent connections only (Zaremba et al. 2014)
    dropout_mask: str = "step"    # a new mask each time step, or one per sequence ("sequence")
    weight_drop: float = 0.0      # DropConnect on the recurrent kernels, one mask per batch (AWD-LSTM)
    init: str = "notebook"        # one of INITS
    cell: str = "lstm"            # one of CELLS (runs saved before the field existed are LSTMs)
    softmax: str = "full"         # one of SOFTMAXES: "full", "adaptive", or "auto" until the
                                  # trainer resolves it from the vocabulary (charlm.nn.softmax)
    softmax_cutoffs: list = dataclasses.field(default_factory=list)   # adaptive: head and tail bounds

    @property
    def drops(self) -> bool:
        """Whether training draws dropout or DropConnect masks."""
        return self.dropout > 0 or self.weight_drop > 0

    def validate(self):
        _check(self.kind in ("char", "bigram"), f"--model must be char or bigram, not {self.kind!r}")
        _check(self.hidden >= 0, f"--hidden must be at least 1, or 0 to choose it from the vocabulary (got {self.hidden})")
        _check(self.layers >= 1, f"--layers must be at least 1 (got {self.layers})")
        _check(self.embedding_size >= -1,
               f"--embedding-size must be 0 (one-hot) or positive (got {self.embedding_size})")
        _check(self.kind == "char" or self.embedding_size != 0,
               "bigram models read an embedding: give --embedding-size > 0")
        _check(0.0 <= self.dropout < 1.0, f"--dropout must be in [0, 1) (got {self.dropout})")
        _check(0.0 <= self.weight_drop < 1.0, f"--weight-drop must be in [0, 1) (got {self.weight_drop})")
        _check(self.dropout_mask in DROPOUT_MASKS,
               f"--dropout-mask must be one of {', '.join(DROPOUT_MASKS)} (got {self.dropout_mask!r})")
        _check(self.init in INITS, f"unknown init {self.init!r}")
        _check(self.cell in CELLS, f"--cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        _check(self.softmax in SOFTMAXES, f"--softmax must be one of {', '.join(SOFTMAXES)}, not {self.softmax!r}")
        cutoffs = self.softmax_cutoffs
        _check(isinstance(cutoffs, list) and all(isinstance(c, int) and c >= 1 for c in cutoffs)
               and cutoffs == sorted(set(cutoffs)),
               f"--softmax-cutoffs must be increasing positive numbers (got {cutoffs!r})")
        _check(not cutoffs or self.softmax != "full", "--softmax-cutoffs apply to --softmax adaptive or auto")
        return self


@dataclass
class TrainConfig:
    corpus: str | list = "text8"  # a file, folder, glob or dataset name, or a list of them
    separator: str = "\n"         # between the corpus's files
    skip_bad_files: bool = False  # leave out (and count) files that are not UTF-8 text
    # the vocabulary of a new run (charlm.data.vocab; a resumed or loaded run keeps its own)
    byte_fallback: str = "auto"   # 256 UTF-8 byte tokens for rare and unseen characters: auto, on, off
    min_char_count: int = 10      # with byte tokens, a character seen fewer times is read as its bytes
    min_pair_count: int = 20      # a sparse bigram pair token needs this many uses in training
    max_tokens: int = 16384       # a sparse bigram vocabulary's tokens at most
    batch_size: int = 64
    unrollings: int = 10          # tokens per truncated-BPTT window
    steps: int = 7001             # total steps of the run (a resumed run continues to this count)
    optimizer: str = "sgd"        # "sgd" or "adam"
    learning_rate: float = 10.0
    schedule: str = "step"        # one of SCHEDULES
    decay_rate: float = 0.1       # "step": learning rate x decay_rate every decay_steps
    decay_steps: int = 5000
    staircase: bool = True
    warmup_steps: int = 0         # "budget": steps of linear warm-up from zero
    weight_decay: float = 0.0     # Adam: decoupled weight decay of the weight matrices (AdamW)
    auto_dropout: bool = False    # choose the dropout from the passes the budget makes over the text
    clip: float = 1.25            # global gradient norm; 0 turns clipping off
    valid_size: int = 1000        # characters of the corpus held out for validation ...
    valid_split: str = "first"    # ... taken from its start, or spread through it (charlm.data.splits)
    seed: int = 0
    log_every: int = 100          # average loss, perplexities, learning rate
    sample_every: int = 1000      # five 80-character samples
    checkpoint_every: int = 1000
    steps_per_call: int = 0       # training steps per compiled call; 0 = automatic
    time_limit: float = 0.0       # seconds of the whole run, resumed sessions included; 0 = none
    precision: str = "auto"       # matmul dtype: auto, float32 or bfloat16 (charlm.fast.precision)
    keep_best: bool = False       # keep the checkpoint of the lowest validation loss in best/

    def validate(self):
        for name in ("batch_size", "unrollings", "steps", "decay_steps", "log_every", "min_char_count",
                     "min_pair_count", "max_tokens"):
            value = getattr(self, name)
            _check(value >= 1, f"--{name.replace('_', '-')} must be at least 1 (got {value})")
        for name in ("valid_size", "sample_every", "checkpoint_every", "steps_per_call", "warmup_steps"):
            value = getattr(self, name)
            _check(value >= 0, f"--{name.replace('_', '-')} must not be negative (got {value})")
        _check(self.byte_fallback in BYTE_FALLBACKS,
               f"--byte-fallback must be one of {', '.join(BYTE_FALLBACKS)} (got {self.byte_fallback!r})")
        _check(self.optimizer in ("sgd", "adam"), f"--optimizer must be sgd or adam, not {self.optimizer!r}")
        _check(self.learning_rate > 0, f"--learning-rate must be positive (got {self.learning_rate})")
        _check(0 < self.decay_rate <= 1, f"--decay-rate must be in (0, 1] (got {self.decay_rate})")
        _check(self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)} (got {self.schedule!r})")
        _check(self.valid_split in SPLITS, f"--valid-split must be one of {', '.join(SPLITS)} (got {self.valid_split!r})")
        _check(self.weight_decay >= 0, f"--weight-decay must not be negative (got {self.weight_decay})")
        _check(self.clip >= 0, f"--clip must not be negative (got {self.clip})")
        _check(self.time_limit >= 0, f"--time-limit must not be negative (got {self.time_limit})")
        _check(self.precision in PRECISIONS,
               f"--precision must be one of {', '.join(PRECISIONS)} (got {self.precision!r})")
        return self


PRESETS: dict[str, dict] = {
    # The ud730 assignment 6 notebook: char model, one-hot input, 64 nodes, batch 64, 10
    # unrollings, SGD 10.0 x0.1 every 5000 steps (staircase), clip 1.25, 7001 steps.  Only the
    # start differs: Glorot/orthogonal weights beat the notebook's draw (mean -0.1) on held-out
    # text in 18 of 20 seeds (benchmarks/README.md, "Quality"); --init notebook restores it.
    "ud730": dict(kind="char", hidden=64, layers=1, embedding_size=0, dropout=0.0, init="orthogonal",
                  batch_size=64, unrollings=10, steps=7001, optimizer="sgd", learning_rate=10.0,
                  decay_rate=0.1, decay_steps=5000, staircase=True, clip=1.25, valid_size=1000),
    # Problem 2: bigram tokens (V**2 of them), an embedding lookup, dropout on the non-recurrent
    # connections.  10 unrollings of bigrams see 20 characters.  The same start as ud730 (better
    # on held-out text in 10 of 10 seeds here).
    "ud730-bigram": dict(kind="bigram", hidden=128, layers=1, embedding_size=128, dropout=0.1,
                         init="orthogonal", batch_size=64, unrollings=10, steps=7001,
                         optimizer="sgd", learning_rate=10.0, decay_rate=0.1, decay_steps=5000,
                         staircase=True, clip=1.25, valid_size=1000),
    # A stronger general-purpose starting point for any text file (char-rnn-like).
    "small": dict(kind="char", hidden=256, layers=2, embedding_size=64, dropout=0.1, init="uniform",
                  batch_size=32, unrollings=50, steps=5000, optimizer="adam", learning_rate=0.002,
                  decay_rate=0.5, decay_steps=2000, staircase=True, clip=5.0, valid_size=10000),
    # The best held-out loss for a time budget on any text (charlm's choice, measured in
    # benchmarks/README.md "Quality per time"): the learning rate is laid over --time-limit.
    "fast": dict(kind="char", hidden=0, layers=1, embedding_size=-1, dropout=0.0, dropout_mask="sequence",
                 auto_dropout=True, init="orthogonal",
                 softmax="auto",
                 batch_size=64, unrollings=50, steps=1_000_000, optimizer="adam", learning_rate=0.008,
                 schedule="budget", warmup_steps=100, clip=5.0, valid_size=20000, valid_split="spread",
                 time_limit=600.0, log_every=200, sample_every=0, checkpoint_every=1000),
}


def _check(ok: bool, message: str):
    if not ok:
        raise CharlmError(message)


def field_names(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def build_configs(preset: str = "ud730", **overrides) -> tuple[ModelConfig, TrainConfig]:
    """Configs from a preset plus explicit overrides (``None`` values mean "not given")."""
    if preset not in PRESETS:
        raise CharlmError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    values = dict(PRESETS[preset])
    unknown = set(overrides) - field_names(ModelConfig) - field_names(TrainConfig)
    if unknown:
        raise TypeError(f"unknown configuration keys: {sorted(unknown)}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    # A bigram model always reads an embedding; give it one if the user switched a char preset.
    if values.get("kind") == "bigram" and not values.get("embedding_size"):
        if overrides.get("embedding_size") is None:
            values["embedding_size"] = 64
    if overrides.get("dropout") is not None and overrides.get("auto_dropout") is None:
        values["auto_dropout"] = False          # a dropout the user gives is the dropout
    model = ModelConfig(**{k: v for k, v in values.items() if k in field_names(ModelConfig)})
    train = TrainConfig(**{k: v for k, v in values.items() if k in field_names(TrainConfig)})
    return model.validate(), train.validate()
