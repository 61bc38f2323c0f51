"""The ADBC Flight SQL driver (PyPI adbc-driver-flightsql) against a
fleetsql SQL node's Flight SQL endpoint.

Run by the integration test `flightsql::adbc_flight_sql_driver_reads_arrow`
with the endpoint's URI (grpc://host:port); prints one line per check and
exits non-zero when any fails, naming it. Answers are read as Arrow tables.
"""

import sys

import adbc_driver_flightsql.dbapi as flight_sql
import pyarrow

uri = sys.argv[1]
failures = []

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


def main():
    with flight_sql.connect(uri) as conn:
        cur = conn.cursor()

        def count():
            cur.execute("SELECT count(*) AS n, max(memtotal) FROM sys")
            table = cur.fetch_arrow_table()
            check(
                "adbc count",
                isinstance(table, pyarrow.Table)
                and table.column_names == ["n", "max"]
                and table.column("n")[0].as_py() > 0,
                table,
            )
            return table.column("n")[0].as_py()

        machines = count()

        def parameter():
            cur.execute("SELECT ip FROM sys WHERE memtotal > $1 ORDER BY ip", parameters=(0,))
            every = cur.fetch_arrow_table()
            cur.execute(
                "SELECT ip FROM sys WHERE memtotal > $1 ORDER BY ip", parameters=(2**62,)
            )
            none = cur.fetch_arrow_table()
            check(
                "adbc parameter",
                every.num_rows == machines and none.num_rows == 0,
                (every.num_rows, none.num_rows, machines),
            )

        def join():
            cur.execute(JOIN)
            table = cur.fetch_arrow_table()
            check(
                "adbc SELECT * join",
                table.column_names.count("ip") == 2 and table.num_rows > 0,
                table.column_names,
            )

        def write_refused():
            try:
                cur.execute("DROP TABLE sys")
                cur.fetch_arrow_table()
            except Exception as e:  # noqa: BLE001 - the driver's error class varies
                check("adbc write refused", "read-only" in str(e), e)
                return
            check("adbc write refused", False, "DROP TABLE answered")

        def get_objects():
            objects = conn.adbc_get_objects(depth="all", table_name_filter="sys").read_all()
            listed = objects.to_pylist()
            tables = [
                (table["table_name"], [c["column_name"] for c in table["table_columns"] or []])
                for catalog in listed
                for schema in catalog["catalog_db_schemas"] or []
                for table in schema["db_schema_tables"] or []
            ]
            check(
                "adbc get_objects",
                any(name == "sys" and "memtotal" in columns for name, columns in tables),
                tables,
            )

        def info():
            got = conn.adbc_get_info()
            check(
                "adbc vendor info",
                got.get("vendor_name") == "fleetsql" and "DataFusion" in str(got.get("vendor_version")),
                got,
            )

        for name, body in [
            ("adbc parameter", parameter),
            ("adbc SELECT * join", join),
            ("adbc write refused", write_refused),
            ("adbc get_objects", get_objects),
            ("adbc vendor info", info),
        ]:
            run(name, body)
        cur.close()


run("adbc connect", main)
sys.exit(1 if failures else 0)
