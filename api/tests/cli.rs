//! The platform CLI's output is for scripts: standard output holds only the answer (an
//! issued key), and the logs (the audit line among them) go to standard error.

use std::process::Command;

fn api(database_url: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_api"))
        .args(args)
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info")
        .env_remove("APP_ENV")
        .output()
        .expect("the api binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn key_issue_prints_only_the_key_on_standard_output() {
    let base = std::env::var("DATABASE_URL").expect("DATABASE_URL names a running server");
    let admin = common::db::connect(&base, 1)
        .await
        .expect("server reachable");
    let name = format!("cli_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&admin)
        .await
        .expect("create database");
    let (server, _) = base.rsplit_once('/').expect("a database in the URL");
    let url = format!("{server}/{name}");

    assert!(api(&url, &["migrate"]).0);
    let (created, _, stderr) = api(
        &url,
        &[
            "tenant",
            "create",
            "cli-salon",
            "--name",
            "CLI Salon",
            "--time-zone",
            "Europe/London",
            "--email",
            "owner@cli-salon.example",
        ],
    );
    assert!(created, "{stderr}");

    let (issued, stdout, stderr) = api(&url, &["key", "issue", "cli-salon", "--name", "ci"]);
    assert!(issued, "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "stdout holds more than the key: {stdout:?}");
    assert!(
        lines[0].starts_with("bk_") && lines[0].len() == 3 + 12 + 1 + 64,
        "{stdout:?}"
    );
    assert!(
        stderr.contains("audit"),
        "the audit line goes to stderr: {stderr:?}"
    );
}
