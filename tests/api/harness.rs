//! The test harness itself: an unreachable PostgreSQL fails the PostgreSQL
//! half of a test unless the developer skips it on purpose.

use std::process::{Command, Output};

/// Runs one PostgreSQL-half test of this binary in a child process whose
/// PostgreSQL is unreachable (nothing listens on port 1).
fn run_postgres_half_without_postgres(envs: &[(&str, &str)]) -> (Output, String) {
    let mut cmd = Command::new(std::env::current_exe().expect("the test binary"));
    cmd.args(["--exact", "cli::postgres::migrate_is_idempotent", "--nocapture", "--test-threads=1"])
        .env("ORGPLANE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:1/postgres")
        .env_remove("CI")
        .env_remove("ORGPLANE_TEST_SKIP_POSTGRES");
    for (key, value) in envs {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("the test binary runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out, text)
}

#[test]
fn an_unreachable_postgres_fails_the_test_and_says_how_to_skip() {
    let (out, text) = run_postgres_half_without_postgres(&[]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("1 failed"), "{text}");
    assert!(text.contains("unreachable") && text.contains("ORGPLANE_TEST_SKIP_POSTGRES=1"), "{text}");
}

#[test]
fn skip_postgres_skips_the_half_loudly() {
    let (out, text) = run_postgres_half_without_postgres(&[("ORGPLANE_TEST_SKIP_POSTGRES", "1")]);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed") && text.contains("SKIPPING the PostgreSQL half"), "{text}");
}

#[test]
fn ci_fails_an_unreachable_postgres_even_when_told_to_skip() {
    let (out, text) = run_postgres_half_without_postgres(&[("ORGPLANE_TEST_SKIP_POSTGRES", "1"), ("CI", "true")]);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("CI is set") && text.contains("unreachable"), "{text}");
}
