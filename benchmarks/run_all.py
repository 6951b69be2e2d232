"""Run every benchmark and rewrite the performance tables from what the scripts print.

    python benchmarks/run_all.py [--smoke] [--only bench_train.py ...] [--render-only]

Every script in ``benchmarks/`` (not the ``_`` helper modules, not this file) runs in a
subprocess, one after another, in full or with ``--smoke``; ``gpu_check.py`` gets
``--dry-run`` where there is no CUDA device. Each one's output goes to the terminal and to
``runs/benchmarks/NAME.log``. From its last ``RESULT`` line and its ``TARGET`` lines (see
``_common.target``), with the machine, the date, the run time and the load average around
it, an entry is written to ``benchmarks/results.json``; ``--only`` reruns some scripts and
keeps the other entries (``--render-only`` runs nothing). The tables between the
``run_all`` marker comments of ``benchmarks/README.md`` (every figure, per script) and
``README.md`` (every target) are then rendered from that file and from
``results_0.1.json`` (llavac 0.1's figures, for comparison), so no figure in them is typed
by hand.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results.json"
BASELINE = HERE / "results_0.1.json"
LOGS = REPO / "runs" / "benchmarks"
BEGIN, END = "<!-- run_all:begin -->", "<!-- run_all:end -->"
WITHOUT_CUDA = {"gpu_check.py": ["--dry-run"]}  # flags a script needs on a CPU-only machine
TARGET_LINE = re.compile(r"^TARGET (\S+) (<=|>=) (\S+): (\S+)(?: (MET|MISSED))?$")


def benchmark_scripts() -> list[Path]:
    """The scripts run_all runs (and the test suite smoke-runs): every ``benchmarks/*.py``
    but the ``_`` helper modules and this runner."""
    return sorted(p for p in HERE.glob("*.py")
                  if not p.name.startswith("_") and p.name != Path(__file__).name)


def machine() -> dict:
    import torch
    import transformers

    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return {"cpu": cpu, "cores": os.cpu_count(),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__}


def parse_output(lines: list[str]) -> tuple[dict[str, str], list[dict]]:
    """``(figures of the last RESULT line, TARGET lines)`` of a script's output."""
    results = [line for line in lines if line.startswith("RESULT ")]
    figures = dict(part.split("=", 1) for part in results[-1].split()[1:]) if results else {}
    targets = []
    for line in lines:
        match = TARGET_LINE.match(line)
        if match:
            name, op, bound, value, verdict = match.groups()
            targets.append({"name": name, "op": op, "bound": bound, "value": value,
                            "verdict": verdict or "n/a"})
    return figures, targets


def run(script: Path, smoke: bool, cuda: bool, timeout_s: float) -> dict:
    """Run one script, echoing its output; its entry for results.json."""
    command = [sys.executable, str(script.relative_to(REPO))]
    command += ["--smoke"] if smoke else []
    command += [] if cuda else WITHOUT_CUDA.get(script.name, [])
    LOGS.mkdir(parents=True, exist_ok=True)
    log_path = LOGS / f"{script.stem}.log"
    print(f"\n### {' '.join(command[1:])} (log: {log_path.relative_to(REPO)})", flush=True)
    load_before, start = os.getloadavg()[0], time.monotonic()
    lines = []
    with log_path.open("w") as log, subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"}) as process:
        timer = threading.Timer(timeout_s, process.kill)  # a hung script ends with exit -9
        timer.start()
        for line in process.stdout:
            sys.stdout.write(line)
            log.write(line)
            lines.append(line.rstrip("\n"))
        exit_code = process.wait()
        timer.cancel()
    figures, targets = parse_output(lines)
    return {"command": " ".join(command[1:]), "exit_code": exit_code, "smoke": smoke,
            "seconds": round(time.monotonic() - start), "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machine": machine(), "result": figures, "targets": targets}


def duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def machine_line(m: dict) -> str:
    device = f"{m['gpu']}, " if m.get("gpu") else ""
    return (f"{device}{m['cpu']}, {m['cores']} cores; Python {m['python']}, torch {m['torch']}, "
            f"transformers {m['transformers']}")


def run_line(entry: dict) -> str:
    status = "" if entry["exit_code"] == 0 else f" **exit code {entry['exit_code']}**"
    smoke = " **smoke run: the figures mean nothing**" if entry["smoke"] else ""
    return (f"`{entry['command']}`, {duration(entry['seconds'])} to {entry['date']}, load "
            f"average {entry['load_before']:.1f} before / {entry['load_after']:.1f} after"
            f"{status}{smoke}")


def target_text(target: dict) -> str:
    return f"{target['op']} {target['bound']}"


def figures_section(results: dict, baseline: dict) -> str:
    """Per script: how it ran, then every RESULT figure, its target and llavac 0.1's."""
    machines = {machine_line(entry["machine"]) for entry in results.values()}
    out = ["Machine: " + "; ".join(sorted(machines)) + "."]
    if "_source" in baseline:
        out.append(f"Column 0.1: {baseline['_source']}.")
    for script, entry in results.items():
        targets = {t["name"]: t for t in entry["targets"]}
        old = baseline.get(script, {})
        out += ["", f"**{script}**: {run_line(entry)}", "",
                "| figure | measured | target | | 0.1 |", "|---|---:|---|---|---:|"]
        for name, value in entry["result"].items():
            t = targets.get(name)
            verdict = t["verdict"] if t else ""
            out.append(f"| `{name}` | {value} | {target_text(t) if t else ''} | {verdict} "
                       f"| {old.get(name, '')} |")
        if not entry["result"]:
            out.append("| (no RESULT line: see the log) | | | | |")
    return "\n".join(out)


def targets_section(results: dict) -> str:
    """Every target of every script, for the top-level README."""
    machines = {machine_line(entry["machine"]) for entry in results.values()}
    dates = sorted(entry["date"][:10] for entry in results.values())
    out = [f"Measured {dates[0]}" + (f" to {dates[-1]}" if dates[-1] != dates[0] else "")
           + " on " + "; ".join(sorted(machines)) + ", shared with other jobs (load average "
           + ", ".join(f"{entry['load_before']:.1f}" for entry in results.values())
           + " at the start of each script)."
           + (" **Smoke runs: the figures mean nothing.**"
              if any(entry["smoke"] for entry in results.values()) else ""), "",
           "| script | figure | measured | target | |", "|---|---|---:|---|---|"]
    for script, entry in results.items():
        for t in entry["targets"]:
            out.append(f"| `{script}` | `{t['name']}` | {t['value']} | {target_text(t)} "
                       f"| {t['verdict']} |")
    return "\n".join(out)


def rewrite(path: Path, body: str) -> None:
    """Replace the text between the run_all markers of ``path``."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"run_all: error: {path} has no {BEGIN} ... {END} markers")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    note = "<!-- generated by benchmarks/run_all.py from benchmarks/results.json: do not edit -->"
    path.write_text(f"{head}{BEGIN}\n{note}\n\n{body}\n\n{END}{tail}", encoding="utf-8")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="every script with --smoke")
    parser.add_argument("--only", nargs="+", default=None, metavar="SCRIPT",
                        help="run these scripts (file names); keep the others' results")
    parser.add_argument("--render-only", action="store_true",
                        help="run nothing: rewrite the tables from the results file")
    parser.add_argument("--timeout-s", type=float, default=3600.0, help="per script")
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--readmes", type=Path, nargs=2, default=[HERE / "README.md",
                                                                  REPO / "README.md"],
                        metavar=("FIGURES", "TARGETS"),
                        help="the files whose marked tables are rewritten")
    args = parser.parse_args(argv)
    import torch

    scripts = benchmark_scripts()
    unknown = set(args.only or ()) - {p.name for p in scripts}
    if unknown:
        parser.error(f"--only: no such benchmark {', '.join(sorted(unknown))}")
    keep = (args.only or args.render_only) and args.results.exists()
    results = json.loads(args.results.read_text()) if keep else {}
    for script in [] if args.render_only else scripts:
        if args.only is None or script.name in args.only:
            results[script.name] = run(script, args.smoke, torch.cuda.is_available(),
                                       args.timeout_s)
            args.results.write_text(json.dumps(results, indent=1) + "\n")
    results = {name: results[name] for name in sorted(results)}
    args.results.write_text(json.dumps(results, indent=1) + "\n")
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    figures_readme, targets_readme = args.readmes
    rewrite(figures_readme, figures_section(results, baseline))
    rewrite(targets_readme, targets_section(results))
    failed = [name for name, entry in results.items() if entry["exit_code"] != 0]
    print(f"\nrun_all: {len(results) - len(failed)} of {len(results)} scripts exited 0"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"; tables rewritten in {figures_readme} and {targets_readme}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
