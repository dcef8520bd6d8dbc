#!/usr/bin/env python3
"""Run one libFuzzer target for a bounded time from a copy of its seed corpus.

run_fuzz.py FUZZER SEED_DIR WORK_CORPUS_DIR CRASH_DIR [extra libFuzzer args]

- The seeds are copied into WORK_CORPUS_DIR (in the build tree) and libFuzzer
  adds what it finds there: the repository is never written, and the corpus
  grows from run to run of the same build tree.
- RDM_FUZZ_SECONDS (default 60) is -max_total_time; RDM_FUZZ_TIMEOUT (default
  10) the seconds one input may take before it counts as a hang.
- Exit 0 when the time ran out without a finding; 1 on a crash, sanitizer
  report, leak or per-input timeout (the input is saved in CRASH_DIR as
  <target>-crash-..., -leak-..., -timeout-...; reproduce with
  `FUZZER FILE`). libFuzzer's own error exit code is 77, which meson
  would call a skip, so it is set to 1 here.
"""
import os
import shutil
import subprocess
import sys


def main():
    fuzzer, seeds, work, crashes = sys.argv[1:5]
    extra = sys.argv[5:]
    seconds = int(os.environ.get("RDM_FUZZ_SECONDS", "60"))
    per_input = int(os.environ.get("RDM_FUZZ_TIMEOUT", "10"))
    name = os.path.basename(fuzzer)
    os.makedirs(work, exist_ok=True)
    os.makedirs(crashes, exist_ok=True)
    copied = 0
    for f in sorted(os.listdir(seeds)):
        src = os.path.join(seeds, f)
        dst = os.path.join(work, f)
        if os.path.isfile(src) and not os.path.exists(dst):
            shutil.copyfile(src, dst)
            copied += 1
    env = dict(os.environ)
    # Sanitizer reports end the run (libFuzzer then saves the input).
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=1:allocator_may_return_null=1")
    supp = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ubsan.supp")
    env.setdefault("UBSAN_OPTIONS", f"print_stacktrace=1:halt_on_error=1:suppressions={supp}")
    cmd = [fuzzer, f"-max_total_time={seconds}", f"-timeout={per_input}",
           "-error_exitcode=1", "-timeout_exitcode=1", "-print_final_stats=1",
           "-rss_limit_mb=2048", f"-artifact_prefix={os.path.join(crashes, name)}-",
           *extra, work]
    print(f"run_fuzz: {len(os.listdir(work))} inputs in {work} ({copied} new seeds); "
          f"{seconds} s", flush=True)
    print("run_fuzz:", " ".join(cmd), flush=True)
    try:
        # The fuzzer stops itself after -max_total_time; this bound only
        # catches a run that cannot stop (a hang libFuzzer cannot see).
        rc = subprocess.call(cmd, env=env, timeout=2 * seconds + 120)
    except subprocess.TimeoutExpired:
        print(f"run_fuzz: {name} did not stop within {2 * seconds + 120} s", flush=True)
        return 1
    if rc != 0:
        print(f"run_fuzz: {name} failed (exit {rc}); the input is in {crashes}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
