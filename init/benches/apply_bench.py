#!/usr/bin/env python3
"""Applier benchmark: 200 jobs across 20 packs against the Nomad test double.

Prints the cold apply time, the no-op re-apply time, the writes the no-op performed
(counted by the double, must be 0) and the applier's peak RSS. Targets (issue 2):
no-op re-apply of 200 jobs under 1 s; applier peak RSS under 30 MB.

Usage: apply_bench.py NOMAD_INIT NOMAD_DOUBLE   (release binaries; `make bench` builds them)
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

PACKS = 20
JOBS_PER_PACK = 10


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(addr, path):
    with urllib.request.urlopen(addr + path, timeout=5) as r:
        return json.load(r)


def write_packs(root):
    """20 packs with one templated job each, declared 10 times: 200 Nomad jobs."""
    packs = os.path.join(root, "packs")
    lines = ['_name = "bench"\n']
    for p in range(PACKS):
        jobs = os.path.join(packs, f"pack{p:02d}", "jobs")
        os.makedirs(jobs)
        with open(os.path.join(jobs, "svc.hcl"), "w") as f:
            f.write(
                'job "{{ jobname }}" {\n'
                "  datacenters = {{ datacenters | json_encode() }}\n"
                '  type = "system"\n'
                '  group "g" {\n'
                '    task "t" {\n'
                '      driver = "raw_exec"\n'
                "      config {\n"
                '        command = "/bin/sh"\n'
                '        args = ["-c", "echo {{ greeting }} from {{ jobname }}; sleep 3600"]\n'
                "      }\n"
                "    }\n"
                "  }\n"
                "}\n"
            )
        lines.append(f'\n[pack{p:02d}]\n_origin = "packs"\n')
        for j in range(JOBS_PER_PACK):
            lines.append(f'[pack{p:02d}.svc-{p:02d}-{j:02d}]\ngreeting = "hello"\n')
    path = os.path.join(root, "set.toml")
    with open(path, "w") as f:
        f.writelines(lines)
    return path


def run_measured(cmd, env):
    """Runs cmd; returns (seconds, peak RSS in KiB, exit code, output)."""
    start = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss, proc.returncode, out.decode(errors="replace")


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    nomad_init, double = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as root:
        port = free_port()
        cfg = os.path.join(root, "agent.json")
        with open(cfg, "w") as f:
            json.dump({"bind_addr": "127.0.0.1", "ports": {"http": port}, "datacenter": "dc1"}, f)
        env = dict(os.environ, NOMAD_DOUBLE_ALLOC_DELAY_MS="0")
        agent = subprocess.Popen([double, "agent", "-config", cfg], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        addr = f"http://127.0.0.1:{port}"
        try:
            for _ in range(100):
                try:
                    get(addr, "/v1/agent/health")
                    break
                except OSError:
                    time.sleep(0.05)
            else:
                sys.exit("benchmark: the Nomad test double did not come up")
            set_path = write_packs(root)
            cmd = [nomad_init, "packs", "apply", set_path, "--nomad-addr", addr,
                   "--cache-dir", os.path.join(root, "cache")]
            run_env = dict(os.environ)
            run_env.pop("NOMAD_TOKEN", None)

            cold_s, cold_rss, code, out = run_measured(cmd, run_env)
            if code != 0:
                sys.exit(f"benchmark: cold apply failed ({code}):\n{out}")
            writes_before = get(addr, "/v1/double/stats")["writes"]
            noop_s, noop_rss, code, out = run_measured(cmd, run_env)
            if code != 0:
                sys.exit(f"benchmark: no-op apply failed ({code}):\n{out}")
            noop_writes = get(addr, "/v1/double/stats")["writes"] - writes_before
            # The same no-op without this machine's record of the jobs (a fresh cache, a
            # PXE boot): every job gets a dry run against Nomad, still no write.
            shutil.rmtree(os.path.join(root, "cache", "applied"))
            writes_before = get(addr, "/v1/double/stats")["writes"]
            unrecorded_s, unrecorded_rss, code, out = run_measured(cmd, run_env)
            if code != 0:
                sys.exit(f"benchmark: no-op apply without the record failed ({code}):\n{out}")
            unrecorded_writes = get(addr, "/v1/double/stats")["writes"] - writes_before
            jobs = len(get(addr, "/v1/jobs"))
        finally:
            agent.terminate()
            agent.wait()

    peak_mb = max(cold_rss, noop_rss, unrecorded_rss) / 1024
    print(f"jobs applied:            {jobs} ({PACKS} packs x {JOBS_PER_PACK} declared jobs)")
    print(f"cold apply:              {cold_s:.3f} s")
    print(f"no-op re-apply:          {noop_s:.3f} s   (target < 1 s: {'ok' if noop_s < 1 else 'MISSED'})")
    print(f"writes in the no-op:     {noop_writes}       (must be 0: {'ok' if noop_writes == 0 else 'MISSED'})")
    print(f"no-op, no local record:  {unrecorded_s:.3f} s, {unrecorded_writes} writes (each job checked for drift with a dry run)")
    print(f"applier peak RSS:        {peak_mb:.1f} MB (target < 30 MB: {'ok' if peak_mb < 30 else 'MISSED'})")
    print(f"last summary:            {out.strip().splitlines()[-1]}")


if __name__ == "__main__":
    main()
