#!/usr/bin/env python3
"""Agent footprint (issue 21 item 4): one agent with its host collectors and
10 publishers at a 5 s tick, under a real proxy, TLA and SQL node on
loopback. Measures the agent process only: resident memory (VmRSS, peak
VmHWM), CPU share of one core (utime+stime over the window) and Flight bytes
sent per tick (its /metrics). Usage:

    scripts/agent_footprint.py BINARY [SECONDS]

Targets (issue 21): RSS <= 30 MB, <= 0.5% of a core.
"""
import json, os, re, subprocess, sys, tempfile, time, urllib.request

binary = sys.argv[1]
seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
PUBLISHERS = 10
TICK = 5.0
work = tempfile.mkdtemp(prefix="fleetsql-footprint-")
ports = {}


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


for name in ["af", "ah", "pub", "pf", "ph", "tf", "th", "pg", "sh"]:
    ports[name] = free_port()
topology = f"""
tick = "5s"
[agents.a1]
cluster = "c"
flight = "127.0.0.1:{ports['af']}"
http = "127.0.0.1:{ports['ah']}"
publish = "127.0.0.1:{ports['pub']}"
[proxies.c-proxy]
cluster = "c"
flight = "127.0.0.1:{ports['pf']}"
http = "127.0.0.1:{ports['ph']}"
[tlas.tla]
flight = "127.0.0.1:{ports['tf']}"
http = "127.0.0.1:{ports['th']}"
[sqlnodes.sql]
tlas = {{ tla = 0 }}
pg = "127.0.0.1:{ports['pg']}"
http = "127.0.0.1:{ports['sh']}"
state_dir = "{work}/state"
"""
path = os.path.join(work, "topology.toml")
open(path, "w").write(topology)
procs = []
for role, name in [("agent", "a1"), ("proxy", "c-proxy"), ("tla", "tla"), ("sqlnode", "sql")]:
    log = open(os.path.join(work, f"{name}.log"), "w")
    procs.append(subprocess.Popen([binary, role, "--config", path, "--name", name, "--log", "warn"],
                                  stdout=log, stderr=log))
agent = procs[0]


def get(url, body=None, ctype=None):
    req = urllib.request.Request(url, data=body, headers={"Content-Type": ctype} if ctype else {})
    return urllib.request.urlopen(req, timeout=10).read()


def wait_health(port):
    for _ in range(600):
        try:
            get(f"http://127.0.0.1:{port}/health")
            return
        except Exception:
            time.sleep(0.1)
    raise SystemExit(f"no /health on {port}")


def publish(k, tick):
    rows = "\n".join(json.dumps({"k": i, "value": tick * 10 + i, "state": "ok"}) for i in range(20))
    get(f"http://127.0.0.1:{ports['pub']}/v1/tables/pub{k}", rows.encode(), "application/x-ndjson")


def sent_bytes():
    text = get(f"http://127.0.0.1:{ports['ah']}/metrics").decode()
    total = 0.0
    for line in text.splitlines():
        if re.match(r"fleetsql_flight_sent_bytes_total\b", line) or line.startswith("fleetsql_flight_bytes_sent_total") or line.startswith("fleetsql_flight_header_bytes_sent_total"):
            total += float(line.split()[-1])
    return total


def cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def rss_by_mapping(pid):
    """Where the resident pages are: the binary's own file mappings (text,
    rodata: shared with the page cache, smaller in a release build),
    other files (libc, ...), anonymous memory (heap, allocator arenas,
    thread stacks) and the thread count."""
    exe = os.path.realpath(f"/proc/{pid}/exe")
    parts = {"binary_file": 0, "other_files": 0, "anonymous": 0}
    name = ""
    for line in open(f"/proc/{pid}/smaps"):
        fields = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = fields[5] if len(fields) > 5 else ""
        elif fields and fields[0] == "Rss:":
            kb = int(fields[1]) * 1024
            if name == exe or name.endswith(" (deleted)") and exe in name:
                parts["binary_file"] += kb
            elif name.startswith("/"):
                parts["other_files"] += kb
            else:
                parts["anonymous"] += kb
    out = {k + "_mib": round(v / 2**20, 1) for k, v in parts.items()}
    out["threads"] = len(os.listdir(f"/proc/{pid}/task"))
    return out


def status(pid, key):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
    return 0


try:
    for port in [ports["ah"], ports["ph"], ports["th"], ports["sh"]]:
        wait_health(port)
    for k in range(PUBLISHERS):
        publish(k, 0)
    # Name every table once so the tree collects them all every tick.
    tables = ["sys", "processes", "filesystem", "machinerole"] + [f"pub{k}" for k in range(PUBLISHERS)]
    for t in tables:
        for _ in range(100):
            try:
                get(f"http://127.0.0.1:{ports['sh']}/v1/query",
                    json.dumps({"sql": f"SELECT count(*) FROM {t}"}).encode(), "application/json")
                break
            except Exception:
                time.sleep(0.5)
    time.sleep(2 * TICK)  # warm: first collections, first full transfers
    hz = os.sysconf("SC_CLK_TCK")
    c0, b0, t0 = cpu_ticks(agent.pid), sent_bytes(), time.monotonic()
    rss = []
    tick = 1
    while time.monotonic() - t0 < seconds:
        for k in range(PUBLISHERS):
            publish(k, tick)
        rss.append(status(agent.pid, "VmRSS:"))
        tick += 1
        time.sleep(TICK)
    c1, b1, t1 = cpu_ticks(agent.pid), sent_bytes(), time.monotonic()
    elapsed = t1 - t0
    result = {
        "seconds": round(elapsed, 1),
        "rss_mib_median": round(sorted(rss)[len(rss) // 2] / 2**20, 1),
        "rss_mib_peak": round(status(agent.pid, "VmHWM:") / 2**20, 1),
        "cpu_share_of_one_core_pct": round(100.0 * (c1 - c0) / hz / elapsed, 3),
        "flight_bytes_sent_per_tick": round((b1 - b0) / (elapsed / TICK)),
        "rss_by_mapping": rss_by_mapping(agent.pid),
        "publishers": PUBLISHERS,
        "tick_s": TICK,
    }
    print(json.dumps(result, indent=1))
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
