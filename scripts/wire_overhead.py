"""Wire overhead of each front end of a SQL node (issue 24, Measure).

Runs the disk-alert seed query and a 100k-row `SELECT *` over pg simple
(psycopg2), pg extended with binary results (psycopg 3), HTTP JSON, HTTP
Arrow IPC and Flight SQL (ADBC), and divides each median wall time by the
median time of the same query run to its end inside the node with no rows
sent: `EXPLAIN ANALYZE` of it over HTTP, timed in the client (planning,
execution, one small HTTP round trip; no row encoded). The HTTP answer's own
`elapsed_ms` cannot serve: answers stream, so it includes sending. Start a demo with
100k `processes` rows first, e.g.

    fleetsql demo --processes 200 --pg-port 0 --http-port 0 --flightsql-port 0
    $(scripts/python-env) scripts/wire_overhead.py PG_PORT HTTP_ADDR FLIGHTSQL_ADDR

and paste the Markdown table it prints into BENCHMARKS.md.
"""

import json
import statistics
import sys
import time
import urllib.request

import adbc_driver_flightsql.dbapi as flight_sql
import psycopg
import psycopg2

pg_port, http_addr, flightsql_addr = int(sys.argv[1]), sys.argv[2], sys.argv[3]
runs = int(sys.argv[4]) if len(sys.argv) > 4 else 7

# `{n}` differs on every run: the node shares one answer among identical
# queries over one generation, so repeating the same text would time that
# cache, not the query. `n = n` is folded away by the planner.
QUERIES = {
    "disk alert": (
        "SELECT machineip ip_key, mountp mnt_key, bavail*bsize free_space, "
        "(100*bavail)/blocks pct FROM filesystem a "
        "WHERE blocks > 0 and (100*bavail)/blocks < 3 AND {n} = {n}"
    ),
    "SELECT * processes": "SELECT * FROM processes WHERE {n} = {n}",
}
runs_made = 0


def fresh(template):
    """The query with a text no earlier run used."""
    global runs_made
    runs_made += 1
    return template.replace("{n}", str(runs_made))


def http(sql, arrow):
    request = urllib.request.Request(
        f"http://{http_addr}/v1/query",
        data=json.dumps({"sql": sql}).encode(),
        headers={"content-type": "application/json"}
        | ({"accept": "application/vnd.apache.arrow.stream"} if arrow else {}),
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        body = response.read()
    return body if arrow else json.loads(body)


def timed(run):
    run()  # warm: tables requested, plans kept
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        run()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def main():
    pg2 = psycopg2.connect(host="127.0.0.1", port=pg_port, user="fleetsql", dbname="fleetsql")
    pg3 = psycopg.connect(f"host=127.0.0.1 port={pg_port} user=fleetsql dbname=fleetsql")
    adbc = flight_sql.connect(f"grpc://{flightsql_addr}")
    print("| query | rows | in-process ms | pg simple | pg extended (binary) | HTTP JSON | HTTP Arrow | Flight SQL |")
    print("|---|---|---|---|---|---|---|---|")
    for name, template in QUERIES.items():
        rows = 0

        def http_json():
            nonlocal rows
            body = http(fresh(template), arrow=False)
            rows = body["row_count"]

        def in_process():
            body = http("EXPLAIN ANALYZE " + fresh(template), arrow=False)
            assert body["row_count"] > 0, body

        def pg_simple():
            cur = pg2.cursor()
            cur.execute(fresh(template))
            cur.fetchall()

        def pg_binary():
            with pg3.cursor(binary=True) as cur:
                cur.execute(fresh(template), prepare=True)
                cur.fetchall()

        def flight():
            with adbc.cursor() as cur:
                cur.execute(fresh(template))
                cur.fetch_arrow_table()

        measured = {
            "pg simple": timed(pg_simple),
            "pg binary": timed(pg_binary),
            "HTTP JSON": timed(http_json),
            "HTTP Arrow": timed(lambda: http(fresh(template), arrow=True)),
            "Flight SQL": timed(flight),
        }
        base = timed(in_process)
        cells = " | ".join(f"{ms:.1f} ms ({ms / base:.2f}x)" for ms in measured.values())
        print(f"| {name} | {rows} | {base:.1f} | {cells} |")
    adbc.close()
    pg3.close()
    pg2.close()


main()
