"""The Postgres drivers people use, against a fleetsql SQL node.

Run by the integration test `pg_clients::python_drivers` with the node's
Postgres port; prints one line per check and exits non-zero when any
fails, naming it. Every driver runs a seed query, a parameterised query
and a `SELECT *` over a join, and reads the completeness NOTICE where the
driver exposes notices.
"""

import asyncio
import sys

port = int(sys.argv[1])
failures = []

SEED_DISK = (
    "SELECT machineip ip_key, mountp mnt_key, bavail*bsize free_space, "
    "(100*bavail)/blocks pct FROM filesystem a "
    "WHERE blocks > 0 and (100*bavail)/blocks < 3 ORDER BY ip_key"
)
SEED_DISK_ROWS = [("10.0.1.1", "/var", 81920000, 2), ("10.0.2.2", "/var", 20480000, 1)]
JOIN = "SELECT * FROM sys s JOIN machinerole m ON s.ip = m.ip ORDER BY s.ip"


def check(name, condition, detail=""):
    print(("ok   " if condition else "FAIL ") + name + ("" if condition else f": {detail}"))
    if not condition:
        failures.append(name)


def run(name, body):
    try:
        body()
    except Exception as e:  # noqa: BLE001 - every failure is reported by name
        check(name, False, f"{type(e).__name__}: {e}")


def psycopg3():
    import psycopg

    notices = []
    with psycopg.connect(f"host=127.0.0.1 port={port} user=fleetsql dbname=fleetsql") as conn:
        conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        rows = conn.execute(SEED_DISK).fetchall()
        check("psycopg3 seed query", [tuple(r) for r in rows] == SEED_DISK_ROWS, rows)
        cur = conn.execute(JOIN)
        names = [c.name for c in cur.description]
        check("psycopg3 SELECT * join", names.count("ip") == 2 and len(cur.fetchall()) == 4, names)
        rows = conn.execute("SELECT hostname FROM sys WHERE memtotal > %s ORDER BY 1", (1500000,)).fetchall()
        check("psycopg3 parameters", [r[0] for r in rows] == ["m2", "m4"], rows)
        rows = conn.execute("SELECT hostname FROM sys WHERE hostname = %s", ("m3",), prepare=True).fetchall()
        check("psycopg3 prepared", rows == [("m3",)], rows)
    check("psycopg3 notice", any("generation" in n for n in notices), notices)


def psycopg2_driver():
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=port, user="fleetsql", dbname="fleetsql")
    cur = conn.cursor()
    cur.execute(SEED_DISK)
    check("psycopg2 seed query", cur.fetchall() == SEED_DISK_ROWS)
    cur.execute(JOIN)
    check("psycopg2 SELECT * join", [d[0] for d in cur.description].count("ip") == 2)
    cur.execute("SELECT count(*) FROM processes WHERE rss > %s", (500000,))
    check("psycopg2 parameters", cur.fetchone()[0] == 3)
    check("psycopg2 notice", any("generation" in n for n in conn.notices), conn.notices)
    conn.close()


def asyncpg_driver():
    import asyncpg

    async def body():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="fleetsql", database="fleetsql")
        notices = []
        conn.add_log_listener(lambda c, m: notices.append(m.message))
        rows = await conn.fetch(SEED_DISK)
        check("asyncpg seed query", [tuple(r) for r in rows] == SEED_DISK_ROWS, rows)
        rows = await conn.fetch("SELECT pid, procname FROM processes WHERE rss > $1 ORDER BY pid", 700000)
        check("asyncpg parameters", [r["pid"] for r in rows] == [101, 201, 302], rows)
        rows = await conn.fetch(JOIN)
        check("asyncpg SELECT * join", len(rows) == 4 and len(rows[0]) == 15, rows[:1])
        await conn.close()
        check("asyncpg notice", any("generation" in n for n in notices), notices)

    asyncio.run(body())


# Results in binary format: asyncpg asks for it for every type it knows,
# psycopg 3 when the cursor is binary. One column of each type we have.
TYPES = (
    "SELECT CAST(7 AS INT) i4, CAST(8 AS BIGINT) i8, CAST(2 AS SMALLINT) i2, "
    "CAST(1.5 AS DOUBLE) f8, CAST(2.5 AS REAL) f4, hostname, hostname = 'm1' b, "
    "CAST('2024-01-02 03:04:05' AS TIMESTAMP) ts, CAST('2024-01-02' AS DATE) d "
    "FROM sys WHERE hostname = 'm1'"
)
# A TIMESTAMPTZ travels as Postgres sends it: OID 1184, in binary UTC
# microseconds since 2000-01-01, in text `2024-01-02 03:04:05+00`.
TIMESTAMPTZ = "SELECT CAST('2024-01-02 03:04:05+00:00' AS TIMESTAMPTZ) tz FROM sys WHERE hostname = 'm1'"
TIMESTAMPTZ_OID = 1184


def expected_types():
    import datetime

    return (7, 8, 2, 1.5, 2.5, "m1", True, datetime.datetime(2024, 1, 2, 3, 4, 5), datetime.date(2024, 1, 2))


def binary_results():
    import datetime

    import asyncpg
    import psycopg

    utc = datetime.datetime(2024, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc)

    async def body():
        conn = await asyncpg.connect(host="127.0.0.1", port=port, user="fleetsql", database="fleetsql")
        rows = await conn.fetch(TYPES)
        check("asyncpg binary types", [tuple(r) for r in rows] == [expected_types()], rows)
        rows = await conn.fetch(TIMESTAMPTZ)
        check("asyncpg binary timestamptz", [r[0] for r in rows] == [utc], rows)
        statement = await conn.prepare(TIMESTAMPTZ)
        oids = [a.type.oid for a in statement.get_attributes()]
        check("asyncpg timestamptz oid", oids == [TIMESTAMPTZ_OID], oids)
        await conn.close()

    asyncio.run(body())
    with psycopg.connect(f"host=127.0.0.1 port={port} user=fleetsql dbname=fleetsql") as conn:
        cur = conn.cursor(binary=True)
        rows = cur.execute(TYPES).fetchall()
        check("psycopg3 binary types", rows == [expected_types()], rows)
        result = cur.pgresult
        formats = [result.fformat(i) for i in range(result.nfields)] if result else []
        check("psycopg3 binary was asked for and sent", formats and all(f == 1 for f in formats), formats)
        rows = cur.execute(TIMESTAMPTZ).fetchall()
        check("psycopg3 binary timestamptz", [r[0] for r in rows] == [utc], rows)
        result = cur.pgresult
        oids = [result.ftype(i) for i in range(result.nfields)] if result else []
        check("psycopg3 binary timestamptz oid", oids == [TIMESTAMPTZ_OID], oids)
        # Text format, read raw: the string Postgres prints (session zone UTC).
        cur = conn.cursor()
        cur.adapters.register_loader("timestamptz", psycopg.types.string.TextLoader)
        rows = cur.execute(TIMESTAMPTZ).fetchall()
        check("psycopg3 text timestamptz", rows == [("2024-01-02 03:04:05+00",)], rows)


def sqlalchemy_and_pandas():
    import pandas
    import sqlalchemy

    engine = sqlalchemy.create_engine(f"postgresql+psycopg://fleetsql@127.0.0.1:{port}/fleetsql")
    with engine.connect() as conn:
        rows = conn.execute(sqlalchemy.text(SEED_DISK)).all()
        check("sqlalchemy seed query", [tuple(r) for r in rows] == SEED_DISK_ROWS, rows)
        rows = conn.execute(
            sqlalchemy.text("SELECT role FROM machinerole WHERE ip = :ip"), {"ip": "10.0.2.2"}
        ).all()
        check("sqlalchemy parameters", rows == [("cache",)], rows)
    frame = pandas.read_sql(JOIN, engine)
    check("pandas read_sql SELECT * join", frame.shape == (4, 15), frame.shape)
    frame = pandas.read_sql(sqlalchemy.text("SELECT hostname, memtotal FROM sys ORDER BY 1"), engine)
    check("pandas read_sql", list(frame["hostname"]) == ["m1", "m2", "m3", "m4"], frame)


run("psycopg3", psycopg3)
run("psycopg2", psycopg2_driver)
run("asyncpg", asyncpg_driver)
run("sqlalchemy/pandas", sqlalchemy_and_pandas)
run("binary results", binary_results)
if failures:
    print("failed: " + ", ".join(failures))
    sys.exit(1)
