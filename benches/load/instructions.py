#!/usr/bin/env python3
"""Instructions per request of each proxy, counted by callgrind: the repeatable figure.

CPU time per request (benches/load/bench.py) is what users compare, but on a shared 2-core
machine it moves by 10-20 % from one run to the next. `valgrind --tool=callgrind` counts the
instructions a process executes, which for the same binary, configuration and requests is the
same every run, whatever else the machine does. So each change to the request path is measured
here before and after, and by bench.py under load.

For every scenario the proxy runs alone under callgrind; a warm-up fills connections and caches;
the counters are zeroed (`callgrind_control -z`); a fixed number of requests is sent over a fixed
number of keep-alive connections; the counters are dumped (`callgrind_control -d`). Everything the
process did meanwhile counts, on every thread: parsing, the token check, proxying, metrics, and
the background sync task (a few thousand instructions a second, lost in the total). Start-up and
shutdown never enter the figure.

Scenarios: nginx plain proxy (the anchor), HAProxy, tokengate's public route, one hot token, the
hot token as a browser's session cookie, and 10,000 tokens in turn (all loaded into the cache by
the warm-up, so every counted request is a hit on a different entry).

    benches/load/instructions.py                    # writes benches/results/instructions.md
    benches/load/instructions.py --only 4           # the hot token alone (quick before/after)
    benches/load/instructions.py --top 25           # the hot token's 25 costliest functions
    benches/load/instructions.py --annotate-all     # ... and every other scenario's too
    benches/load/instructions.py --bin target/release/tokengate --requests 5000

The profiling profile (`cargo build --profile profiling --bin tokengate`: release code with line
tables) lets callgrind_annotate name functions; it executes the same instructions as `release`.
Installs nothing: needs valgrind, nginx, haproxy and redis-server (benches/load/run.sh installs
all but valgrind, which is on the machine).
"""

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402  (the load benchmark's process helpers)

ROOT = bench.ROOT
RESULTS = ROOT / "benches" / "results"


def send(port, path, count, conns, headers):
    """`count` GETs spread over `conns` keep-alive connections; every answer must be 200.
    `headers` is a dict, or a list of dicts taken in turn (one per request)."""
    failures = []
    turn = headers if isinstance(headers, list) else [headers]
    lock = threading.Lock()
    sent = [0]

    def next_headers():
        with lock:
            sent[0] += 1
            return turn[(sent[0] - 1) % len(turn)]

    def worker(n):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        for _ in range(n):
            conn.request("GET", path, headers=next_headers())
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                failures.append(resp.status)
        conn.close()

    share = [count // conns + (1 if i < count % conns else 0) for i in range(conns)]
    threads = [threading.Thread(target=worker, args=(n,)) for n in share]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise SystemExit(f"{len(failures)} of {count} requests failed, e.g. {failures[0]}")


def callgrind(stack, name, cmd, out):
    """`cmd` under callgrind, pinned to the system-under-test core."""
    return stack.spawn(name, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                              "--dump-instr=no", "--vgdb=yes"] + cmd, bench.SUT_CPU)


def control(pid, flag):
    subprocess.run(["callgrind_control", flag, str(pid)], check=True, capture_output=True)


def totals(path):
    """Instructions (Ir) in a callgrind dump."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(("totals:", "summary:")):
            return int(line.split()[1])
    raise SystemExit(f"no totals in {path}")


def measure(pid, port, path, headers, args, work, name):
    """Ir per request over `args.requests`, after a warm-up; the dump kept for annotation. With
    one header set per request (many tokens), the warm-up sends each of them once."""
    warmup = max(args.warmup, len(headers)) if isinstance(headers, list) else args.warmup
    send(port, path, warmup, max(args.conns, 8 if isinstance(headers, list) else 1), headers)
    control(pid, "-z")
    send(port, path, args.requests, args.conns, headers)
    before = set(work.glob(f"{name}.out*"))
    control(pid, "-d")
    deadline = time.time() + 60
    while time.time() < deadline:
        new = [p for p in set(work.glob(f"{name}.out*")) - before if p.stat().st_size > 0]
        if new:
            time.sleep(0.5)  # the dump is written in one go; give it time to finish
            dump = max(new, key=lambda p: p.stat().st_mtime)
            return totals(dump) / args.requests, dump
        time.sleep(0.2)
    raise SystemExit(f"{name}: no callgrind dump")


def annotate(dump, top, inclusive, requests):
    """The `top` costliest functions of a dump: (instructions per request, %, name)."""
    out = subprocess.run(["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
                          "--auto=no", "--threshold=100", str(dump)],
                         capture_output=True, text=True, check=True).stdout
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*([\d,]+) \(\s*([\d.]+)%\)\s+(.*)", line)
        # Without --inclusive, the frames that were on the stack when the counters were zeroed
        # (main, the runtime's block_on) come out holding the whole total: left out.
        if m and not inclusive and float(m.group(2)) >= 99.9:
            continue
        # With it, the scaffolding every request runs inside (main, the runtime's block_on and
        # task loop, hyper's connection future) tops the list at 90-100 %: left out too.
        if m and inclusive and float(m.group(2)) >= 90:
            continue
        if m and "PROGRAM TOTALS" not in line:
            rows.append((int(m.group(1).replace(",", "")) / requests, m.group(2),
                         short(m.group(3))))
    return rows[:top]


def short(name):
    """`file:function` without the object file, the registry's and toolchain's folders."""
    name = re.sub(r"\s*\[[^\]]*\]$", "", name)
    name = re.sub(r"^/root/\.cargo/registry/src/[^/]+/|^/rustc/[0-9a-f]+/library/", "", name)
    name = name.replace(str(ROOT) + "/", "")
    return name[:160]


NGINX_PROXY = """
worker_processes 1;
daemon off;
master_process off;
pid {work}/nginx-cg.pid;
error_log {work}/nginx-cg.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {work}/nginx-cg-body;
    proxy_temp_path {work}/nginx-cg-proxy;
    fastcgi_temp_path {work}/nginx-cg-fastcgi;
    uwsgi_temp_path {work}/nginx-cg-uwsgi;
    scgi_temp_path {work}/nginx-cg-scgi;
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""

# maxconn: valgrind keeps some file descriptors for itself, and HAProxy refuses to start when
# it cannot raise the limit to what maxconn needs.
HAPROXY = """
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    option http-keep-alive
    http-reuse always
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server s1 127.0.0.1:{backend}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target")
    parser.add_argument("--bin", default=str(target / "profiling" / "tokengate"),
                        help="the tokengate binary (default: the profiling build, in "
                             "$CARGO_TARGET_DIR if set)")
    parser.add_argument("--requests", type=int, default=2000, help="counted requests")
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("--conns", type=int, default=1, help="keep-alive connections")
    parser.add_argument("--tokens", type=int, default=10000,
                        help="distinct tokens of the many-tokens scenario")
    parser.add_argument("--top", type=int, default=15, metavar="N",
                        help="the hot token's N costliest functions (inclusive and self)")
    parser.add_argument("--annotate-all", action="store_true",
                        help="the costliest functions of every scenario, not only the hot token")
    parser.add_argument("--only", default="", help="comma-separated scenario numbers")
    parser.add_argument("--keep", action="store_true",
                        help="keep the work folder and its callgrind dumps (for "
                             "callgrind_annotate --tree=caller and the like)")
    parser.add_argument("--out", default=str(RESULTS / "instructions.md"))
    args = parser.parse_args()
    bench.BIN = Path(args.bin).resolve()
    if not bench.BIN.exists():
        raise SystemExit(f"{bench.BIN} missing: cargo build --profile profiling --bin tokengate")

    work = Path(tempfile.mkdtemp(prefix="tokengate-callgrind-"))
    stack = bench.Stack(work)
    try:
        rows = run(stack, work, args)
    finally:
        stack.close()
    write(rows, args)
    if args.keep:
        bench.log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


# Scenario 7's route: the hot token's route again, with a limit far above what is sent.
LIMITED_ROUTE = """
[[routes]]
path_prefix = "/limited/"
upstream = "http://127.0.0.1:{backend}"
roles = ["orders:read"]
rate_limit = {{ rate = "1000000/s", per = "subject" }}
"""

# Scenario 8's access log: every request a line in a file (the writer thread counts too).
ACCESS_LOG = """
[log]
access = true
access_path = "{work}/access.log"
"""


def run(stack, work, args):
    bench.log(f"work dir {work}")
    redis_port, _ = bench.start_redis(stack)
    backend_port, _ = bench.start_backend(stack)
    idp_public, idp_admin, _ = bench.start_idp(stack, redis_port)
    hot = bench.mint(idp_admin, 1)[0]
    bearer = {"Authorization": f"Bearer {hot}"}
    cookie = {"Cookie": f"theme=dark; tokengate={hot}; _ga=GA1.1.123456789.1700000000"}
    wanted = {s for s in args.only.split(",") if s}
    many = []
    if not wanted or "6" in wanted:
        bench.log(f"minting {args.tokens:,} tokens")
        many = [{"Authorization": f"Bearer {t}"} for t in bench.mint(idp_admin, args.tokens)]

    def nginx():
        port = bench.free_port()
        conf = work / "nginx-cg.conf"
        conf.write_text(NGINX_PROXY.format(work=work, backend=backend_port, port=port))
        return port, callgrind(stack, "nginx-cg", ["nginx", "-c", str(conf), "-p", str(work)],
                               work / "nginx-cg.out")

    def haproxy():
        port = bench.free_port()
        conf = work / "haproxy.cfg"
        conf.write_text(HAPROXY.format(port=port, backend=backend_port))
        return port, callgrind(stack, "haproxy-cg", ["haproxy", "-db", "-f", str(conf)],
                               work / "haproxy-cg.out")

    def gateway(browser, extra=""):
        def start():
            # The gateway's own launcher, with callgrind in front of the binary.
            spawn = stack.spawn
            stack.spawn = lambda name, cmd, cpu, env=None: spawn(
                name, ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work / name}.out",
                       "--dump-instr=no", "--vgdb=yes"] + cmd, cpu, env)
            try:
                public, admin, proc = bench.start_gateway(
                    stack, "gateway-cg-browser" if browser else "gateway-cg", redis_port,
                    idp_public, backend_port, browser=browser, extra=extra)
            finally:
                stack.spawn = spawn
            return public, proc
        return start

    scenarios = [
        ("1", "nginx proxy, no auth", "nginx-cg", nginx, "/api/x", {}),
        ("2", "HAProxy, no auth", "haproxy-cg", haproxy, "/api/x", {}),
        ("3", "tokengate, public route", "gateway-cg", gateway(False), "/public/x", {}),
        ("4", "tokengate, one hot token", "gateway-cg", gateway(False), "/api/x", bearer),
        ("5", "tokengate, one hot cookie", "gateway-cg-browser", gateway(True), "/app/x",
         cookie),
        ("6", f"tokengate, {args.tokens:,} tokens in turn", "gateway-cg", gateway(False),
         "/api/x", many),
        # Issue #26's budget: a route limit that never triggers costs at most 5 %.
        ("7", "tokengate, one hot token, route rate limit (never triggers)", "gateway-cg",
         gateway(False, LIMITED_ROUTE.format(backend=backend_port)), "/limited/x", bearer),
        # Issue #25's budget: the access log on (to a file) costs at most 10 %.
        ("8", "tokengate, one hot token, access log to a file", "gateway-cg",
         gateway(False, ACCESS_LOG.format(work=work)), "/api/x", bearer),
    ]
    rows = []
    for num, label, name, start, path, headers in scenarios:
        if wanted and num not in wanted:
            continue
        port, proc = start()
        bench.wait_port(port, proc, timeout=120)
        per_request, dump = measure(proc.pid, port, path, headers, args, work, name)
        bench.log(f"{label}: {per_request:,.0f} instructions per request")
        top = {}
        if num == "4" or args.annotate_all:
            top = {kind: annotate(dump, args.top, kind == "inclusive", args.requests)
                   for kind in ("inclusive", "self")}
        rows.append({"label": f"{num}. {label}", "ir": per_request, "top": top})
        stack.stop(proc)
        for p in work.glob(f"{name}.out*"):
            if args.keep and p == dump:
                p.rename(work / f"scenario-{num}.callgrind")
            else:
                p.unlink()
    return rows


def write(rows, args):
    base = next((r["ir"] for r in rows if "nginx" in r["label"]), None)
    commit = subprocess.run(["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
                            capture_output=True, text=True).stdout.strip() or "?"
    lines = [
        "# Instructions per request (callgrind)",
        "",
        f"Measured by `benches/load/instructions.py` on {time.strftime('%Y-%m-%d %H:%M')} UTC, "
        f"commit `{commit}`: "
        f"{args.requests:,} GETs over {args.conns} keep-alive "
        f"connection{'s' if args.conns != 1 else ''} after a warm-up of "
        f"{args.warmup:,}, each proxy alone under `valgrind --tool=callgrind`, every thread "
        "counted. The same binary and requests give the same count on every run; compare "
        "before and after a change here, and CPU time under load in `latest.md`.",
        "",
        "| scenario | instructions per request | vs nginx proxy |",
        "|---|---|---|",
    ]
    for r in rows:
        ratio = f"{r['ir'] / base:.2f}×" if base else "–"
        lines.append(f"| {r['label']} | {r['ir']:,.0f} | {ratio} |")
    for r in rows:
        for kind, top in r["top"].items():
            what = ("with what they call (inclusive)" if kind == "inclusive"
                    else "in their own code (self)")
            lines += ["", f"## {r['label']}: costliest functions, {what}", "",
                      "| instructions per request | % | function |", "|---:|---:|---|"]
            lines += [f"| {ir:,.0f} | {pct} | `{fn.replace('|', '/')}` |"
                      for ir, pct, fn in top]
    # A hand-kept record of changes and their counts survives the regeneration.
    out = Path(args.out)
    kept = out.read_text() if out.exists() else ""
    history = kept.find("\n## Before and after")
    tail = kept[history:] if history >= 0 else ""
    out.write_text("\n".join(lines) + "\n" + tail)
    bench.log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
