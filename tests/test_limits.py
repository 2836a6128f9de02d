"""Reliability at the limits: bigram vocabularies that scale, memory estimates, a full disk, one
writer per run folder.  Real training runs, real files, real filesystems and real signals."""
import json
import random
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import ROOT, make_text, run_cli as cli

CLI = [sys.executable, str(ROOT / "cli.py")]     # the commands whose test is about the process
TINY = ["--hidden", "16", "--batch-size", "8", "--unrollings", "8", "--optimizer", "adam",
        "--learning-rate", "0.01", "--log-every", "10", "--sample-every", "0", "--valid-size", "200"]


def assert_clean_error(proc, *words):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("Error:"), proc.stderr[-2000:]
    for w in words:
        assert w in last, (w, last)
    return last


def cjk_text(n: int, distinct: int = 3000, seed: int = 0) -> str:
    """Text over ``distinct`` CJK characters, Zipf-like frequencies (common pairs repeat)."""
    rng = random.Random(seed)
    alphabet = [chr(0x4E00 + k) for k in range(distinct)]
    weights = [1.0 / (k + 1) for k in range(distinct)]
    return "".join(rng.choices(alphabet, weights, k=n))


# --------------------------------------------------------------------------- bigram vocabularies

def greedy_reference(tok, ids):
    """The sparse cut, one position at a time."""
    v = tok.vocab.size
    token_of = {int(a) * v + int(b): v + k for k, (a, b) in
                enumerate(zip(tok.first[v:], tok.second[v:]))}
    out, i = [], 0
    while i < len(ids):
        key = int(ids[i]) * v + int(ids[i + 1]) if i + 1 < len(ids) else None
        if key in token_of:
            out.append(token_of[key])
            i += 2
        else:
            out.append(int(ids[i]))
            i += 1
    return out


def test_dense_layout_is_kept_for_small_alphabets():
    """text8's 27 symbols: exactly the 729 tokens a * 27 + b, and config.json is unchanged."""
    from charlm.data.vocab import Tokenizer, Vocabulary

    vocab = Vocabulary(" abcdefghijklmnopqrstuvwxyz")
    ids = vocab.encode(make_text(5000, seed=2))
    tok = Tokenizer.for_ids("bigram", vocab, ids)
    assert not tok.sparse and tok.num_tokens == 729 and tok.to_dict() == {}
    assert tok.tokens(ids).tolist() == (ids[:-1:2].astype(int) * 27 + ids[1::2]).tolist()
    old = Tokenizer.from_dict("bigram", vocab, {})        # a config.json written before pair lists
    assert old.num_tokens == 729 and np.array_equal(old.tokens(ids), tok.tokens(ids))


@settings(max_examples=60, deadline=None)
@given(st.integers(70, 200), st.integers(0, 4000), st.integers(0, 3000), st.sampled_from([5, 8, 1 << 22]),
       st.booleans(), st.integers(0, 2**31))
def test_sparse_cut_is_the_greedy_cut(distinct, train_len, text_len, chunk, search, seed):
    """Vectorised, chunked, by table or by binary search: the same cut as the one-by-one loop."""
    import charlm.data.vocab as vocab_module
    from charlm.data.vocab import Tokenizer, Vocabulary

    rng = np.random.default_rng(seed)
    vocab = Vocabulary("".join(chr(0x4E00 + k) for k in range(distinct)))
    skew = 1.0 / np.arange(1, distinct + 1)
    draw = lambda n: rng.choice(distinct, size=n, p=skew / skew.sum()).astype(vocab.dtype)  # noqa: E731
    tok = Tokenizer.for_ids("bigram", vocab, draw(train_len))
    if not tok.sparse:
        assert tok.num_tokens == distinct ** 2
        return
    saved = vocab_module.CHUNK, vocab_module.PAIR_TABLE_MAX
    vocab_module.CHUNK, vocab_module.PAIR_TABLE_MAX = chunk, 0 if search else saved[1]
    try:
        tok = Tokenizer.from_dict("bigram", vocab, tok.to_dict())     # through config.json's form
        ids = draw(text_len)
        tokens = tok.tokens(ids)
    finally:
        vocab_module.CHUNK, vocab_module.PAIR_TABLE_MAX = saved
    assert tokens.tolist() == greedy_reference(tok, ids)
    assert tok.leftover(ids).size == 0 and tokens.dtype == tok.dtype
    assert np.array_equal(tok.chars(tokens), ids)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


@pytest.fixture(scope="module")
def cjk_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("cjk")
    (root / "train.txt").write_text(cjk_text(30000, seed=1), encoding="utf-8")
    (root / "heldout.txt").write_text(cjk_text(1001, seed=2), encoding="utf-8")
    run = root / "run"
    # every pair of the training text's cut a token, no byte tokens: the sparse layout at its largest
    # (the default vocabulary of such a text: tests/test_byte_fallback.py)
    # (a 25-token window: no XLA compile of the training block, which these tests are not about)
    proc = cli("train", "--corpus", root / "train.txt", "--checkpoint-dir", run, "--model", "bigram",
               "--embedding-size", "8", "--steps", "40", "--byte-fallback", "off", "--min-pair-count", "1",
               *TINY, "--unrollings", "25")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run


def test_cjk_bigram_model_has_a_sensible_size(cjk_run):
    from charlm.run.checkpoint import load_model, read_run_config

    info = read_run_config(cjk_run)
    vocab, tok = info["vocabulary"], info["tokenizer"]
    pairs = info["tokens"]["pairs"]
    assert vocab.size > 2000 and tok.sparse
    # the pairs of the training text's cut (at most 14,900 of its 29,800 characters), not V**2 = 4M+
    assert tok.num_tokens == vocab.size + len(pairs) and len(pairs) <= 14900
    assert tok.num_tokens < vocab.size ** 2 / 100
    model, loaded, _ = load_model(cjk_run)
    assert model.num_tokens == loaded.num_tokens == tok.num_tokens
    train = (cjk_run.parent / "train.txt").read_text(encoding="utf-8")[200:]
    assert loaded.tokens(vocab.encode(train)).size == len(train) // 2    # every training pair is a token


def test_cjk_bigram_samples_exact_lengths(cjk_run):
    from charlm.run.checkpoint import load_model
    from charlm.use.sampling import Sampler

    sampler = Sampler(*load_model(cjk_run)[:2])
    for prime in ("", "一", "一丁", "一丁七三"):            # odd primes leave their last character open
        for length in (1, 2, 7, 50):
            texts = sampler.generate(prime=prime, length=length, seed=length, num_samples=3)
            assert all(t.startswith(prime) and len(t) == len(prime) + length for t in texts), (prime, length)
        greedy = sampler.generate(prime=prime, length=9, temperature=0)
        assert greedy == sampler.generate(prime=prime, length=9, temperature=0)


def test_cjk_bigram_eval_scores_every_character_once(cjk_run):
    from charlm.run.checkpoint import load_model
    from charlm.use.scoring import Scorer, evaluate

    text = (cjk_run.parent / "heldout.txt").read_text(encoding="utf-8")
    proc = cli("eval", "--checkpoint", cjk_run, "--text-file", cjk_run.parent / "heldout.txt", "--json", "--oov", "skip")
    assert proc.returncode == 0, proc.stderr[-2000:]
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    model, tok, _ = load_model(cjk_run)
    ids = tok.vocab.encode(text, oov="skip")
    tokens = tok.tokens(ids)
    assert figures["characters"] == ids.size and figures["tokens"] == tokens.size
    assert ids.size < 2 * tokens.size              # unseen pairs fell back to single characters
    assert 0 < figures["nats_per_char"] < 20 and np.isfinite(figures["perplexity"])
    # per token: the same total over the cut, whatever its mix of pairs and single characters
    assert figures["nats_per_token"] * tokens.size == pytest.approx(figures["nats_per_char"] * ids.size)
    score, _ = evaluate(cjk_run, text=text, oov="skip")
    assert score.nats == pytest.approx(Scorer(model, tok).score_ids(ids).nats)


EXPORT_LOADER = r"""
import json, sys
import tensorflow as tf
m = tf.saved_model.load(sys.argv[1])
out = {}
for prime in ("", "一", "一丁", "一丁七"):
    for length in (1, 6, 31):
        s = m.generate(prime=tf.constant(prime), length=tf.constant(length), temperature=tf.constant(1.0))
        out[f"{prime}|{length}"] = s.numpy().decode("utf-8")
out["score"] = float(m.score(text=tf.constant(sys.argv[2])))
print(json.dumps(out))
"""


@pytest.mark.slow
def test_cjk_bigram_export(cjk_run, tmp_path):
    from charlm.use.export import export
    from charlm.use.scoring import evaluate

    out = export(cjk_run, tmp_path / "saved")
    held = (cjk_run.parent / "heldout.txt").read_text(encoding="utf-8")[:301]
    proc = subprocess.run([sys.executable, "-c", EXPORT_LOADER, str(out), held], capture_output=True,
                          text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    for key, text in got.items():
        if key != "score":
            prime, length = key.split("|")
            assert text.startswith(prime) and len(text) == len(prime) + int(length), key
    score, _ = evaluate(cjk_run, text=held, oov="skip")
    assert got["score"] == pytest.approx(score.nats_per_char, rel=1e-4)


# --------------------------------------------------------------------------- memory

def test_huge_hidden_ends_in_one_line(tmp_path):
    proc = cli("train", "--corpus", ROOT / "tests" / "conftest.py", "--valid-size", "0", "--hidden", 40000,
               "--checkpoint-dir", tmp_path / "absent" / "never-made")
    last = assert_clean_error(proc, "memory", "--hidden", "is there")
    assert "GB" in last
    assert not (tmp_path / "absent").exists()        # neither the run folder nor the parent it lacked is left


def test_huge_bigram_vocabulary_ends_in_one_line(tmp_path):
    """20,000 distinct characters, 200,000 of them, every pair seen kept (--min-pair-count 1, no
    cap that binds): ~90,000 bigram tokens; 50 x 1000 positions of their logits need ~50 GB.
    (The default settings keep this text's vocabulary to a few thousand tokens.)"""
    from charlm.errors import CharlmError
    from charlm.training.trainer import train

    with pytest.raises(CharlmError) as e:
        train(text=cjk_text(200000, distinct=20000, seed=3), checkpoint_dir=tmp_path / "run", kind="bigram",
              batch_size=1000, unrollings=50, log=lambda m: None, steps=1, byte_fallback="off",
              min_pair_count=1, max_tokens=10**6)
    for words in ("output logits", "--batch-size or --unrollings", "--model char", "GB of memory"):
        assert words in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()


def test_sampling_sizes_end_in_one_line(cjk_run):
    from charlm.errors import CharlmError
    from charlm.use.sampling import sample

    with pytest.raises(CharlmError, match="--length"):
        sample(cjk_run, length=10**12)
    with pytest.raises(CharlmError, match="--num-samples"):
        sample(cjk_run, length=5, num_samples=10**9)
    # the command too: the line comes before any text is kept for the samples
    assert_clean_error(cli("sample", "--checkpoint", cjk_run, "--length", 5, "--num-samples", 10**9),
                       "--num-samples")


SIZES = st.one_of(st.integers(1, 6), st.integers(10**4, 10**7), st.integers(10**7, 10**40))


@settings(max_examples=12, deadline=None)
@given(hidden=SIZES, layers=SIZES, batch=SIZES, unrollings=SIZES, embedding=st.one_of(st.just(0), SIZES))
def test_no_size_ends_in_a_traceback(tmp_path_factory, monkeypatch_module, hidden, layers, batch, unrollings,
                                     embedding):
    """Whatever sizes a user types: a trained step or one CharlmError line (64 MB allowed here)."""
    from charlm.errors import CharlmError
    from charlm.training.trainer import train

    monkeypatch_module.setenv("CHARLM_MEMORY_LIMIT", str(64 << 20))
    run = tmp_path_factory.mktemp("sizes") / "run"
    try:
        result = train(text=make_text(3000, seed=1), checkpoint_dir=run, hidden=hidden, layers=layers,
                       batch_size=batch, unrollings=unrollings, embedding_size=embedding, steps=1,
                       log_every=1, sample_every=0, checkpoint_every=0, valid_size=0, log=lambda m: None)
        assert result.step == 1
    except CharlmError as e:
        assert "\n" not in str(e)
    finally:
        monkeypatch_module.delenv("CHARLM_MEMORY_LIMIT")


RSS = r"""
import json, sys
from charlm.runtime import import_tensorflow_quietly
import_tensorflow_quietly()
from charlm.run.resources import training_memory
from charlm.training.trainer import train
from conftest import make_text
text = make_text(200000, seed=1)
status = lambda key: int([l for l in open("/proc/self/status") if l.startswith(key)][0].split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:     # the peak from here on: start-up's own peak left out
    f.write("5")
base = status("VmRSS:")
train(text=text, checkpoint_dir=sys.argv[1], hidden=768, batch_size=128, unrollings=20, optimizer="adam",
      steps=1, log_every=1, sample_every=0, checkpoint_every=0, valid_size=0, precision="float32",
      log=lambda m: None)
print(json.dumps({"growth": status("VmHWM:") - base,
                  "estimate": training_memory(len(set(text)), 768, 1, 0, 128, 20, "adam", 0).total}))
"""


@pytest.mark.slow
def test_estimate_is_near_the_real_peak(tmp_path):
    """A model whose memory is its activations and weights (768 units, 128 x 20): the estimate is
    within a factor of 3 of how much the process grew while training it."""
    proc = subprocess.run([sys.executable, "-c", RSS, str(tmp_path / "run")], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env={**__import__("os").environ,
                                                      "PYTHONPATH": f"{ROOT}:{ROOT / 'tests'}"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    print(got)
    assert got["growth"] / 3 < got["estimate"] < got["growth"] * 3, got


# --------------------------------------------------------------------------- a full disk

@pytest.fixture(scope="module")
def char_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("chars") / "corpus.txt"
    path.write_text(make_text(20000, seed=5, sentences=True))
    return path


def mount_tmpfs(folder, size_bytes):
    """A real small filesystem, or the reason there is none here."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(folder)],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as e:
        return str(e)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


def file_size_limit(limit):
    """preexec_fn: writes past ``limit`` bytes fail with EFBIG (SIGXFSZ ignored, so no signal)."""
    def apply():
        import resource
        import signal

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


@pytest.fixture(scope="module")
def saved_twice(char_corpus, tmp_path_factory):
    """A run with checkpoints at steps 10 and 20 (Adam, 64 units: ~100 KB each; a 25-character
    window: no XLA compile of the training block, here or in the resumed run)."""
    first = tmp_path_factory.mktemp("saved") / "first"
    proc = cli("train", "--corpus", char_corpus, "--checkpoint-dir", first, "--steps", 20, "--hidden", "64",
               "--batch-size", "8", "--unrollings", "25", "--optimizer", "adam", "--learning-rate", "0.01",
               "--log-every", "10", "--sample-every", "0", "--valid-size", "200", "--checkpoint-every", "10")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return first


@pytest.mark.slow
@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_full_disk_during_checkpoint_save(saved_twice, tmp_path, how):
    """A save that cannot finish: one line (folder, step, free space, last good checkpoint), no
    half-written files, the last good checkpoint loads and the run resumes from it elsewhere."""
    import shutil

    from charlm.run.checkpoint import load_model

    first = saved_twice
    data = max((first / "ckpt").glob("ckpt-20.data-*"), key=lambda p: p.stat().st_size).stat().st_size
    if how == "tmpfs":
        used = sum(p.stat().st_size for p in first.rglob("*") if p.is_file())
        disk = tmp_path / "disk"
        why = mount_tmpfs(disk, (used + data // 2) // 4096 * 4096 + 4096 * 8)
        if why:
            pytest.skip(f"cannot mount a tmpfs here ({why}); the rlimit variant covers the failing write")
        run, limit = disk / "run", None
    else:
        run, limit = tmp_path / "run", file_size_limit(data // 2)
    try:
        shutil.copytree(first, run)
        proc = subprocess.run([*CLI, "train", "--resume", "--checkpoint-dir", str(run), "--steps", "30"],
                              capture_output=True, text=True, timeout=300, cwd=ROOT, preexec_fn=limit)
        last = assert_clean_error(proc, "cannot save the checkpoint of step 30", str(run / "ckpt"), "free",
                                  f"last good checkpoint is {run / 'ckpt' / 'ckpt-20'}")
        assert ("No space left on device" if how == "tmpfs" else "File too large") in last
        left = sorted(p.name for p in (run / "ckpt").iterdir())
        assert not [n for n in left if "temp" in n or n.startswith("ckpt-30")], left
        model, _, info = load_model(run)
        assert info["checkpoint_path"].endswith("ckpt-20")
        assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)
        if how == "tmpfs":
            return
        from charlm.training.trainer import train

        again = tmp_path / "again"                 # with room again, the run goes on from step 20
        shutil.copytree(run, again)
        lines = []
        assert train(checkpoint_dir=again, resume=True, steps=30, log=lines.append).step == 30
        assert f"resumed {again} at step 20" in lines
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(tmp_path / "disk")], timeout=30)


def test_failing_metrics_and_tensorboard_writes_warn_once(char_corpus, tmp_path):
    """Files of at most 12 KB: metrics.jsonl and the event file outgrow it, the checkpoint does not;
    training finishes, says so once for each, and metrics.jsonl holds whole lines only.  (A
    25-character window: no XLA compile of the training block, which this test is not about.)"""
    run = tmp_path / "run"
    # prepared beforehand: the corpus's own cache would outgrow the limit too
    assert cli("prepare", char_corpus).returncode == 0
    proc = subprocess.run([*CLI, "train", "--corpus", str(char_corpus), "--checkpoint-dir", str(run),
                           "--hidden", "4", "--batch-size", "8", "--unrollings", "25", "--steps", "100",
                           "--log-every", "1", "--sample-every", "0", "--valid-size", "0",
                           "--checkpoint-every", "50"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT, preexec_fn=file_size_limit(12000))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["step"] == 100
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning: cannot write")]
    assert len(warnings) == 2, proc.stderr[-3000:]
    assert any("metrics.jsonl" in w and "without metrics" in w and "File too large" in w for w in warnings)
    assert any("logs" in w and "without TensorBoard logs" in w for w in warnings)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert 5 < len(records) < 100 and [r["step"] for r in records] == list(range(1, len(records) + 1))
    from charlm.run.checkpoint import load_model

    assert load_model(run)[2]["checkpoint_path"].endswith("ckpt-100")


# --------------------------------------------------------------------------- one writer per run

def wait_for(predicate, seconds=180):
    import time

    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
def test_one_writer_readers_read_while_it_writes_and_sigkill_frees_the_lock(char_corpus, tmp_path):
    import signal
    import time

    from charlm.run.checkpoint import load_model
    from charlm.errors import CharlmError
    from charlm.use.sampling import sample
    from charlm.training.trainer import train

    run = tmp_path / "run"
    writer = subprocess.Popen([*CLI, "train", "--corpus", str(char_corpus), "--checkpoint-dir", str(run),
                               "--steps", "100000000", *TINY[:-6], "--log-every", "2", "--sample-every", "0",
                               "--valid-size", "0", "--checkpoint-every", "2"],
                              cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: (run / "ckpt" / "checkpoint").exists()), "training never saved"
        holder = f"process {writer.pid}"
        assert holder in (run / "train.lock").read_text()
        assert_clean_error(cli("train", "--resume", "--checkpoint-dir", run, "--steps", 10**9),
                           "being trained by another process", holder)
        with pytest.raises(CharlmError, match=f"being trained by another process \\({holder} on "):
            train(corpus=str(char_corpus), checkpoint_dir=run, log=lambda m: None)
        # readers take no lock and always get a complete checkpoint, while old ones are deleted
        load_model(run)                  # TensorFlow's first use in this process, not timed
        seen, start = [], time.time()
        while time.time() - start < 5 or len(seen) < 10:
            model, _, info = load_model(run)
            seen.append(int(info["checkpoint_path"].rsplit("-", 1)[1]))
        assert len(set(seen)) > 3 and seen == sorted(seen), seen
        assert len(sample(run, length=20, seed=1)[0]) == 20
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.communicate(timeout=60)
    assert writer.returncode == -signal.SIGKILL
    assert holder in (run / "train.lock").read_text()       # the dead holder's file stays, unlocked
    step = int(load_model(run)[2]["checkpoint_path"].rsplit("-", 1)[1])
    assert train(checkpoint_dir=run, resume=True, steps=step + 4, log=lambda m: None).step == step + 4
    assert f"process {__import__('os').getpid()}" in (run / "train.lock").read_text()
