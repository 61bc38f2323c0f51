"""Times the seed queries in DuckDB over the tables fleetsql bench exported.

Usage: python3 duckdb_queries.py EXPORT_DIR RUNS
Prints one JSON object: {"version": ..., "queries": {name: {"rows", "times_ms"}}}
or {"error": ...} when DuckDB is not installed.
"""

import json
import os
import sys
import time

try:
    import duckdb
except ImportError as error:
    print(json.dumps({"error": f"python cannot import duckdb ({error}); scripts/bench installs it"}))
    sys.exit(0)

export_dir, runs = sys.argv[1], int(sys.argv[2])
with open(os.path.join(export_dir, "queries.json"), encoding="utf-8") as f:
    queries = json.load(f)

con = duckdb.connect()
# Loaded into DuckDB's own storage first, as fleetsql holds its tables in
# memory: the timings compare query execution, not file reading.
for name in os.listdir(export_dir):
    table, ext = os.path.splitext(name)
    path = os.path.join(export_dir, name).replace("'", "''")
    if ext == ".parquet":
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_parquet('{path}')")
    elif ext == ".csv":
        con.execute(f"CREATE TABLE {table} AS SELECT * FROM read_csv_auto('{path}')")

results = {}
for name, sql in queries:
    rows = len(con.execute(sql).fetchall())
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        con.execute(sql).fetchall()
        times.append((time.perf_counter() - started) * 1000.0)
    results[name] = {"rows": rows, "times_ms": times}

print(json.dumps({"version": duckdb.__version__, "queries": results}))
