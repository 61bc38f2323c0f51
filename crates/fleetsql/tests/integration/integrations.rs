//! `fleetsql demo --integrations FILE`: a scraped exposition and the
//! integrations' health reach SQL like any published table.

use std::time::{Duration, Instant};

use crate::cluster::TestDemo;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_metrics_and_fleet_sources_are_queryable() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let exporter = listener.local_addr().unwrap();
    let body =
        "# TYPE room_temp gauge\nroom_temp{room=\"a\"} 21.5\nroom_temp{room=\"b\"} 19\nbroken{ 1\n";
    let app =
        axum::Router::new().route("/metrics", axum::routing::get(move || async move { body }));
    let server = tokio::spawn(axum::serve(listener, app).into_future());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("integrations.toml");
    std::fs::write(
        &file,
        format!(
            "[[prometheus]]\nname = \"rooms\"\nurl = \"http://{exporter}/metrics\"\ninterval = \"500ms\"\n\n\
             [[prometheus]]\nname = \"gone\"\nurl = \"http://{closed}/metrics\"\nretry_min = \"100ms\"\n"
        ),
    )
    .unwrap();
    let demo =
        TestDemo::start_with(1, 1, "1s", &["--integrations".into(), file.clone().into()]).await;

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = demo
            .query_json("SELECT room, value, job FROM room_temp ORDER BY room")
            .await;
        if status.is_success()
            && body["rows"] == serde_json::json!([["a", 21.5, "rooms"], ["b", 19.0, "rooms"]])
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "scraped table never queryable: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    loop {
        let (status, body) = demo
            .query_json("SELECT name, kind, status, bad_items > 0, failures > 0, last_error FROM fleet_sources ORDER BY name")
            .await;
        let rows = &body["rows"];
        if status.is_success()
            && rows[0][0] == "gone"
            && rows[0][2] == "failing"
            && rows[1][0] == "rooms"
            && rows[1][1] == "prometheus"
            && rows[1][2] == "ok"
            && rows[1][3] == true
            && rows[1][4] == false
        {
            assert!(
                rows[0][5]
                    .as_str()
                    .unwrap()
                    .contains("is the exporter running?"),
                "{body}"
            );
            assert!(rows[1][5].as_str().unwrap().contains("line 4"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "fleet_sources never showed both sources: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.abort();
}

#[test]
fn a_bad_integrations_file_stops_the_demo_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[[prometheus]]\nname = \"x\"\nurl = \"ftp://nowhere\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(crate::cluster::BINARY)
        .args([
            "demo",
            "--pg-port",
            "0",
            "--http-port",
            "0",
            "--publish-port",
            "0",
        ])
        .arg("--integrations")
        .arg(&file)
        .env("FLEETSQL_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must start with http://"), "{stderr}");
}

/// The directory holding `libfleetsql.so`: beside the binary after a
/// build, in `deps/` when only tests were built.
fn libfleetsql_dir() -> std::path::PathBuf {
    let dir = std::path::Path::new(crate::cluster::BINARY)
        .parent()
        .unwrap()
        .to_path_buf();
    [dir.clone(), dir.join("deps")]
        .into_iter()
        .find(|d| d.join("libfleetsql.so").exists())
        .unwrap_or_else(|| {
            panic!(
                "libfleetsql.so not built under {}; build with --workspace",
                dir.display()
            )
        })
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
#include "fleetsql.h"

int main(int argc, char **argv) {
    const char *cols[] = {"svc", "up", "note"};
    fleetsql_table *t = fleetsql_table_new("c_services", cols, 3);
    const char *web[] = {"web", "1", "front, door"};
    const char *db[] = {"db", "0", NULL};
    const char *short_row[] = {"x", "y", "z"};
    if (!t || fleetsql_table_add_row(t, web) || fleetsql_table_add_row(t, db)) {
        fprintf(stderr, "build: %s\n", fleetsql_last_error());
        return 1;
    }
    if (fleetsql_publish(t, argv[1], "c-example") != 0) {
        fprintf(stderr, "publish: %s\n", fleetsql_last_error());
        return 2;
    }
    fleetsql_table_free(t);
    /* A refused publish reports why. */
    fleetsql_table *bad = fleetsql_table_new("fleet_spoof", cols, 3);
    fleetsql_table_add_row(bad, short_row);
    if (fleetsql_publish(bad, argv[1], NULL) == 0) return 3;
    printf("refused: %s\n", fleetsql_last_error());
    fleetsql_table_free(bad);
    return 0;
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn c_and_python_programs_publish_through_libfleetsql() {
    let lib = libfleetsql_dir();
    let include = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../libfleetsql/include");
    let demo = TestDemo::start_with(1, 1, "1s", &[]).await;
    let source = demo.dir.path().join("publish.c");
    let program = demo.dir.path().join("publish");
    std::fs::write(&source, C_PROGRAM).unwrap();
    let cc = std::process::Command::new("gcc")
        .arg(&source)
        .arg("-I")
        .arg(&include)
        .arg("-L")
        .arg(&lib)
        .args(["-lfleetsql", "-o"])
        .arg(&program)
        .output()
        .expect("gcc (see scripts/apt/integrations.txt)");
    assert!(
        cc.status.success(),
        "{}",
        String::from_utf8_lossy(&cc.stderr)
    );
    let run = std::process::Command::new(&program)
        .arg(demo.publish.to_string())
        .env("LD_LIBRARY_PATH", &lib)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{:?} {}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        stdout.contains("the agent refused (4") && stdout.contains("fleet_"),
        "{stdout}"
    );

    let python = std::process::Command::new("python3")
        .arg(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../libfleetsql/examples/publish.py"),
        )
        .arg(lib.join("libfleetsql.so"))
        .arg(demo.publish.to_string())
        .output()
        .expect("python3");
    assert!(
        python.status.success(),
        "{}",
        String::from_utf8_lossy(&python.stderr)
    );

    let (status, body) = demo
        .query_json("SELECT svc, up, note FROM c_services ORDER BY svc")
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(
        body["rows"],
        serde_json::json!([["db", 0, null], ["web", 1, "front, door"]])
    );
    let (status, body) = demo
        .query_json("SELECT svc, up FROM py_services ORDER BY svc")
        .await;
    assert!(status.is_success(), "{body}");
    assert_eq!(body["rows"], serde_json::json!([["db", 0], ["web", 1]]));
}
