// pgjdbc (Debian's libpostgresql-jdbc-java) against a fleetsql Postgres
// listener: what a JDBC tool does before and while it queries. Run as a
// single-file program: java -cp /usr/share/java/postgresql.jar PgJdbc.java PORT
// Prints "ok   NAME" or "FAIL NAME: detail" per check; exits 1 on a failure.

import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;

public class PgJdbc {
    static final List<String> failures = new ArrayList<>();

    static void check(String name, boolean ok, Object detail) {
        if (ok) {
            System.out.println("ok   " + name);
        } else {
            System.out.println("FAIL " + name + ": " + detail);
            failures.add(name);
        }
    }

    interface Body {
        void run() throws Exception;
    }

    static void run(String name, Body body) {
        try {
            body.run();
        } catch (Exception e) {
            System.out.println("FAIL " + name + ": " + e);
            failures.add(name);
        }
    }

    static List<String> column(ResultSet rs, String name) throws Exception {
        List<String> values = new ArrayList<>();
        while (rs.next()) {
            values.add(rs.getString(name));
        }
        return values;
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://127.0.0.1:" + args[0] + "/fleetsql?user=fleetsql";
        try (Connection conn = DriverManager.getConnection(url)) {
            run("query", () -> {
                try (Statement st = conn.createStatement();
                        ResultSet rs = st.executeQuery("SELECT hostname, memtotal FROM sys ORDER BY 1")) {
                    List<String> hosts = column(rs, "hostname");
                    check("query", hosts.equals(List.of("m1", "m2", "m3", "m4")), hosts);
                    SQLWarning warning = st.getWarnings();
                    check("completeness notice", warning != null && warning.getMessage().contains("generation"),
                            warning);
                }
            });
            run("prepared statement", () -> {
                try (PreparedStatement ps = conn.prepareStatement("SELECT role FROM machinerole WHERE ip = ?")) {
                    ps.setString(1, "10.0.2.2");
                    try (ResultSet rs = ps.executeQuery()) {
                        List<String> roles = column(rs, "role");
                        check("prepared statement", roles.equals(List.of("cache")), roles);
                    }
                }
            });
            run("SELECT * join", () -> {
                try (Statement st = conn.createStatement();
                        ResultSet rs = st.executeQuery(
                                "SELECT * FROM sys s JOIN machinerole m ON s.ip = m.ip ORDER BY s.hostname")) {
                    int columns = rs.getMetaData().getColumnCount();
                    int rows = 0;
                    while (rs.next()) {
                        rows++;
                    }
                    check("SELECT * join", rows == 4 && columns == 15, rows + " rows, " + columns + " columns");
                }
            });
            DatabaseMetaData meta = conn.getMetaData();
            run("getTables", () -> {
                try (ResultSet rs = meta.getTables(null, "public", "%", new String[] {"TABLE"})) {
                    List<String> tables = column(rs, "TABLE_NAME");
                    check("getTables", tables.contains("sys") && tables.contains("machinerole"), tables);
                }
            });
            run("getColumns", () -> {
                try (ResultSet rs = meta.getColumns(null, "public", "sys", "%")) {
                    List<String> columns = column(rs, "COLUMN_NAME");
                    check("getColumns", columns.contains("hostname") && columns.contains("_published_at"), columns);
                }
            });
            run("getPrimaryKeys", () -> {
                // Fleet tables have no keys: an answer, with no rows.
                try (ResultSet rs = meta.getPrimaryKeys(null, "public", "sys")) {
                    List<String> keys = column(rs, "COLUMN_NAME");
                    check("getPrimaryKeys", keys.isEmpty(), keys);
                }
            });
            run("getSchemas", () -> {
                try (ResultSet rs = meta.getSchemas()) {
                    List<String> schemas = column(rs, "TABLE_SCHEM");
                    check("getSchemas", schemas.contains("public"), schemas);
                }
            });
            run("timestamptz", () -> {
                try (Statement st = conn.createStatement();
                        ResultSet rs = st.executeQuery(
                                "SELECT CAST('2024-01-02 03:04:05+00:00' AS TIMESTAMPTZ) tz FROM sys WHERE hostname = 'm1'")) {
                    rs.next();
                    java.time.OffsetDateTime tz = rs.getObject(1, java.time.OffsetDateTime.class);
                    check("timestamptz",
                            tz.toInstant().equals(java.time.Instant.parse("2024-01-02T03:04:05Z")), tz);
                }
            });
        }
        if (!failures.isEmpty()) {
            System.out.println("failed: " + String.join(", ", failures));
            System.exit(1);
        }
    }
}
