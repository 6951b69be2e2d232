"""Every benchmark runs here in its ``--smoke`` mode, so none of them can rot unseen.

A script that imports a moved module or calls a changed signature fails its smoke run; a
new script is in the set as soon as it is in ``benchmarks/`` (it must take ``--smoke`` and
end with a ``RESULT`` line). Smoke runs use the smallest shapes: their figures are not
judged, only that every code path ran. ``run_all.py`` (the runner, not a benchmark) is
tested on its own parts: the scripts it finds, the lines it parses, the tables it writes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
RUNNER = "run_all.py"
SCRIPTS = sorted(p.name for p in BENCHMARKS.glob("*.py")
                 if not p.name.startswith("_") and p.name != RUNNER)
READS_SHARED_DATA = {"bench_data.py", "bench_predict_corpus.py"}


def run_script(script: str, *flags: str, tmp_path: Path) -> subprocess.CompletedProcess:
    # scratch folders land in tmp_path; one thread each: the suite runs two workers on two cores.
    # Ray's session folder stays where it was: its socket paths must fit in 107 bytes
    env = {**os.environ, "TMPDIR": str(tmp_path), "RAY_TMPDIR": tempfile.gettempdir(),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(BENCHMARKS / script), *flags], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)


def result_figures(stdout: str) -> dict[str, str]:
    last = [line for line in stdout.splitlines() if line.strip()][-1]
    assert last.startswith("RESULT "), f"the last line is not a RESULT line: {last!r}"
    return dict(part.split("=", 1) for part in last.split()[1:])


@pytest.mark.slow  # a process per script, each importing torch
@pytest.mark.parametrize("script", SCRIPTS)
def test_every_benchmark_runs_its_smoke_mode_to_a_result_line(script, tmp_path):
    done = run_script(script, "--smoke", tmp_path=tmp_path)
    assert done.returncode == 0, f"{script} --smoke exited {done.returncode}:\n" + (
        done.stdout[-3000:] + done.stderr[-3000:])
    figures = result_figures(done.stdout)
    assert figures, f"{script}: an empty RESULT line"
    has_data = (SHARED_DATA / "mvsa_single" / "labelResultAll.txt").is_file()
    if script in READS_SHARED_DATA and has_data:
        assert figures.get("status") != "skipped", f"{script} skipped though {SHARED_DATA} exists"


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_gpu_check_without_cuda_says_so_in_one_line_and_fails_unless_dry_run(tmp_path):
    done = run_script("gpu_check.py", tmp_path=tmp_path)
    assert done.returncode == 1
    said = [line for line in done.stdout.splitlines() if not line.startswith("==")]
    assert said == ["gpu_check: no CUDA device here; --dry-run runs the same steps on the CPU"]


@pytest.mark.slow  # a process importing torch
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs the real check")
def test_gpu_check_dry_run_plans_the_7b_steps_against_the_card_and_keeps_a_report(tmp_path):
    report = tmp_path / "gpu_check.json"
    done = run_script("gpu_check.py", "--dry-run", "--card-gb", "40", "--steps", "1",
                      "--warmup", "0", "--repeats", "1", "--report", str(report),
                      tmp_path=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.splitlines()[1].startswith("no CUDA device: dry run on the CPU")
    saved = json.loads(report.read_text())
    plans = saved["plan_gb"]
    # batch 16 with checkpointing fits 40 GB; without, the plan halves to a batch that fits
    assert plans["train_ckpt_on_bs16"]["total"] <= 0.9 * 40
    fallback = [key for key in plans if key.startswith("train_ckpt_off_bs")
                and key != "train_ckpt_off_bs16"]
    assert len(fallback) == 1 and plans[fallback[0]]["total"] <= 0.9 * 40
    assert plans["train_ckpt_off_bs16"]["total"] > 0.9 * 40
    assert "TOO BIG for 40 GB" in done.stdout and "80 GB" not in done.stdout
    assert saved["counts_7b"]["lora"] > 0 and saved["result"]["status"] == "dry_run"
    assert saved["result"]["steps_run"] == 5  # two training settings, two scores, generate
    assert result_figures(done.stdout)["plan_score_bs32_gb"] == str(
        round(plans["score_bs32"]["total"], 1))


def load_runner():
    spec = importlib.util.spec_from_file_location("run_all", BENCHMARKS / RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_run_all_runs_the_scripts_the_smoke_test_covers():
    assert [p.name for p in load_runner().benchmark_scripts()] == SCRIPTS


OUTPUT = """== bench_x ==
step 1.0 ms
TARGET speedup >= 1.5: 1.62 MET
TARGET rss_mb <= 20: 31.5 MISSED
TARGET mfu >= 0.4: n/a
RESULT status=early
RESULT speedup=1.62 rss_mb=31.5 mfu=na repeats=3
"""


def entry(runner, output: str = OUTPUT, **changes) -> dict:
    figures, targets = runner.parse_output(output.splitlines())
    return {"command": "benchmarks/bench_x.py", "exit_code": 0, "smoke": False, "seconds": 75,
            "load_before": 2.5, "load_after": 3.25, "date": "2026-01-02 03:04 UTC",
            "machine": {"cpu": "AMD EPYC", "cores": 2, "gpu": None, "python": "3.11.7",
                        "torch": "2.13.0", "transformers": "5.24.0"},
            "result": figures, "targets": targets, **changes}


def test_run_all_takes_the_last_result_line_and_every_target_line():
    runner = load_runner()
    figures, targets = runner.parse_output(OUTPUT.splitlines())
    assert figures == {"speedup": "1.62", "rss_mb": "31.5", "mfu": "na", "repeats": "3"}
    assert [(t["name"], t["op"], t["bound"], t["value"], t["verdict"]) for t in targets] == [
        ("speedup", ">=", "1.5", "1.62", "MET"), ("rss_mb", "<=", "20", "31.5", "MISSED"),
        ("mfu", ">=", "0.4", "n/a", "n/a")]


def test_run_all_rewrites_only_the_marked_tables(tmp_path):
    runner = load_runner()
    results = {"bench_x.py": entry(runner),
               "bench_y.py": entry(runner, "RESULT\n", exit_code=2, smoke=True)}
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\nprose\n{runner.BEGIN}\nold table 9.99\n{runner.END}\nafter\n")
    runner.rewrite(readme, runner.figures_section(results, {"bench_x.py": {"speedup": "1.4"}}))
    text = readme.read_text()
    assert text.startswith("# Title\nprose\n") and text.endswith(f"{runner.END}\nafter\n")
    assert "9.99" not in text
    assert "| `speedup` | 1.62 | >= 1.5 | MET | 1.4 |" in text
    assert "| `repeats` | 3 |  |  |  |" in text
    assert "AMD EPYC, 2 cores; Python 3.11.7, torch 2.13.0, transformers 5.24.0" in text
    assert "1 min 15 s to 2026-01-02 03:04 UTC, load average 2.5 before / 3.2 after" in text
    assert "**exit code 2** **smoke run: the figures mean nothing**" in text
    assert "(no RESULT line: see the log)" in text
    targets = runner.targets_section(results)
    assert "| `bench_x.py` | `rss_mb` | 31.5 | <= 20 | MISSED |" in targets
    assert "(load average 2.5, 2.5 at the start of each script)" in targets


def test_run_all_refuses_a_file_without_markers(tmp_path):
    runner = load_runner()
    readme = tmp_path / "README.md"
    readme.write_text("no markers\n")
    with pytest.raises(SystemExit, match="no <!-- run_all:begin -->"):
        runner.rewrite(readme, "table")
    assert readme.read_text() == "no markers\n"
