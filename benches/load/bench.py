#!/usr/bin/env python3
"""tokengate side by side with nginx, on this machine, in one run.

Started by benches/load/run.sh (which installs the tools and builds the release binary). Writes
benches/results/latest.md and benches/results/latency.svg. Every figure is measured in this run;
nothing is copied from an earlier one.

Roles are pinned: the system under test (nginx proxy, or the gateway) alone on CPU 0; the load
generator, the nginx backend, Redis and the IdP on CPU 1.
"""

import argparse
import http.client
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = ROOT / "target" / "release" / "tokengate"
RESULTS = ROOT / "benches" / "results"
SUT_CPU, OTHER_CPU = "0", "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
ADMIN_TOKEN = "bench-admin-token-0123456789"
PASSWORD = "wonderland"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def wait_port(port, proc=None, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"process exited early: {proc.args}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def call(method, port, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request(method, path, body=body, headers=headers or {})
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, data


def wait_ready(port, path="/readyz", timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if call("GET", port, path, timeout=1)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise SystemExit(f"not ready: {port}{path}")


class Stack:
    """Every process of the run; all stopped at exit."""

    def __init__(self, work):
        self.work = Path(work)
        self.procs = []

    def spawn(self, name, cmd, cpu, env=None):
        out = open(self.work / f"{name}.log", "ab")
        proc = subprocess.Popen(
            ["taskset", "-c", cpu] + cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self):
        for p in reversed(self.procs):
            self.stop(p)


def cpu_split(pids):
    """(utime, stime) of the processes in seconds, all threads included, from /proc/PID/stat."""
    user = kernel = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        user += int(fields[11])
        kernel += int(fields[12])
    return user / CLK_TCK, kernel / CLK_TCK


def cpu_seconds(pids):
    """utime + stime of the processes, all threads included."""
    return sum(cpu_split(pids))


def rss_bytes(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def nginx_pids(master):
    children = subprocess.run(
        ["pgrep", "-P", str(master.pid)], capture_output=True, text=True
    ).stdout.split()
    return [master.pid] + [int(c) for c in children]


# ---------------------------------------------------------------- processes


def start_redis(stack):
    port = free_port()
    proc = stack.spawn(
        "redis",
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(stack.work)],
        OTHER_CPU,
    )
    wait_port(port, proc)
    return port, proc


def redis_cli(port, *args):
    return subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, check=True
    ).stdout


def redis_calls(port):
    """Commands Redis has served since start (INFO commandstats), this INFO call excluded."""
    total = 0
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            calls = line.split("calls=", 1)[1].split(",", 1)[0]
            total += int(calls)
    return total


NGINX_COMMON = """
{user}
worker_processes 1;
daemon off;
master_process on;
pid {work}/{name}.pid;
error_log {work}/{name}.error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_body_temp_path {work}/{name}-body;
    proxy_temp_path {work}/{name}-proxy;
    fastcgi_temp_path {work}/{name}-fastcgi;
    uwsgi_temp_path {work}/{name}-uwsgi;
    scgi_temp_path {work}/{name}-scgi;
{body}
}}
"""


def start_nginx(stack, name, cpu, body):
    conf = stack.work / f"{name}.conf"
    # As root, workers would drop to `nobody` and lose access to the run's private folder.
    user = "user root;" if os.geteuid() == 0 else ""
    conf.write_text(NGINX_COMMON.format(user=user, work=stack.work, name=name, body=body))
    proc = stack.spawn(name, ["nginx", "-c", str(conf), "-p", str(stack.work)], cpu)
    return proc


def start_backend(stack):
    port = free_port()
    body = f"""
    server {{
        listen 127.0.0.1:{port} reuseport backlog=4096;
        location / {{ default_type text/plain; return 200 "ok\\n"; }}
    }}"""
    proc = start_nginx(stack, "backend", OTHER_CPU, body)
    wait_port(port, proc)
    return port, proc


def start_nginx_proxy(stack, backend):
    """Scenario 2: nginx as its docs advise for a keep-alive reverse proxy, no auth."""
    port = free_port()
    body = f"""
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""
    proc = start_nginx(stack, "nginx-proxy", SUT_CPU, body)
    wait_port(port, proc)
    return port, proc


def start_haproxy(stack, backend):
    """Scenario 10: HAProxy with one thread as a keep-alive reverse proxy, no auth."""
    port = free_port()
    conf = stack.work / "haproxy.cfg"
    # HAProxy wants two descriptors a connection and refuses to start past the process's limit
    # (a container may not let it raise its own): as many connections as the limit allows.
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    maxconn = min(20000, (limit - 100) // 2)
    conf.write_text(f"""
global
    nbthread 1
    maxconn {maxconn}
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend bench
    bind 127.0.0.1:{port}
    default_backend backend
backend backend
    server nginx 127.0.0.1:{backend} maxconn 1000
""")
    proc = stack.spawn("haproxy", ["haproxy", "-db", "-f", str(conf)], SUT_CPU)
    wait_port(port, proc)
    return port, proc


def start_nginx_auth(stack, backend, idp_port):
    """Scenario 3: the usual way, auth_request to the IdP with the answer cached per token."""
    port = free_port()
    body = f"""
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
    upstream idp {{ server 127.0.0.1:{idp_port}; keepalive 16; }}
    proxy_cache_path {stack.work}/authcache levels=1:2 keys_zone=auth:10m max_size=100m inactive=60s;
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            auth_request /_auth;
            auth_request_set $auth_subject $upstream_http_x_auth_subject;
            auth_request_set $auth_roles $upstream_http_x_auth_roles;
            auth_request_set $auth_session $upstream_http_x_auth_session;
            auth_request_set $auth_value $upstream_http_authorization;
            proxy_set_header X-Auth-Subject $auth_subject;
            proxy_set_header X-Auth-Roles $auth_roles;
            proxy_set_header X-Auth-Session $auth_session;
            proxy_set_header Authorization $auth_value;
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
        location = /_auth {{
            internal;
            proxy_pass http://idp/auth/verify?roles=orders:read;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache auth;
            proxy_cache_key $http_authorization;
            proxy_cache_valid 200 401 403 10s;
            proxy_ignore_headers Cache-Control Expires Set-Cookie;
        }}
    }}"""
    proc = start_nginx(stack, "nginx-auth", SUT_CPU, body)
    wait_port(port, proc)
    return port, proc


def start_idp(stack, redis_port):
    key = stack.work / "signing.pem"
    subprocess.run([str(BIN), "gen-key", "--out", str(key)], check=True, capture_output=True)
    digest = subprocess.run(
        [str(BIN), "hash-password"], input=PASSWORD, text=True, capture_output=True, check=True
    ).stdout.strip()
    public, admin = free_port(), free_port()
    conf = stack.work / "idp.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{public}"
max_connections = 4096
[admin]
listen = "127.0.0.1:{admin}"
token = "{ADMIN_TOKEN}"
[store]
redis_url = "redis://127.0.0.1:{redis_port}"
[tokens]
signing_keys = ["signing.pem"]
[login]
max_failures = 0
max_failures_per_address = 0
[[users]]
username = "alice"
password_hash = "{digest}"
roles = ["orders:read"]
""")
    proc = stack.spawn("idp", [str(BIN), "idp", "--config", str(conf)], OTHER_CPU,
                       {"RUST_LOG": "warn"})
    wait_ready(admin)
    return public, admin, proc


def start_gateway(stack, name, redis_port, idp_port, backend, extra_cache="", interval="1s",
                  cpu=SUT_CPU, max_entries=200000, browser=False, extra=""):
    """With `browser`, the gateway also has `[browser]` and a `browser = true` route `/app/`
    (the cookie scenario; no one signs in during the run, so the client need not exist)."""
    public, admin = free_port(), free_port()
    browser_conf = f"""
[browser]
issuer = "http://127.0.0.1:{idp_port}"
client_id = "bench-gateway"
client_secret = "bench-gateway-secret"
public_url = "http://127.0.0.1:{public}"
[[routes]]
path_prefix = "/app/"
upstream = "http://127.0.0.1:{backend}"
roles = ["orders:read"]
browser = true
""" if browser else ""
    conf = stack.work / f"{name}.toml"
    conf.write_text(f"""
[server]
listen = "127.0.0.1:{public}"
max_connections = 20000
[admin]
listen = "127.0.0.1:{admin}"
[store]
redis_url = "redis://127.0.0.1:{redis_port}"
[idp]
jwks_url = "http://127.0.0.1:{idp_port}/.well-known/jwks.json"
[cache]
max_entries = {max_entries}
max_staleness = "60s"
{extra_cache}
[sync]
interval = "{interval}"
[[routes]]
path_prefix = "/api/"
upstream = "http://127.0.0.1:{backend}"
roles = ["orders:read"]
[[routes]]
path_prefix = "/public/"
upstream = "http://127.0.0.1:{backend}"
auth = false
{browser_conf}
{extra}""")
    proc = stack.spawn(name, [str(BIN), "gateway", "--config", str(conf)], cpu,
                       {"RUST_LOG": "warn"})
    wait_ready(admin)
    return public, admin, proc


def mint(idp_admin, count, user="alice"):
    """`count` live sessions through the admin API (no password hashing), on one connection."""
    tokens = []
    conn = http.client.HTTPConnection("127.0.0.1", idp_admin, timeout=10)
    body = json.dumps({"username": user, "roles": ["orders:read"]})
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"}
    for _ in range(count):
        conn.request("POST", "/admin/sessions", body=body, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if resp.status != 200:
            raise SystemExit(f"mint failed: {resp.status} {data[:200]!r}")
        tokens.append(json.loads(data)["access_token"])
    conn.close()
    return tokens


def metric(admin_port, name):
    status, body = call("GET", admin_port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


# ---------------------------------------------------------------- load generators

PERCENTILES = [50, 75, 90, 95, 99, 99.9, 99.99]


def oha(url, seconds, conns, token=None, rate=None, cookie=None):
    cmd = ["taskset", "-c", OTHER_CPU, "oha", "-z", f"{seconds}s", "-c", str(conns),
           "--no-tui", "--output-format", "json"]
    if token:
        cmd += ["-H", f"Authorization: Bearer {token}"]
    if cookie:
        # A browser's cookie header: the session cookie among others the app set.
        cmd += ["-H", f"Cookie: theme=dark; tokengate={cookie}; _ga=GA1.1.123456789.1700000000"]
    if rate:
        cmd += ["-q", str(rate), "--latency-correction"]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    data = json.loads(out)
    s = data["summary"]
    pct = data["latencyPercentiles"]
    codes = data.get("statusCodeDistribution", {})
    # Requests cut off by the end of the run (oha's "aborted due to deadline") never failed.
    errors = {k: int(v) for k, v in data.get("errorDistribution", {}).items()
              if "deadline" not in k}
    requests = sum(int(v) for v in codes.values()) + sum(errors.values())
    ok = int(codes.get("200", 0))
    return {
        "requests": requests,
        "ok": ok,
        "rps": s["requestsPerSec"],
        "success": ok / requests if requests else 0.0,
        "latency_ms": {p: (pct.get(f"p{p}") or 0) * 1000 for p in PERCENTILES},
    }


WRK_SCRIPT = """
local tokens = {}
for line in io.lines(os.getenv("TOKENS_FILE")) do tokens[#tokens + 1] = line end
local i = math.random(#tokens)
request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format("GET", "/api/x", {["Authorization"] = "Bearer " .. tokens[i]})
end
done = function(summary, latency, requests)
  local e = summary.errors
  local pct = {}
  for _, p in ipairs({50, 75, 90, 95, 99, 99.9, 99.99}) do
    pct[#pct + 1] = string.format('"%s": %f', tostring(p), latency:percentile(p) / 1000.0)
  end
  io.write(string.format('WRKJSON {"requests": %d, "duration_us": %d, "failed": %d, "latency_ms": {%s}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout + e.status,
    table.concat(pct, ", ")))
end
"""


def wrk(url, seconds, conns, tokens_file, script):
    cmd = ["taskset", "-c", OTHER_CPU, "wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s",
           str(script), url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env={**os.environ, "TOKENS_FILE": str(tokens_file)}).stdout
    line = next(l for l in out.splitlines() if l.startswith("WRKJSON "))
    data = json.loads(line[len("WRKJSON "):])
    requests = data["requests"]
    return {
        "requests": requests,
        "ok": requests - data["failed"],
        "rps": requests / (data["duration_us"] / 1e6),
        "success": (requests - data["failed"]) / requests if requests else 0.0,
        "latency_ms": {p: data["latency_ms"][str(p) if p != int(p) else str(int(p))]
                       for p in PERCENTILES},
    }


# ---------------------------------------------------------------- the run


def measure(run, pids):
    user0, kernel0 = cpu_split(pids)
    result = run()
    user1, kernel1 = cpu_split(pids)
    n = result["requests"] or 0
    per = lambda seconds: seconds * 1e6 / n if n else 0.0
    result["cpu_us_per_req"] = per(user1 - user0 + kernel1 - kernel0)
    result["user_us_per_req"] = per(user1 - user0)
    result["kernel_us_per_req"] = per(kernel1 - kernel0)
    return result


def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def main():
    global BIN
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=int, default=10, help="length of each load run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--tokens", type=int, default=10000, help="distinct tokens of scenario 6")
    parser.add_argument("--memory-tokens", type=int, default=100000)
    parser.add_argument("--trials", type=int, default=100, help="revocation trials")
    parser.add_argument("--skip-figures", action="store_true", help="load scenarios only")
    parser.add_argument("--only", help="scenario numbers to run, as 2,5,9 (closed loop only;"
                        " the table goes to --out, latest.md is left alone)")
    parser.add_argument("--out", type=Path, help="where --only writes its table")
    parser.add_argument("--bin", type=Path, default=BIN,
                        help="the tokengate binary (default target/release/tokengate)")
    args = parser.parse_args()
    if args.only and not args.out:
        parser.error("--only needs --out")
    BIN = args.bin

    work = Path(tempfile.mkdtemp(prefix="tokengate-bench-"))
    stack = Stack(work)
    try:
        report = run(stack, args)
    finally:
        stack.close()
    if report.get("partial"):
        write_partial(report, args)
    else:
        write_report(report, args)
    shutil.rmtree(work, ignore_errors=True)


def run(stack, args):
    log(f"work dir {stack.work}")
    redis_port, _ = start_redis(stack)
    backend_port, _ = start_backend(stack)
    idp_public, idp_admin, _ = start_idp(stack, redis_port)
    proxy_port, proxy_proc = start_nginx_proxy(stack, backend_port)
    auth_port, auth_proc = start_nginx_auth(stack, backend_port, idp_public)
    gw_public, gw_admin, gw_proc = start_gateway(stack, "gateway", redis_port, idp_public,
                                                 backend_port)
    nc_public, nc_admin, nc_proc = start_gateway(stack, "gateway-nocache", redis_port,
                                                 idp_public, backend_port,
                                                 extra_cache="enabled = false")
    br_public, br_admin, br_proc = start_gateway(stack, "gateway-browser", redis_port,
                                                 idp_public, backend_port, browser=True)
    log_public, log_admin, log_proc = start_gateway(
        stack, "gateway-log", redis_port, idp_public, backend_port,
        extra=f'[log]\naccess = true\naccess_path = "{stack.work / "access.log"}"\n')
    rl_public, rl_admin, rl_proc = start_gateway(
        stack, "gateway-limit", redis_port, idp_public, backend_port,
        extra=f'[[routes]]\npath_prefix = "/limited/"\nupstream = "http://127.0.0.1:{backend_port}"\n'
              'roles = ["orders:read"]\n'
              'rate_limit = { rate = "1000000/s", burst = 1000000, per = "subject" }\n')
    # Scenario 5's route with active health checks of its upstream (off the request path).
    hc_public, hc_admin, hc_proc = start_gateway(
        stack, "gateway-health", redis_port, idp_public, backend_port,
        extra=f'[[routes]]\npath_prefix = "/checked/"\nupstream = "http://127.0.0.1:{backend_port}"\n'
              'roles = ["orders:read"]\n'
              'health_check = { path = "/healthz", interval = "2s" }\n')
    haproxy_port, haproxy_proc = start_haproxy(stack, backend_port)
    backend_master = next(p for p in stack.procs if "backend.conf" in " ".join(p.args))
    hot = mint(idp_admin, 1)[0]
    log(f"minting {args.tokens} tokens for scenario 6")
    tokens = mint(idp_admin, args.tokens)
    tokens_file = stack.work / "tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    script = stack.work / "rotate.lua"
    script.write_text(WRK_SCRIPT)

    S = args.seconds
    C = args.conns
    scenarios = [
        ("1. direct to the backend", lambda: nginx_pids(backend_master),
         lambda s: oha(f"http://127.0.0.1:{backend_port}/api/x", s, C)),
        ("2. nginx proxy, no auth", lambda: nginx_pids(proxy_proc),
         lambda s: oha(f"http://127.0.0.1:{proxy_port}/api/x", s, C)),
        ("3. nginx + auth_request (cached)", lambda: nginx_pids(auth_proc),
         lambda s: oha(f"http://127.0.0.1:{auth_port}/api/x", s, C, token=hot)),
        ("4. tokengate, public route", lambda: [gw_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{gw_public}/public/x", s, C)),
        ("5. tokengate, one hot token", lambda: [gw_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{gw_public}/api/x", s, C, token=hot)),
        (f"6. tokengate, {args.tokens:,} tokens", lambda: [gw_proc.pid],
         lambda s: wrk(f"http://127.0.0.1:{gw_public}", s, C, tokens_file, script)),
        ("7. tokengate, cache off", lambda: [nc_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{nc_public}/api/x", s, C, token=hot)),
        # Scenario 5's hot token as a browser sends it: in the session cookie of a
        # `browser = true` route, among other cookies (stripped before forwarding).
        ("8. tokengate, one hot cookie", lambda: [br_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{br_public}/app/x", s, C, cookie=hot)),
        # Scenario 5 with `[log] access = true` (one JSON line per request, to a file).
        ("9. tokengate, one hot token, access log on", lambda: [log_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{log_public}/api/x", s, C, token=hot)),
        ("10. HAProxy, one thread, no auth", lambda: [haproxy_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{haproxy_port}/api/x", s, C)),
        # Scenario 5 through a route with a rate limit per subject that never triggers.
        ("11. tokengate, one hot token, route rate limit", lambda: [rl_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{rl_public}/limited/x", s, C, token=hot)),
        ("12. tokengate, one hot token, health checks on", lambda: [hc_proc.pid],
         lambda s: oha(f"http://127.0.0.1:{hc_public}/checked/x", s, C, token=hot)),
    ]
    if args.only:
        wanted = {int(n) for n in args.only.split(",")}
        scenarios = [sc for sc in scenarios if int(sc[0].split(".")[0]) in wanted]
    # Warm up every path (connections, caches, the 10,000 tokens) before measuring.
    log("warm-up")
    for name, _, go in scenarios:
        r = go(3)
        if r["success"] < 0.99:
            raise SystemExit(f"{name}: warm-up success rate {r['success']:.3f}; see {stack.work}")
    results = {name: [] for name, _, _ in scenarios}
    for rnd in range(args.rounds):
        order = scenarios if rnd % 2 == 0 else list(reversed(scenarios))
        for name, pids, go in order:
            r = measure(lambda: go(S), pids())
            results[name].append(r)
            log(f"round {rnd + 1} {name}: {r['rps']:.0f} req/s, "
                f"{r['cpu_us_per_req']:.1f} µs CPU/req, p99 {r['latency_ms'][99]:.3f} ms")

    table = []
    for name, _, _ in scenarios:
        runs = results[name]
        table.append({
            "name": name,
            "rps": median_of(runs, "rps"),
            "cpu": median_of(runs, "cpu_us_per_req"),
            "user": median_of(runs, "user_us_per_req"),
            "kernel": median_of(runs, "kernel_us_per_req"),
            "success": min(r["success"] for r in runs),
            "latency_ms": {p: statistics.median(r["latency_ms"][p] for r in runs)
                           for p in PERCENTILES},
        })
    if args.only:
        return {"table": table, "partial": True}

    # Open loop at about half of nginx's maximum: latency without saturation.
    rate = int(table[1]["rps"] / 2)
    open_loop = []
    for name, pids, go in [scenarios[1], scenarios[2], scenarios[3], scenarios[4]]:
        url = {
            scenarios[1][0]: (f"http://127.0.0.1:{proxy_port}/api/x", None),
            scenarios[2][0]: (f"http://127.0.0.1:{auth_port}/api/x", hot),
            scenarios[3][0]: (f"http://127.0.0.1:{gw_public}/public/x", None),
            scenarios[4][0]: (f"http://127.0.0.1:{gw_public}/api/x", hot),
        }[name]
        runs = [measure(lambda: oha(url[0], S, C, token=url[1], rate=rate), pids())
                for _ in range(args.rounds)]
        row = {"name": name, "rate": rate,
               "cpu": median_of(runs, "cpu_us_per_req"),
               "success": min(r["success"] for r in runs),
               "latency_ms": {p: statistics.median(r["latency_ms"][p] for r in runs)
                              for p in PERCENTILES}}
        open_loop.append(row)
        log(f"open loop {name} at {rate}/s: p99 {row['latency_ms'][99]:.3f} ms")

    report = {"table": table, "open_loop": open_loop, "rate": rate}
    if args.skip_figures:
        return report

    # Store load: Redis commands per 1,000 hot requests at two sync intervals, with the gateway
    # under test the only one running (every command Redis serves meanwhile is its own, or the
    # idle IdP's).
    stack.stop(gw_proc)
    stack.stop(nc_proc)
    stack.stop(br_proc)
    store = []
    for interval in ["1s", "100ms"]:
        pub, adm, proc = start_gateway(stack, f"gateway-sync-{interval}", redis_port,
                                       idp_public, backend_port, interval=interval)
        oha(f"http://127.0.0.1:{pub}/api/x", 2, C, token=hot)
        before = redis_calls(redis_port)
        r = oha(f"http://127.0.0.1:{pub}/api/x", S, C, token=hot)
        calls = redis_calls(redis_port) - before - 1  # the second INFO counts itself
        stack.stop(proc)
        store.append({"interval": interval, "requests": r["requests"], "calls": calls,
                      "per_1000": calls * 1000 / r["requests"]})
        log(f"store load at sync.interval {interval}: {calls} commands for {r['requests']} "
            f"requests ({calls * 1000 / r['requests']:.3f} per 1,000)")
    report["store"] = store

    # Memory: RSS per cached token.
    report["memory"] = memory(stack, args, redis_port, idp_public, idp_admin, backend_port)
    # Revocation propagation across three gateways.
    report["revocation"] = revocation(stack, args, redis_port, idp_public, idp_admin,
                                      backend_port)
    return report


def memory(stack, args, redis_port, idp_public, idp_admin, backend_port):
    log(f"memory: minting {args.memory_tokens} tokens")
    tokens = mint(idp_admin, args.memory_tokens)
    tokens_file = stack.work / "memory-tokens.txt"
    tokens_file.write_text("\n".join(tokens) + "\n")
    script = stack.work / "sequential.lua"
    script.write_text(WRK_SCRIPT.replace("local i = math.random(#tokens)", "local i = 0"))
    pub, adm, proc = start_gateway(stack, "gateway-memory", redis_port, idp_public, backend_port,
                                   max_entries=args.memory_tokens * 2)
    status, _ = call("GET", pub, "/api/x", headers={"Authorization": f"Bearer {tokens[0]}"})
    assert status == 200
    time.sleep(1)
    before = rss_bytes(proc.pid)
    deadline = time.time() + 300
    while (metric(adm, "tokengate_cache_entries") or 0) < args.memory_tokens:
        if time.time() > deadline:
            raise SystemExit("could not load every token into the cache")
        wrk(f"http://127.0.0.1:{pub}", 10, 20, tokens_file, script)
    entries = metric(adm, "tokengate_cache_entries")
    time.sleep(1)
    after = rss_bytes(proc.pid)
    stack.stop(proc)
    result = {"entries": entries, "rss_before": before, "rss_after": after,
              "per_token": (after - before) / entries}
    log(f"memory: {entries:.0f} entries, RSS {before / 2**20:.1f} → {after / 2**20:.1f} MiB, "
        f"{result['per_token']:.0f} B per token")
    return result


def revocation(stack, args, redis_port, idp_public, idp_admin, backend_port):
    # Each trial polls until its token is refused, so one address sees hundreds of `401`s: the
    # guessing brake (`[protection]`) would answer the next trials `429`. Off for this figure.
    gateways = [start_gateway(stack, f"gateway-rev{i}", redis_port, idp_public, backend_port,
                              cpu=SUT_CPU, extra='[protection]\ninvalid_token_rate = "off"\n')
                for i in range(3)]
    times = []
    headers_admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    for trial in range(args.trials):
        token = mint(idp_admin, 1, user=f"rev{trial}")[0]
        auth = {"Authorization": f"Bearer {token}"}
        for pub, _, _ in gateways:
            status, _ = call("GET", pub, "/api/x", headers=auth)
            assert status == 200, status
        seen = [None] * len(gateways)
        start = threading.Event()

        def poll(i, port):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            start.wait()
            while True:
                conn.request("GET", "/api/x", headers=auth)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 401:
                    seen[i] = time.perf_counter()
                    conn.close()
                    return
                time.sleep(0.001)

        threads = [threading.Thread(target=poll, args=(i, g[0])) for i, g in enumerate(gateways)]
        for t in threads:
            t.start()
        start.set()
        status, _ = call("DELETE", idp_admin, f"/admin/users/rev{trial}/sessions",
                         headers=headers_admin)
        returned = time.perf_counter()
        assert status == 200, status
        for t in threads:
            t.join(timeout=70)
        if any(s is None for s in seen):
            raise SystemExit("a gateway never refused a revoked token")
        times.append(max(0.0, max(seen) - returned) * 1000)
    for _, _, proc in gateways:
        stack.stop(proc)
    times.sort()
    result = {
        "trials": len(times),
        "p50": statistics.median(times),
        "p99": times[min(len(times) - 1, int(round(0.99 * (len(times) - 1))))],
        "max": times[-1],
    }
    log(f"revocation: p50 {result['p50']:.2f} ms, p99 {result['p99']:.2f} ms, "
        f"max {result['max']:.2f} ms")
    return result


# ---------------------------------------------------------------- the report


def machine():
    model = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    def version(cmd):
        try:
            r = subprocess.run(cmd, capture_output=True, text=True)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, IndexError):
            return "?"
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "nginx": version(["nginx", "-v"]),
        "haproxy": version(["haproxy", "-v"]),
        "oha": version(["oha", "--version"]),
        "wrk": version(["wrk", "-v"]),
        "rustc": version(["rustc", "--version"]),
        "redis": version(["redis-server", "--version"]),
    }


def write_partial(report, args):
    """The closed-loop table of an `--only` run, each scenario against the first one run."""
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    t = report["table"]
    lines = [
        f"`bench.py --only {args.only}` on commit `{commit}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}:"
        f" {args.rounds} rounds of {args.seconds} s, alternated, {args.conns} connections;"
        " medians of the rounds.",
        "",
        "| scenario | req/s | p50 ms | p99 ms | success | CPU µs/req | user | kernel"
        f" | CPU vs {t[0]['name'].split('. ', 1)[1]} |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in t:
        lat = row["latency_ms"]
        lines.append(
            f"| {row['name']} | {row['rps']:,.0f} | {lat[50]:.3f} | {lat[99]:.3f} | "
            f"{row['success'] * 100:.2f}% | {row['cpu']:.1f} | {row['user']:.1f} | "
            f"{row['kernel']:.1f} | {row['cpu'] / t[0]['cpu']:.2f}× |")
    args.out.write_text("\n".join(lines) + "\n")
    log(f"wrote {args.out}")


def verdict(ok):
    return "met" if ok else "**missed**"


def write_report(report, args):
    RESULTS.mkdir(parents=True, exist_ok=True)
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    m = machine()
    t = report["table"]
    base = t[1]
    lines = [
        "# Benchmark results",
        "",
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on commit `{commit}`"
        + (" (with uncommitted changes)" if dirty else "")
        + f" by `benches/load/run.sh`: {args.rounds} rounds of {args.seconds} s per scenario,"
        f" alternated, {args.conns} connections; medians of the rounds.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, Linux {m['kernel']}; {m['nginx']};"
        f" {m['haproxy']}; {m['oha']}; {m['wrk']}; {m['rustc']}; {m['redis']}.",
        "The proxy under test runs alone on CPU 0; the load generator, the nginx backend"
        " (fixed 3-byte body), Redis and the IdP share CPU 1. Throughput is capped by the load"
        " generator on one core, so **CPU per request** (from `/proc/PID/stat` of the proxy's"
        " processes, before and after) is the figure to compare.",
        "",
        "## Closed loop",
        "",
        "| scenario | req/s | p50 ms | p99 ms | p99.9 ms | success | CPU µs/req | user | kernel"
        " | CPU vs nginx proxy |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in t:
        lat = row["latency_ms"]
        lines.append(
            f"| {row['name']} | {row['rps']:,.0f} | {lat[50]:.3f} | {lat[99]:.3f} | "
            f"{lat[99.9]:.3f} | {row['success'] * 100:.2f}% | {row['cpu']:.1f} | "
            f"{row.get('user', 0):.1f} | {row.get('kernel', 0):.1f} | "
            f"{row['cpu'] / base['cpu']:.2f}× |")
    lines += [
        "",
        "Scenario 1 measures the backend's own CPU. Scenario 3's figure is nginx's CPU only; the"
        " IdP behind it answers once per token per 10 s (the cached subrequest). Scenario 6"
        " rotates the `Authorization` header over its tokens with a wrk Lua script (wrk, not oha,"
        " so its latencies come from another tool). Scenario 7 reads Redis and verifies the JWT"
        " on every request (`cache.enabled = false`). Scenario 8 sends scenario 5's token"
        " as a browser does, in the session cookie of a `browser = true` route among two other"
        " cookies, which the gateway reads and then strips before forwarding. Scenario 9 is"
        " scenario 5 on a gateway with `[log] access = true` writing to a file. Scenario 10 is"
        " Debian's HAProxy with one thread (`nbthread 1`), keep-alive both ways, no auth. User"
        " and kernel are the CPU µs/req split by `/proc/PID/stat` (utime, stime).",
        "",
        f"## Open loop at {report['rate']:,} req/s (about half of nginx's maximum)",
        "",
        "| scenario | p50 ms | p99 ms | p99.9 ms | success | CPU µs/req |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in report["open_loop"]:
        lat = row["latency_ms"]
        lines.append(f"| {row['name']} | {lat[50]:.3f} | {lat[99]:.3f} | {lat[99.9]:.3f} | "
                     f"{row['success'] * 100:.2f}% | {row['cpu']:.1f} |")
    lines += ["", "![latency by percentile](latency.svg)", ""]

    hot, public, auth = t[4], t[3], t[2]
    ol = {r["name"]: r for r in report["open_loop"]}
    ol_nginx = ol[t[1]["name"]]["latency_ms"][99]
    ol_hot = ol[t[4]["name"]]["latency_ms"][99]
    targets = [
        ("CPU/request, hot token ≤ nginx proxy", f"{hot['cpu']:.1f} vs {base['cpu']:.1f} µs",
         hot["cpu"] <= base["cpu"]),
        ("CPU/request, hot token ≤ 1/3 of nginx + auth_request",
         f"{hot['cpu']:.1f} vs {auth['cpu'] / 3:.1f} µs", hot["cpu"] <= auth["cpu"] / 3),
        ("p99 at the fixed rate within 0.2 ms of nginx proxy",
         f"{ol_hot:.3f} vs {ol_nginx:.3f} ms", ol_hot <= ol_nginx + 0.2),
        ("hot-token throughput ≥ 0.9× own public route",
         f"{hot['rps']:,.0f} vs {public['rps']:,.0f} req/s", hot["rps"] >= 0.9 * public["rps"]),
        ("access log on: CPU/request ≤ 1.10× hot token",
         f"{t[8]['cpu']:.1f} vs {hot['cpu']:.1f} µs ({t[8]['cpu'] / hot['cpu']:.2f}×)",
         t[8]["cpu"] <= 1.10 * hot["cpu"]),
        ("user-space CPU/request, hot token ≤ nginx proxy's",
         f"{hot['user']:.1f} vs {base['user']:.1f} µs", hot["user"] <= base["user"]),
    ]
    if "revocation" in report:
        rev = report["revocation"]
        targets.append(("revocation reaches every replica, p99 ≤ 50 ms",
                        f"p99 {rev['p99']:.2f} ms", rev["p99"] <= 50))
    if "store" in report:
        worst = max(s["per_1000"] for s in report["store"] if s["interval"] == "1s")
        targets.append(("Redis ≤ 1 command per 1,000 hot requests (sync 1s)",
                        f"{worst:.3f}", worst <= 1))
    if "memory" in report:
        mem = report["memory"]
        targets.append(("≤ 1 KiB RSS per cached token", f"{mem['per_token']:.0f} B",
                        mem["per_token"] <= 1024))
    lines += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    for name, measured, ok in targets:
        lines.append(f"| {name} | {measured} | {verdict(ok)} |")

    if "revocation" in report:
        rev = report["revocation"]
        lines += [
            "",
            "## Other figures",
            "",
            f"**Revocation propagation** (three gateways on one Redis, {rev['trials']} trials;"
            " from the forced-logout call returning until every gateway answers 401, each polled"
            f" every millisecond): p50 {rev['p50']:.2f} ms, p99 {rev['p99']:.2f} ms,"
            f" max {rev['max']:.2f} ms.",
            "",
            "**Store load** (Redis commands per 1,000 requests with one hot token, steady state;"
            " `INFO commandstats` delta over the run, the gateway under test the only one"
            " running):",
            "",
            "| sync.interval | requests | commands | per 1,000 requests |",
            "|---|---:|---:|---:|",
        ]
        for s in report["store"]:
            lines.append(f"| {s['interval']} | {s['requests']:,} | {s['calls']} | "
                         f"{s['per_1000']:.3f} |")
        mem = report["memory"]
        lines += [
            "",
            f"**Memory**: {mem['entries']:,.0f} cached tokens; gateway RSS"
            f" {mem['rss_before'] / 2**20:.1f} MiB → {mem['rss_after'] / 2**20:.1f} MiB:"
            f" {mem['per_token']:.0f} bytes per cached token.",
        ]
    notes = RESULTS / "notes.md"
    if notes.exists():
        lines += ["", notes.read_text().strip()]
    (RESULTS / "latest.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "latest.json").write_text(json.dumps(report, indent=1) + "\n")
    write_svg(report)
    log(f"wrote {RESULTS / 'latest.md'} and {RESULTS / 'latency.svg'}")


def write_svg(report):
    """Latency by percentile, one line per scenario (closed loop), log-scaled axes."""
    import math
    rows = report["table"]
    colours = ["#888888", "#1f77b4", "#9467bd", "#2ca02c", "#d62728", "#ff7f0e", "#8c564b"]
    W, H, L, R, T, B = 880, 420, 70, 370, 30, 50
    xs = [math.log10(100 / (100 - p)) for p in PERCENTILES]
    values = [v for r in rows for v in r["latency_ms"].values() if v > 0]
    lo, hi = math.log10(min(values) * 0.8), math.log10(max(values) * 1.25)
    def X(x):
        return L + (x - xs[0]) / (xs[-1] - xs[0]) * (W - L - R)
    def Y(v):
        return T + (1 - (math.log10(max(v, 1e-6)) - lo) / (hi - lo)) * (H - T - B)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>',
           f'<text x="{L}" y="18" font-size="14">Latency by percentile (closed loop, medians'
           f' of rounds)</text>']
    for p, x in zip(PERCENTILES, xs):
        out.append(f'<line x1="{X(x):.1f}" y1="{T}" x2="{X(x):.1f}" y2="{H - B}" stroke="#eee"/>')
        out.append(f'<text x="{X(x):.1f}" y="{H - B + 16}" text-anchor="middle">p{p:g}</text>')
    decade = math.floor(lo)
    while decade <= hi:
        for m in (1, 2, 5):
            v = m * 10 ** decade
            if lo <= math.log10(v) <= hi:
                out.append(f'<line x1="{L}" y1="{Y(v):.1f}" x2="{W - R}" y2="{Y(v):.1f}" '
                           f'stroke="#eee"/>')
                out.append(f'<text x="{L - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
        decade += 1
    out.append(f'<text x="16" y="{(T + H - B) / 2}" transform="rotate(-90 16 {(T + H - B) / 2})" '
               f'text-anchor="middle">ms</text>')
    for i, row in enumerate(rows):
        c = colours[i % len(colours)]
        pts = " ".join(f"{X(x):.1f},{Y(row['latency_ms'][p]):.1f}"
                       for p, x in zip(PERCENTILES, xs))
        out.append(f'<polyline points="{pts}" fill="none" stroke="{c}" stroke-width="2"/>')
        out.append(f'<rect x="{W - R + 14}" y="{T + i * 20}" width="12" height="12" fill="{c}"/>')
        out.append(f'<text x="{W - R + 32}" y="{T + i * 20 + 11}">{row["name"]}</text>')
    out.append("</svg>")
    (RESULTS / "latency.svg").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    sys.exit(main())
