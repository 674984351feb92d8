//! The `--dev` local issuer: an Ed25519 key of its own, kept in the data
//! directory so that tokens survive restarts, and tokens minted for any
//! e-mail address without a password.
//!
//! Only for development: the server must refuse dev mode on a non-loopback
//! address. This module owns the key file (`dev-issuer.key`, PKCS#8 DER,
//! mode 0600) and never writes anything else.

use std::fs;
use std::io::{self, Write as _};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use orgplane_core::Email;
use serde_json::{Value, json};

use crate::IssuerConfig;
use crate::keys::{KeyAlg, SigningKey};

/// The file in the data directory that holds the key.
pub const KEY_FILE: &str = "dev-issuer.key";
/// The `aud` of dev tokens.
pub const AUDIENCE: &str = "orgplane-dev";
/// How long a minted token is valid.
pub const TOKEN_LIFETIME_SECS: i64 = 60 * 60;

/// The dev issuer: its key and its `iss`.
#[derive(Debug)]
pub struct DevIssuer {
    issuer: String,
    key: SigningKey,
}

impl DevIssuer {
    /// Loads `<data_dir>/dev-issuer.key`, or creates it (and `data_dir`) on
    /// first start. `issuer` is the `iss` of minted tokens, e.g.
    /// `http://127.0.0.1:8080/dev`.
    pub fn load_or_create(data_dir: &Path, issuer: String) -> Result<Self, String> {
        let path = data_dir.join(KEY_FILE);
        let der = match fs::read(&path) {
            Ok(der) => {
                warn_if_readable_by_others(&path);
                der
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => create_key_file(data_dir, &path)?,
            Err(e) => return Err(format!("could not read the dev issuer key {}: {e}", path.display())),
        };
        let key = SigningKey::from_pkcs8(KeyAlg::EdDsa, "", &der).map_err(|e| {
            format!("{} is not a dev issuer key ({e}); delete it and a new one will be created", path.display())
        })?;
        // Named after the key itself, so the `kid` changes exactly when the key does.
        let kid = format!("dev-{}", key.thumbprint());
        Ok(DevIssuer { issuer, key: key.with_kid(kid) })
    }

    /// The `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        self.key.kid()
    }

    /// How the verifier should trust this issuer (with
    /// [`crate::Verifier::add_static_issuer`] and [`DevIssuer::jwks`]).
    pub fn issuer_config(&self) -> IssuerConfig {
        let mut config = IssuerConfig::new(
            self.issuer.clone(),
            format!("{}/jwks.json", self.issuer.trim_end_matches('/')),
            vec![AUDIENCE.to_owned()],
        );
        config.assume_email_verified = Some(true);
        config
    }

    /// `{"keys": [<public JWK>]}`, for the server to publish and the verifier to trust.
    pub fn jwks(&self) -> Value {
        json!({ "keys": [self.key.public_jwk()] })
    }

    /// A token for `email` (and `name`), valid for an hour: `sub` is
    /// `dev|<lower-cased email>`, the same for the same address every time.
    pub fn mint(&self, email: &str, name: Option<&str>) -> Result<String, String> {
        let email = Email::parse(email).map_err(|e| e.to_string())?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "the system clock is before 1970".to_owned())?
            .as_secs();
        let now = i64::try_from(now).map_err(|_| "the system clock is out of range".to_owned())?;
        let mut claims = json!({
            "iss": self.issuer,
            "sub": format!("dev|{email}"),
            "aud": AUDIENCE,
            "email": email.as_str(),
            "email_verified": true,
            "iat": now,
            "nbf": now,
            "exp": now + TOKEN_LIFETIME_SECS,
        });
        if let Some(name) = name.map(str::trim).filter(|name| !name.is_empty()) {
            claims["name"] = Value::String(name.to_owned());
        }
        self.key.sign(&claims)
    }
}

/// Generates a key and writes it, readable by the owner only. If another
/// process created the file meanwhile, that key wins and is returned.
fn create_key_file(data_dir: &Path, path: &Path) -> Result<Vec<u8>, String> {
    fs::create_dir_all(data_dir)
        .map_err(|e| format!("could not create the data directory {}: {e}", data_dir.display()))?;
    let key = SigningKey::generate(KeyAlg::EdDsa, "")?;
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = match options.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return fs::read(path).map_err(|e| format!("could not read the dev issuer key {}: {e}", path.display()));
        }
        Err(e) => return Err(format!("could not create the dev issuer key {}: {e}", path.display())),
    };
    file.write_all(key.pkcs8_der())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("could not write the dev issuer key {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "created the dev issuer key");
    Ok(key.pkcs8_der().to_vec())
}

fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(metadata) = fs::metadata(path)
            && metadata.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(path = %path.display(), "the dev issuer key is readable by other users; chmod 600 it");
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}
