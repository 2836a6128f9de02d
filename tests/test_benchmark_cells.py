"""benchmarks/cells.py and benchmarks/gradient_decay.py on a tiny corpus: real training, scoring
and gradients, a table and a picture."""
import json
import os

import pytest

from test_benchmarks import run_script, text8_like

pytestmark = pytest.mark.slow     # whole training processes and scripts


@pytest.mark.parametrize("script", ["cells.py", "gradient_decay.py"])
def test_cell_benchmarks_say_how_to_get_a_missing_corpus(script, tmp_path):
    env = dict(os.environ, CHARLM_BENCH_CORPUS=str(tmp_path / "absent.txt.gz"))
    proc = run_script(script, env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "absent.txt.gz" in lines[0], proc.stderr


def test_cells_table_and_gradient_decay_picture(tmp_path):
    corpus = tmp_path / "text8-like.txt"
    corpus.write_text(text8_like(40_000))
    runs = tmp_path / "runs"
    proc = run_script("cells.py", "--corpus", corpus, "--cells", "rnn", "--hidden", 8, "--time-limit", 1,
                      "--train", 30_000, "--heldout", 5_000, "--keep", runs)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert [r["cell"] for r in rows] == ["rnn"]
    # a second's training on 27 symbols (start-up included: maybe one step): near log2(27) = 4.75
    # bits, far from good
    assert all(2.0 < r["heldout_bpc"] < 5.5 and r["steps"] > 0 for r in rows), rows
    assert "| rnn | 8 |" in proc.stdout and "--cell CELL --hidden H" in proc.stdout

    pytest.importorskip("matplotlib")
    picture = tmp_path / "decay.png"
    proc = run_script("gradient_decay.py", "--corpus", corpus, "--run", f"rnn={runs / 'rnn-8'}", "--untrained",
                      "--max-k", 6, "--positions", 2, "--batch", 4,
                      "--burn-in", 5, "--text-start", 30_000, "--output", picture)
    assert proc.returncode == 0, proc.stderr[-2000:]
    curves = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(curves) == {"rnn", "rnn untrained"}
    assert curves["rnn"] != curves["rnn untrained"]
    for curve in curves.values():
        assert len(curve) == 7 and curve[0] == pytest.approx(1.0)
        assert all(0 < v < 10 for v in curve)
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_budget_benchmark_trains_each_preset_for_its_time(tmp_path):
    text = tmp_path / "general.txt"
    text.write_text(text8_like(30_000).replace(" the ", " The\n"))
    proc = run_script("budget.py", "--text", text, "--presets", "fast", "small", "--time-limit", 6,
                      "--flags", "--hidden 16 --batch-size 8 --unrollings 8 --layers 1 --embedding-size 8",
                      "--keep", tmp_path / "runs")
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(proc.stdout.strip().splitlines()[-1])["rows"]
    assert [r["preset"] for r in rows] == ["fast", "small"]
    for r in rows:
        assert r["steps"] > 0, r
        # (a tiny run's first block includes its compile, so its one record may come after 6 s)
        assert 1.0 < r["bits"] < 6.0 and r["curve"] and r["curve"][-1][0] <= r["wall"], r
    assert "| fast | 6 s |" in proc.stdout and "--preset fast --corpus TRAIN" in proc.stdout
    # each row gives the dropout its run trained with (small's preset: 0.1; fast's, --auto-dropout's choice)
    for r in rows:
        config = json.loads((tmp_path / "runs" / f"{r['preset']}-6s-seed1" / "config.json").read_text())
        assert r["dropout"] == config["model"]["dropout"]
    assert rows[1]["dropout"] == 0.1
