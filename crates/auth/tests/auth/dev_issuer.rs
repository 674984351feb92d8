//! The `--dev` issuer: its key survives restarts, and its tokens verify
//! without any HTTP.

use std::path::PathBuf;

use orgplane_auth::dev::{self, DevIssuer};
use orgplane_auth::{AuthError, Verifier};

use crate::support::options;

const DEV_ISS: &str = "http://127.0.0.1:8080/dev";

/// A fresh directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let path = std::env::temp_dir().join(format!("orgplane-auth-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn dev_issuer_persists_its_key_across_restarts() {
    let dir = TempDir::new("persist");
    let data_dir = dir.0.join("nested/data");

    let first = DevIssuer::load_or_create(&data_dir, DEV_ISS.into()).expect("created");
    let second = DevIssuer::load_or_create(&data_dir, DEV_ISS.into()).expect("loaded");

    assert_eq!(first.jwks(), second.jwks());
    assert_eq!(first.kid(), second.kid());
    let key_file = data_dir.join(dev::KEY_FILE);
    assert!(key_file.is_file());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_file).expect("metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn corrupt_key_file_is_reported_with_the_fix() {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).expect("mkdir");
    std::fs::write(dir.0.join(dev::KEY_FILE), b"not a key").expect("write");

    let error = DevIssuer::load_or_create(&dir.0, DEV_ISS.into()).expect_err("refused");

    assert!(error.contains("delete it"), "{error}");
}

#[tokio::test]
async fn dev_tokens_verify_through_a_static_issuer_and_survive_a_restart() {
    let dir = TempDir::new("mint");
    let issuer = DevIssuer::load_or_create(&dir.0, DEV_ISS.into()).expect("created");
    let config = issuer.issuer_config();
    assert_eq!(config.jwks_url, "http://127.0.0.1:8080/dev/jwks.json");
    assert_eq!(config.audience, Some(vec!["orgplane-dev".to_owned()]));
    // Nothing listens on the JWKS URL: the keys must come from `add_static_issuer`.
    let verifier = Verifier::new(vec![], options()).expect("no issuers");
    verifier.add_static_issuer(config.clone(), issuer.jwks()).expect("registered");

    let token = issuer.mint(" Alice@Example.COM ", Some("Alice")).expect("minted");
    let identity = verifier.verify(&token).await.expect("dev token verifies");

    assert_eq!(identity.issuer, DEV_ISS);
    assert_eq!(identity.subject, "dev|alice@example.com");
    assert_eq!(identity.email.as_deref(), Some("alice@example.com"));
    assert!(identity.email_verified);
    assert_eq!(identity.name.as_deref(), Some("Alice"));
    assert!(identity.expires_at > crate::support::now() + 3500);

    let restarted = DevIssuer::load_or_create(&dir.0, DEV_ISS.into()).expect("loaded");
    let again = restarted.mint("alice@example.com", None).expect("minted");
    let identity = verifier.verify(&again).await.expect("a token minted after a restart verifies");
    assert_eq!(identity.subject, "dev|alice@example.com", "sub is stable per e-mail");
    assert_eq!(identity.name, None);

    assert!(verifier.add_static_issuer(config, issuer.jwks()).is_err(), "an issuer is registered once");
}

#[tokio::test]
async fn another_dev_key_is_not_trusted() {
    let (dir_a, dir_b) = (TempDir::new("key-a"), TempDir::new("key-b"));
    let trusted = DevIssuer::load_or_create(&dir_a.0, DEV_ISS.into()).expect("created");
    let other = DevIssuer::load_or_create(&dir_b.0, DEV_ISS.into()).expect("created");
    let verifier = Verifier::new(vec![], options()).expect("no issuers");
    verifier.add_static_issuer(trusted.issuer_config(), trusted.jwks()).expect("registered");

    let token = other.mint("mallory@example.com", None).expect("minted");

    assert_eq!(verifier.verify(&token).await, Err(AuthError::UnknownKey { kid: Some(other.kid().to_owned()) }));
}

#[test]
fn minting_for_a_non_email_is_refused() {
    let dir = TempDir::new("bad-email");
    let issuer = DevIssuer::load_or_create(&dir.0, DEV_ISS.into()).expect("created");

    assert!(issuer.mint("not an email", None).is_err());
}
