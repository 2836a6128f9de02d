#!/usr/bin/env python
"""charlm's command line: a thin click layer over the ``charlm`` package.

Results go to stdout, logs and progress to stderr.  A user mistake ends in one ``Error:`` line and
exit status 1 (click's own usage errors: status 2); TensorFlow is imported only by the commands
that need it, so ``--help`` is instant.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time

STARTED = time.perf_counter()     # the process's start-up: where its command's --time-limit begins

import click  # noqa: E402

from charlm import __version__  # noqa: E402
from charlm.config import CELLS, DROPOUT_MASKS, INITS, PRESETS, SCHEDULES, SOFTMAXES  # noqa: E402
from charlm.fast.precision import PRECISIONS  # noqa: E402
from charlm.data.splits import SPLITS  # noqa: E402
from charlm.data.vocab import BYTE_FALLBACKS, OOVS  # noqa: E402
from charlm.errors import CharlmError  # noqa: E402

POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


def _quiet_tensorflow():
    from charlm.runtime import import_tensorflow_quietly

    import_tensorflow_quietly()


def user_errors(fn):
    """Turn CharlmError (and a few OS errors) into one clear line and a non-zero exit."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CharlmError as e:
            raise click.ClickException(str(e))
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except OSError as e:
            raise click.ClickException(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="charlm", message="%(prog)s %(version)s")
@click.pass_context
def main(ctx):
    """charlm: character- and bigram-level LSTM language models (ud730 assignment 6)."""
    # run() (the command as a process) hands over the process's start; a caller in a longer-lived
    # process (CliRunner, a script calling main) gets each command counted from its own start
    ctx.ensure_object(dict).setdefault("started", time.perf_counter())


def _started() -> float:
    """When this command began (a ``time.perf_counter()``), for its --time-limit."""
    return click.get_current_context().find_root().obj["started"]


# -- train ----------------------------------------------------------------------------------------
def _separator(ctx, param, value):
    """--separator with the backslash escapes a shell cannot type (\\n, \\t, \\\\)."""
    if value is None:
        return None
    try:
        return value.encode("latin-1", "backslashreplace").decode("unicode_escape")
    except UnicodeDecodeError as e:
        raise click.BadParameter(f"bad escape in {value!r} ({e.reason})")


def _cutoffs(ctx, param, value):
    """--softmax-cutoffs 2000,6000 -> [2000, 6000]."""
    if value is None:
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"give token counts separated by commas, e.g. 2000,6000 (got {value!r})")


def _corpus_options(fn):
    """--corpus (repeatable), --separator, --skip-bad-files: for train and prepare."""
    fn = click.option("--skip-bad-files", is_flag=True, default=None,
                      help="Leave out (and count) files that are not UTF-8 text instead of stopping.")(fn)
    fn = click.option("--separator", default=None, callback=_separator,
                      help="Text between the corpus's files (default: one newline; \\n and \\t understood).")(fn)
    return fn


@main.command()
@click.option("--corpus", multiple=True, help="Text file (.txt/.gz/.bz2/.xz/.zip), folder (its files, "
              "recursively, in sorted order), glob or dataset name (text8, enwik8, tinyshakespeare); "
              "repeat it to join several. Default: text8, downloaded on first use.")
@_corpus_options
@click.option("--preset", type=click.Choice(sorted(PRESETS)), default="ud730", show_default=True,
              help="Named settings; explicit flags override them.")
@click.option("--model", "kind", type=click.Choice(["char", "bigram"]), default=None,
              help="Token kind: characters, or non-overlapping character pairs (ud730 problem 2).")
@click.option("--byte-fallback", type=click.Choice(BYTE_FALLBACKS), default=None,
              help="256 UTF-8 byte tokens for the characters rarer than --min-char-count and any "
                   "character unseen in training. auto (default): on when the text has such rare "
                   "characters and at least 256 distinct ones.")
@click.option("--min-char-count", type=POSITIVE, default=None,
              help="With byte tokens, a character seen fewer times (default 10) is read as its bytes.")
@click.option("--min-pair-count", type=POSITIVE, default=None,
              help="A large alphabet's bigram pair becomes a token if the training text's cut takes it "
                   "at least this often (default 20).")
@click.option("--max-tokens", type=POSITIVE, default=None,
              help="At most this many tokens in a large alphabet's bigram vocabulary, the most frequent "
                   "pairs first (default 16384).")
@click.option("--hidden", type=POSITIVE, default=None, help="LSTM units per layer.")
@click.option("--layers", type=POSITIVE, default=None, help="Stacked LSTM layers.")
@click.option("--embedding-size", type=NON_NEGATIVE, default=None,
              help="Input embedding width (0: one-hot; --preset fast: 64, or 256 over an adaptive softmax).")
@click.option("--dropout", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="Dropout on non-recurrent connections, in [0, 1).")
@click.option("--weight-drop", type=click.FloatRange(0.0, 1.0, max_open=True), default=None,
              help="DropConnect on the recurrent weights, one mask per batch (AWD-LSTM), in [0, 1).")
@click.option("--dropout-mask", type=click.Choice(DROPOUT_MASKS), default=None,
              help="A new dropout mask every time step (Zaremba et al.) or one per sequence (variational).")
@click.option("--auto-dropout/--no-auto-dropout", default=None,
              help="Choose the dropout from how often the budget will read the training text "
                   "(the fast preset's; an explicit --dropout turns it off).")
@click.option("--init", type=click.Choice(INITS), default=None,
              help="Weight initialisation: the notebook's truncated normal (mean -0.1), uniform +-0.08, "
                   "or Glorot-uniform with orthogonal recurrent weights (the ud730 preset's).")
@click.option("--cell", type=click.Choice(CELLS), default=None,
              help="Recurrent cell: LSTM (default), GRU, or the plain Elman RNN.")
@click.option("--softmax", type=click.Choice(SOFTMAXES), default=None,
              help="Output layer: full, adaptive (a head over the frequent tokens, narrower tails for "
                   "the rare ones; exact), or auto (adaptive above 1,000 tokens; the fast preset's).")
@click.option("--softmax-cutoffs", callback=_cutoffs, default=None, metavar="N,N",
              help="Adaptive softmax: where the head ends and each tail after it (token ranks by "
                   "training count, e.g. 2000,6000; default: from the vocabulary's size).")
@click.option("--batch-size", type=POSITIVE, default=None)
@click.option("--unrollings", type=POSITIVE, default=None, help="Tokens per truncated-BPTT window.")
@click.option("--steps", type=POSITIVE, default=None, help="Total training steps of the run.")
@click.option("--time-limit", type=click.FloatRange(min=0), default=None,
              help="Seconds the whole run may take (a resumed run counts its earlier sessions); "
                   "it saves and reports at the end. With --schedule budget the learning rate "
                   "decays over this time.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="Matmul inputs in bfloat16 (weights, state and loss stay float32) or float32; "
                   "auto (default): bfloat16 where the CPU has AMX/AVX512_BF16 or on a recent GPU, "
                   "for models not compiled with XLA.")
@click.option("--optimizer", type=click.Choice(["sgd", "adam"]), default=None)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--schedule", type=click.Choice(SCHEDULES), default=None,
              help="step: x --decay-rate every --decay-steps (ud730); budget: --warmup-steps of "
                   "warm-up, then a linear decay to zero that ends with the --time-limit (or --steps).")
@click.option("--warmup-steps", type=NON_NEGATIVE, default=None, help="Warm-up of the budget schedule.")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=None,
              help="Adam only: decoupled weight decay of the weight matrices (AdamW).")
@click.option("--decay-rate", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Learning rate factor every --decay-steps.")
@click.option("--decay-steps", type=POSITIVE, default=None)
@click.option("--staircase/--no-staircase", default=None, help="Decay in steps (ud730) or smoothly.")
@click.option("--clip", type=click.FloatRange(min=0), default=None, help="Global gradient norm (0: off).")
@click.option("--valid-size", type=NON_NEGATIVE, default=None,
              help="Characters of the corpus held out for validation.")
@click.option("--valid-split", type=click.Choice(SPLITS), default=None,
              help="Hold them out from the corpus's start (ud730), or spread through it in 20 "
                   "chunks (at most a tenth of the text).")
@click.option("--seed", type=int, default=None)
@click.option("--log-every", type=POSITIVE, default=None)
@click.option("--sample-every", type=NON_NEGATIVE, default=None, help="0: no samples while training.")
@click.option("--checkpoint-every", type=NON_NEGATIVE, default=None)
@click.option("--checkpoint-dir", type=click.Path(), default=None,
              help="Run folder (default: checkpoints/<preset>-<model>-<time>).")
@click.option("--resume", is_flag=True, help="Continue the run in --checkpoint-dir.")
@click.option("--init-from", type=click.Path(), default=None,
              help="Start a new run from this run's weights (fine-tuning): the same model shape, "
                   "new characters get new rows.")
@click.option("--keep-best/--no-keep-best", default=None,
              help="Keep the checkpoint of the lowest validation loss in best/ (beside the newest three).")
@click.option("--threads", type=NON_NEGATIVE, default=None,
              help="CPU threads per op (0: all; default: 1 for models up to 128 units, else all).")
@click.option("--distribute", type=click.Choice(["none", "mirrored", "multi-worker"]), default=None,
              help="Data-parallel training with tf.distribute: mirrored over GPUs or --replicas "
              "CPU devices; multi-worker over the cluster in TF_CONFIG (the chief writes the run).")
@click.option("--replicas", type=POSITIVE, default=None,
              help="Replicas for --distribute mirrored (default: every GPU, or 1 CPU device).")
@user_errors
def train(corpus, preset, kind, checkpoint_dir, resume, init_from, **options):
    """Train a model; checkpoints, metrics and TensorBoard logs go to the run folder."""
    _quiet_tensorflow()
    from charlm.training.trainer import train as run

    result = run(corpus=_corpus(corpus), checkpoint_dir=checkpoint_dir, resume=resume, preset=preset,
                 kind=kind, started=_started(), init_from=init_from, **options)
    summary = {"run": str(result.run_dir), "step": result.step, "stopped": result.stopped,
               "seconds": round(result.seconds, 2), "loss": result.last_loss,
               "valid_perplexity": result.valid_perplexity}
    click.echo(json.dumps(summary))


def _corpus(specs):
    """--corpus given 0, 1 or more times: None, the spec, or the list of them."""
    specs = list(specs or ())
    return None if not specs else specs[0] if len(specs) == 1 else specs


# -- prepare -------------------------------------------------------------------------------------------
@main.command()
@click.argument("corpus", nargs=-1, required=True)
@_corpus_options
@user_errors
def prepare(corpus, separator, skip_bad_files):
    """Stream CORPUS (files, folders, globs, dataset names) once into the memory-mapped cache that
    train reads ($CHARLM_PREPARED_DIR, default ~/.cache/charlm/prepared)."""
    from charlm.data.prepared import prepare as run

    began = time.perf_counter()
    result = run(_corpus(corpus), separator="\n" if separator is None else separator,
                 skip_bad_files=bool(skip_bad_files))
    seconds = time.perf_counter() - began
    size = sum(f["size"] for f in result.meta["files"])
    for skipped in result.meta["skipped"]:
        click.echo(f"skipped: {skipped['why']}", err=True)
    click.echo(json.dumps({"folder": str(result.folder), "files": len(result.meta["files"]),
                           "skipped": len(result.meta["skipped"]), "characters": result.characters,
                           "vocabulary": result.vocab.size, "dtype": result.vocab.dtype.name,
                           "prepared": result.fresh, "seconds": round(seconds, 3),
                           "mb_per_s": round(size / 1e6 / max(seconds, 1e-9), 1) if result.fresh else None}))


def _checkpoint_option(fn):
    fn = click.option("--best", is_flag=True, help="Use the run's best checkpoint (train --keep-best).")(fn)
    return click.option("--checkpoint", type=click.Path(), default=None,
                        help="Run folder (default: the newest under checkpoints/).")(fn)


def _resolve_checkpoint(path):
    from charlm.run.checkpoint import find_latest_run

    return path if path is not None else str(find_latest_run())


OOV_OPTION = click.option("--oov", type=click.Choice(OOVS), default=None,
                          help="Characters the model never saw: stop with an error, skip them, or read "
                               "them as UTF-8 byte tokens (the default for a model with byte tokens; "
                               "error for one without).")


# -- sample ----------------------------------------------------------------------------------------
@main.command()
@_checkpoint_option
@click.option("--length", type=NON_NEGATIVE, default=500, show_default=True, help="Characters to generate.")
@click.option("--prime", default=None, help="Text to start from (printed before the generated text).")
@click.option("--prime-file", type=click.Path(), default=None, help="Read the prime from this file instead.")
@click.option("--temperature", type=click.FloatRange(min=0), multiple=True, show_default="1.0",
              help="Softmax temperature; 0 picks the likeliest token (greedy). Repeat it for "
                   "samples at each (labelled on stderr).")
@click.option("--top-k", type=NON_NEGATIVE, default=0, help="Sample among the k likeliest tokens (0: all).")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Nucleus sampling: among the likeliest tokens that hold this much probability.")
@click.option("--stop", multiple=True, help="End a sample after the first occurrence of this text "
              "(repeatable; --length stays the cap).")
@click.option("--seed", type=int, default=None, help="Same seed, same text.")
@click.option("--num-samples", type=POSITIVE, default=1, show_default=True)
@click.option("--dynamic", is_flag=True, help="Adapt the model to the prime first, as eval --dynamic "
              "does to the text it scores (the run folder is not changed); needs a prime.")
@OOV_OPTION
@user_errors
def sample(checkpoint, best, length, prime, prime_file, temperature, top_k, top_p, stop, seed, num_samples, dynamic,
           oov):
    """Generate text as it is made: stdout holds the prime followed by LENGTH characters (or
    up to a --stop) per sample."""
    if prime is not None and prime_file is not None:
        raise click.UsageError("give either --prime or --prime-file, not both")
    if prime_file is not None:
        prime = _read_prime_file(prime_file)
    _quiet_tensorflow()
    from charlm.run.checkpoint import load_model
    from charlm.use.sampling import check_options, run_sampler

    temperatures = temperature or (1.0,)
    for t in temperatures:          # bad values end before the model is loaded
        check_options(length, t, top_k, top_p, num_samples, stop)
    if dynamic and not prime:
        raise click.UsageError("--dynamic adapts the model to a prime: give --prime or --prime-file")

    path = _resolve_checkpoint(checkpoint)
    click.echo(f"sampling from {path}", err=True)
    sampler = run_sampler(*load_model(path, best=best), dynamic=dynamic, oov=oov)
    out = click.get_text_stream("stdout")
    try:
        for n, t in enumerate(temperatures):
            if len(temperatures) > 1:
                click.echo(f"temperature {t:g}", err=True)
            # the first sample is written as it comes; the others (made beside it) follow it
            # (kept from the first pieces on: the stream checks --num-samples before it yields)
            rest = None
            out.write("\n" if n else "")       # a blank line between samples, as below
            for pieces in sampler.stream(prime or "", length, t, top_k, seed, num_samples, oov, top_p, stop):
                out.write(pieces[0])
                out.flush()
                rest = pieces[1:] if rest is None else [r + p for r, p in zip(rest, pieces[1:])]
            out.write("\n" + "".join(f"\n{text}\n" for text in rest))
            out.flush()
    except BrokenPipeError:         # the reader has gone (`| head`): stop quietly
        _drop_stdout()


def _drop_stdout():
    """Point stdout at /dev/null, so the exit's flush of a closed pipe raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _read_prime_file(path) -> str:
    """The prime in a text file (as any corpus file: plain or compressed, UTF-8); an empty file
    is the empty prime."""
    from charlm.data.corpora import read_text_file

    return read_text_file(path, "--prime-file", empty_ok=True)


# -- eval ----------------------------------------------------------------------------------------------
@main.command("eval")
@_checkpoint_option
@click.option("--text-file", type=click.Path(), default=None, help="Text to score (any corpus format).")
@click.option("--split", type=click.Choice(["valid", "train"]), default=None,
              help="Score the run's own validation or training split instead.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last stdout line.")
@click.option("--streams", type=POSITIVE, default=None,
              help="Score a long text as this many pieces side by side, each after reading the 256 "
                   "tokens before it (default: one per 4096 tokens, up to 256); 1: one state throughout.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="Matmul inputs of the side-by-side pieces, as for train.")
@click.option("--dynamic", is_flag=True,
              help="Dynamic evaluation: after scoring each segment, one gradient step on it (the run "
                   "folder is not changed); prints the static figure too.")
@click.option("--dynamic-lr", type=float, default=None, help="--dynamic: RMS-normalised step size.")
@click.option("--dynamic-decay", type=float, default=None, help="--dynamic: pull back towards the trained weights.")
@click.option("--dynamic-segment", type=POSITIVE, default=None, help="--dynamic: tokens between updates.")
@OOV_OPTION
@user_errors
def eval_(checkpoint, best, text_file, split, as_json, streams, precision, dynamic, dynamic_lr, dynamic_decay,
          dynamic_segment, oov):
    """Perplexity and bits per character of a text, the LSTM state carried through it."""
    if text_file and split:
        raise click.UsageError("give either --text-file or --split, not both")
    if not text_file and not split:
        split = "valid"
    _quiet_tensorflow()
    from charlm.use.scoring import evaluate

    path = _resolve_checkpoint(checkpoint)
    tuning = dict(learning_rate=dynamic_lr, decay=dynamic_decay, segment=dynamic_segment)
    if not dynamic and any(v is not None for v in tuning.values()):
        raise click.UsageError("--dynamic-lr, --dynamic-decay and --dynamic-segment need --dynamic")
    score, tokenizer = evaluate(path, text_file=text_file or None, split=split, oov=oov, streams=streams,
                                precision=precision, best=best, dynamic=dynamic, **(tuning if dynamic else {}))
    figures = score.as_dict(tokenizer)
    if as_json:
        click.echo(json.dumps(figures))
    else:
        if dynamic:
            click.echo(f"static nats/char {figures['static_nats_per_char']:.4f}  "
                       f"({figures['dynamic']['static_seconds']:.1f} s)")
            click.echo(f"dynamic          {figures['dynamic']['seconds']:.1f} s, "
                       f"{figures['gain_nats_per_char']:+.4f} nats/char below static")
        click.echo(f"characters       {figures['characters']:,}")
        click.echo(f"nats per char    {figures['nats_per_char']:.4f}")
        click.echo(f"bits per char    {figures['bits_per_char']:.4f}")
        click.echo(f"perplexity       {figures['perplexity']:.4f}")
        if "tokens" in figures:
            click.echo(f"tokens           {figures['tokens']:,}")
            click.echo(f"nats per token   {figures['nats_per_token']:.4f}")
            click.echo(f"perplexity/token {figures['perplexity_per_token']:.4f}")


# -- export ------------------------------------------------------------------------------------------
@main.command()
@_checkpoint_option
@click.argument("out", required=False, type=click.Path())
@click.option("--output", type=click.Path(), default=None, help="The same as OUT.")
@click.option("--format", "format_", default="savedmodel", show_default=True,
              help="savedmodel (a folder for TensorFlow), web (a folder with a page that generates "
                   "in the browser with TensorFlow.js) or tflite (a LiteRT file with a step signature).")
@click.option("--weights", default="float32", show_default=True, help="web: float32 or float16 weights.")
@click.option("--tfjs-url", default=None, help="web: the address of a local node_modules folder holding "
              "@tensorflow/tfjs and @tensorflow/tfjs-backend-wasm (default: the jsDelivr CDN).")
@user_errors
def export(checkpoint, best, out, output, format_, weights, tfjs_url):
    """Write the run to OUT (which must not exist) as a SavedModel, a web page or a LiteRT file."""
    if (out is None) == (output is None):
        raise click.UsageError("give the output path once: OUT or --output OUT")
    _quiet_tensorflow()
    from charlm.use.export import export as write

    click.echo(str(write(_resolve_checkpoint(checkpoint), out or output, format_, weights, tfjs_url, best=best)))


# -- datasets ----------------------------------------------------------------------------------------
@main.group()
def datasets():
    """List or download the named corpora."""


@datasets.command("list")
@user_errors
def datasets_list():
    """The named datasets, their sizes and whether they are cached."""
    from charlm.data.corpora import DATASETS, dataset_path

    for name, ds in DATASETS.items():
        cached = "cached" if dataset_path(name).exists() else "not downloaded"
        click.echo(f"{name:<16} {ds.size:>12,} bytes  {cached:<15} {ds.description}")


@datasets.command("download")
@click.argument("name")
@click.option("--data-dir", type=click.Path(), default=None, help="Cache folder (default: $CHARLM_DATA_DIR, else datasets/ "
              "in a source checkout, else ~/.cache/charlm/datasets).")
@click.option("--mirror", default=None, help="Base URL replacing the official one (also $CHARLM_MIRROR).")
@user_errors
def datasets_download(name, data_dir, mirror):
    """Download NAME into the cache (checked by size and sha256)."""
    from charlm.data.corpora import download

    click.echo(str(download(name, data_dir=data_dir, mirror=mirror)))


# -- mirror (ud730 problem 3) --------------------------------------------------------------------------
@main.group()
def mirror():
    """A sequence-to-sequence LSTM that mirrors every word of a line (ud730 problem 3)."""


@mirror.command("train")
@click.option("--corpus", default=None, help="Text file or dataset name (default: text8); its last "
              "--heldout words are never trained on.")
@click.option("--checkpoint-dir", type=click.Path(), default=None,
              help="Run folder (default: checkpoints/mirror-lstm-<time>).")
@click.option("--time-limit", type=click.FloatRange(min=0), default=None,
              help="Seconds the whole run may take (a resumed run counts its earlier sessions); "
                   "it saves and reports at the end.")
@click.option("--steps", type=POSITIVE, default=None, help="Total training steps of the run.")
@click.option("--seed", type=int, default=None)
@click.option("--resume", is_flag=True, help="Continue the run in --checkpoint-dir exactly.")
@click.option("--hidden", type=POSITIVE, default=None, help="Decoder units (the encoder: half each way).")
@click.option("--embedding-size", type=POSITIVE, default=None)
@click.option("--attention", type=click.Choice(["general", "dot"]), default=None)
@click.option("--batch-size", type=POSITIVE, default=None)
@click.option("--learning-rate", type=click.FloatRange(min=0, min_open=True), default=None)
@click.option("--max-chars", type=click.IntRange(min=2), default=None, help="Longest training line.")
@click.option("--max-words", type=POSITIVE, default=None, help="Most words in a training line.")
@click.option("--random-fraction", type=click.FloatRange(0, 1), default=None,
              help="Share of training lines made of random letter strings.")
@click.option("--heldout", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="Fraction of the corpus's words, at its end, never trained on.")
@click.option("--log-every", type=POSITIVE, default=None)
@click.option("--checkpoint-every", type=NON_NEGATIVE, default=None)
@user_errors
def mirror_train(corpus, checkpoint_dir, resume, **options):
    """Train the encoder-decoder; checkpoints, metrics and TensorBoard logs go to the run folder."""
    _quiet_tensorflow()
    from charlm.mirror.trainer import train as run

    result = run(corpus=corpus, checkpoint_dir=checkpoint_dir, resume=resume, started=_started(), **options)
    click.echo(json.dumps({"run": str(result.run_dir), "step": result.step, "stopped": result.stopped,
                           "seconds": round(result.seconds, 2), "loss": result.loss,
                           "token_accuracy": result.token_accuracy}))


@mirror.command("run")
@click.option("--checkpoint", type=click.Path(), required=True, help="A `mirror train` run folder.")
@click.option("--text", default=None, help="The line to mirror (default: every line of stdin).")
@OOV_OPTION
@user_errors
def mirror_run(checkpoint, text, oov):
    """Print the mirrored line; without --text, one output line per stdin line, in order."""
    _quiet_tensorflow()
    from charlm.mirror.use import Mirror

    model = Mirror(checkpoint)
    if text is not None:
        for line in model.lines(text.split("\n"), oov=oov or "error"):
            click.echo(line)
        return
    batch = []
    stdin = click.get_text_stream("stdin")
    while True:      # a batch at a time, so a pipe gets answers before its input ends
        line = stdin.readline()
        if line:
            batch.append(line.rstrip("\r\n") if line.endswith("\n") else line)
        if batch and (not line or len(batch) >= 256 or not _more_waiting(stdin)):
            for out in model.lines(batch, oov=oov or "error"):
                click.echo(out)
            sys.stdout.flush()
            batch = []
        if not line:
            break


def _more_waiting(stream) -> bool:
    """Whether more input is ready now (a file or a busy pipe), so lines can be batched."""
    import select

    try:
        return bool(select.select([stream], [], [], 0)[0])
    except (OSError, ValueError, TypeError):       # not a real file (tests): read it all first
        return True


@mirror.command("eval")
@click.option("--checkpoint", type=click.Path(), required=True, help="A `mirror train` run folder.")
@click.option("--text-file", type=click.Path(), required=True, help="Held-out text to cut lines from.")
@click.option("--lines", type=POSITIVE, default=2000, show_default=True, help="Lines to cut and score.")
@click.option("--seed", type=int, default=0, show_default=True, help="How the lines are cut.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object as the last stdout line.")
@OOV_OPTION
@user_errors
def mirror_eval(checkpoint, text_file, lines, seed, as_json, oov):
    """Per-character, per-word and exact-line accuracy on lines of 1-10 words cut from a text."""
    _quiet_tensorflow()
    from charlm.data.corpora import read_text_file
    from charlm.mirror.use import evaluate

    figures = evaluate(checkpoint, read_text_file(text_file, "text file to mirror"), lines=lines, seed=seed, oov=oov or "error")
    if as_json:
        click.echo(json.dumps(figures))
    else:
        click.echo(f"lines            {figures['lines']:,}")
        for name in ("char", "word", "line"):
            click.echo(f"{name + ' accuracy':<17}{figures[name + '_accuracy']:.4f}")


def run():
    """Run the command, then leave without TensorFlow's interpreter teardown.

    Once TensorFlow is loaded, a normal interpreter exit spends ~0.9 s tearing it down (measured
    here: 0.84-0.96 s against 0.03 s with ``os._exit``), after the command has finished.  By then
    everything charlm writes is closed (checkpoints are written synchronously, the TensorBoard
    writer is closed, exports are complete), so only the standard streams need flushing.
    """
    try:
        main(obj={"started": STARTED})      # a --time-limit counts the process's start-up too
        code = 0
    except SystemExit as e:
        code = e.code
    if "tensorflow" not in sys.modules:
        sys.exit(code)
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
