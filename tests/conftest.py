import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# runs in tests compile afresh and leave nothing in ~/.cache (tests that want the cache set it)
os.environ.setdefault("CHARLM_XLA_CACHE", "off")
# and train on TensorFlow's kernels: compiling costs ~5 s a run, most of the suite's time; the
# tests of the compiled path ask for it (the with_xla fixture, CHARLM_XLA=auto in a subprocess)
os.environ.setdefault("CHARLM_XLA", "off")
# prepared corpora go to a folder of this test process's own (its subprocesses inherit it)
if "CHARLM_PREPARED_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["CHARLM_PREPARED_DIR"] = tempfile.mkdtemp(prefix="charlm-prepared-")
    atexit.register(shutil.rmtree, os.environ["CHARLM_PREPARED_DIR"], True)


def pytest_configure(config):
    """In a process that runs tests (an xdist worker, or the only one with -n 0), TensorFlow gets
    one thread per op, as a `charlm train` process of the suite's small models sets it
    (charlm.runtime.auto_threads): commands run in-process (run_cli, CliRunner) can no longer
    change it once TensorFlow has run an op, and two threads per op on two busy cores slow them."""
    if os.environ.get("PYTEST_XDIST_WORKER") or not config.getoption("numprocesses", None):
        from charlm.runtime import import_tensorflow_quietly, set_threads

        import_tensorflow_quietly()
        set_threads(1)


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))



@pytest.fixture
def with_xla(monkeypatch):
    """Training compiles small models with XLA, as it does for users (CHARLM_XLA's default)."""
    monkeypatch.setenv("CHARLM_XLA", "auto")


def run_cli(*args, input=None, env=None) -> subprocess.CompletedProcess:
    """A cli.py command run in this process with click's CliRunner, answered as ``subprocess.run``
    answers: ``returncode``, ``stdout`` and ``stderr`` apart.  No TensorFlow start-up per command.

    An exception the command does not turn into its exit (``Error:`` line, status 1; usage: 2)
    is raised here (``catch_exceptions=False``): a traceback fails the test.  ``env`` holds only
    the variables to change (None: unset) while the command runs.  Commands whose test is about a
    process (signals, two writers, rlimits, start-up, TensorFlow's v1 mode) keep ``subprocess``.
    """
    from click.testing import CliRunner

    from cli import main

    argv = [str(a) for a in args]
    result = CliRunner().invoke(main, argv, input=input, env=env, catch_exceptions=False)
    return subprocess.CompletedProcess(["cli.py", *argv], result.exit_code, result.stdout, result.stderr)


WORDS = ("the of and to in a is that for it as was with be by on not he i this are or his from at "
         "which but have an they you were her she there one all we their been has when who will more "
         "no if out so said what up its about into than them can only other new some could time these "
         "two may then do first any my now such like our over man me even most made after also did "
         "many before must through back years where much your way well down should because each just "
         "those people mr how too little state good very make world still own see men work long get "
         "here between both life being under never day same another know while last might us great "
         "old year off come since against go came right used take three").split()


def make_text(n_chars: int, seed: int = 0, sentences: bool = False) -> str:
    """English-like text from a word list (no shared data is used in tests)."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n_chars:
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 12))]
        s = " ".join(words)
        if sentences:
            s = s.capitalize() + rng.choice([".", ".", ",", "?", "!"]) + ("\n" if rng.random() < 0.2 else "")
            if rng.random() < 0.1:
                s = rng.choice(["ROMEO: ", "JULIET: ", "MERCUTIO: "]) + s
        out.append(s)
        size += len(s) + 1
    return " ".join(out)[:n_chars]


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(60000, seed=1, sentences=True), encoding="utf-8")
    return path
