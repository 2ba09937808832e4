//! The api binary refuses to start in production on a development setup.

use std::process::Command;

fn run_in_production(database_url: &str) -> (bool, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_api"))
        .arg("migrate")
        .env("APP_ENV", "production")
        .env("DATABASE_URL", database_url)
        .env("REDIS_URL", "redis://:a-real-secret@127.0.0.1:1")
        .env("SMTP_URL", "smtp://127.0.0.1:1")
        .env("ALLOWED_HOSTS", "api.example.com")
        .output()
        .expect("the api binary runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn production_refuses_a_database_without_tls_or_with_the_default_password() {
    let (started, stderr) =
        run_in_production("postgres://booking:booking@127.0.0.1:1/booking?sslmode=require");
    assert!(!started);
    assert!(stderr.contains("default password"), "{stderr}");

    let (started, stderr) = run_in_production("postgres://app:l0ng-secret@127.0.0.1:1/booking");
    assert!(!started);
    assert!(stderr.contains("sslmode"), "{stderr}");
}
