"""Time every built-in method's initialization on the embedded default model (SmolLM2-135M).

For rank 8 and 64 on all 7 linear module types: seconds, peak memory (RSS growth during init on CPU,
peak allocated on CUDA), calibration passes, and the ratio to ``lora``'s init time in the same run;
plus exact vs randomized SVD for PiSSA as a ratio.  Calibration batches come from
``initbench_tasks.generators.addition``.  Run: ``python benchmarks/init_time.py [--ranks 8,64] [--methods ...]``.
"""

from __future__ import annotations

import argparse
import copy
import gc
import threading
import time

import psutil
import torch
from initbench_tasks.generators import addition
from tabulate import tabulate

from initbench.inputs.data import tokenize_records
from initbench.inputs.models import linear_params, load_model
from initbench.method.registry import get_method
from initbench.run.attach import attach_and_initialize, lora_settings
from initbench.spec.budget import Budget, CalibrationSpec, Spend
from initbench.spec.suite import LoraSpec, ModelSpec

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def builtin_lora_methods() -> list[str]:
    """Every built-in method that attaches LoRA (not the references ``base`` and ``full-ft``), lora first."""
    from initbench.method.registry import describe_methods

    names = [m.name for m in describe_methods() if m.package == "initbench" and not m.error]
    names = [n for n in names if get_method(n).attaches_lora and get_method(n).trains]
    return ["lora"] + [n for n in names if n != "lora"]


class PeakRSS:
    """Samples this process's resident set size in a thread; ``peak - start`` is the init's growth."""

    def __init__(self, every: float = 0.01):
        self.proc, self.every, self.peak, self._stop = psutil.Process(), every, 0, threading.Event()

    def __enter__(self):
        self.start = self.peak = self.proc.memory_info().rss
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.every)

    def __exit__(self, *exc):
        self._stop.set()
        self.thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


def time_init(name, pristine, tokenizer, examples, rank, calib, device):
    method = get_method(name)
    lora = lora_settings(LoraSpec(rank=rank, alpha=2.0 * rank, target_modules=list(TARGETS)), method)
    model = copy.deepcopy(pristine)
    spend = Spend()
    gc.collect()
    error = ""
    with PeakRSS() as mem:
        start = time.perf_counter()
        try:
            attach_and_initialize(
                model,
                tokenizer,
                method,
                lora,
                seed=0,
                examples=examples,
                budget=Budget(steps=100, batch_size=16, max_length=64, calibration=calib),
                lr=1e-3,
                spend=spend,
                base_params=linear_params(pristine),
                device=device,
            )
        except Exception as err:  # a method that cannot init here (missing data, ...)
            error = str(err).split(": ", 1)[-1][:60]
        seconds = time.perf_counter() - start
    del model
    return seconds, (mem.peak - mem.start), spend, error


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", default="8,64")
    parser.add_argument("--methods", default=None, help="comma-separated (default: every built-in LoRA method)")
    parser.add_argument("--calibration-examples", type=int, default=32)
    args = parser.parse_args()
    device = torch.device("cpu")
    loaded = load_model(ModelSpec(source="embedded", id="smollm2-135m-instruct-q4_1"), device)
    data = addition(digits=3, n_train=256, n_validation=8, n_test=8)
    examples = tokenize_records(data["train"], loaded.tokenizer, 64)
    calib = CalibrationSpec(examples=args.calibration_examples, batch_size=8)
    print(
        f"model {loaded.label}, {torch.get_num_threads()} threads, targets {','.join(TARGETS)}, "
        f"calibration {calib.examples} examples x batch {calib.batch_size}"
    )
    time_init("lora", loaded.model, loaded.tokenizer, examples, 8, calib, device)  # warm-up, not reported
    for rank in [int(r) for r in args.ranks.split(",")]:
        rows, lora_seconds = [], None
        for name in args.methods.split(",") if args.methods else builtin_lora_methods():
            seconds, peak, spend, error = time_init(name, loaded.model, loaded.tokenizer, examples, rank, calib, device)
            if name == "lora":
                lora_seconds = seconds
            ratio = f"{seconds / lora_seconds:.1f}x" if lora_seconds and not error else ""
            passes = f"{spend.calibration_forward_passes}F/{spend.calibration_backward_passes}B"
            rows.append(
                [
                    name,
                    f"{seconds:.2f}" if not error else "-",
                    f"{peak / 2**20:.0f}" if not error else "-",
                    passes,
                    spend.calibration_examples,
                    ratio,
                    error,
                ]
            )
            print(f"  r={rank} {name}: {seconds:.2f}s {error}", flush=True)
        print(f"\nrank {rank}")
        print(
            tabulate(
                rows,
                ["method", "init s", "peak +MiB", "calib passes (fwd/bwd)", "calib examples", "vs lora", "note"],
                tablefmt="github",
            )
        )
        times = {r[0]: r[1] for r in rows}
        if "pissa" in times and "pissa-niter-4" in times:
            print(
                f"PiSSA exact / randomized SVD (niter=4) init time: "
                f"{float(times['pissa']) / float(times['pissa-niter-4']):.1f}x\n"
            )


if __name__ == "__main__":
    main()
