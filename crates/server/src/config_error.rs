//! Configuration errors as a newcomer reads them: the key as written in the
//! file (`auth.issuers[0]`, never figment's `default.` profile prefix),
//! where it came from (the file's absolute path, or the environment
//! variable's name), and what was expected, with one level of quoting.

use figment::error::{Error, Kind};

/// Every error of one failed load, one per line.
pub(crate) fn describe(errors: Error) -> String {
    let lines: Vec<String> = errors.into_iter().map(|e| one(&e)).collect();
    format!("configuration: {}", lines.join("\nconfiguration: "))
}

fn key(path: &[String]) -> String {
    let mut key = String::new();
    for part in path {
        if part.parse::<usize>().is_ok() {
            key.push_str(&format!("[{part}]"));
        } else {
            if !key.is_empty() {
                key.push('.');
            }
            key.push_str(&part.to_ascii_lowercase());
        }
    }
    key
}

fn source(e: &Error) -> Option<String> {
    let metadata = e.metadata.as_ref()?;
    if let Some(path) = metadata.source.as_ref().and_then(|s| s.file_path()) {
        let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        return Some(format!("in {}", absolute.display()));
    }
    if metadata.name.contains("environment") {
        let var: Vec<String> = e.path.iter().map(|p| p.to_ascii_uppercase()).collect();
        return Some(format!("in the environment variable ORGPLANE_{}", var.join("_")));
    }
    None
}

fn one(e: &Error) -> String {
    let key = key(&e.path);
    let what = match &e.kind {
        Kind::UnknownField(_, expected) => {
            let section = key.rsplit_once('.').map(|(s, _)| format!("[{s}]")).unwrap_or_else(|| "the top level".into());
            return with_source(e, format!("unknown key `{key}`; {section} takes {}", expected.join(", ")));
        }
        Kind::MissingField(field) => {
            let full = if key.is_empty() { field.to_string() } else { format!("{key}.{field}") };
            return with_source(e, format!("`{full}` is required and missing"));
        }
        Kind::InvalidType(actual, expected) => format!("found {actual}, expected {expected}"),
        Kind::UnknownVariant(found, expected) => {
            format!("unknown value \"{found}\"; expected one of {}", expected.join(", "))
        }
        other => other.to_string(),
    };
    let hint = if key == "listen" {
        "; listen takes an IP address and a port, such as 127.0.0.1:8080 or 0.0.0.0:8080 (not a host name)"
    } else {
        ""
    };
    let message = if key.is_empty() { format!("{what}{hint}") } else { format!("{key}: {what}{hint}") };
    with_source(e, message)
}

fn with_source(e: &Error, message: String) -> String {
    match source(e) {
        Some(at) => format!("{message} ({at})"),
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::Config;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail's closures return figment's own (large) error
    fn errors_name_the_key_the_absolute_file_and_one_quote_level() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("bad.toml", "lisen = \"x\"\n")?;
            let err = Config::load(Some(Path::new("bad.toml"))).expect_err("unknown key");
            let absolute = jail.directory().join("bad.toml");
            assert!(err.contains("unknown key `lisen`") && err.contains("listen, database_url"), "{err}");
            assert!(err.contains(&absolute.display().to_string()), "the absolute path: {err}");
            assert!(!err.contains("default.") && !err.contains("``") && !err.contains("`one of"), "{err}");

            jail.create_file("issuer.toml", "[auth]\nissuers = [{issuer = \"x\"}]\n")?;
            // Presets may supply jwks_url, so its absence is found where
            // `serve` and `plans check` resolve the issuers.
            let config = Config::load(Some(Path::new("issuer.toml"))).expect("parses");
            let err = crate::preflight::check(&config).expect_err("missing key").to_string();
            assert!(err.contains("`auth.issuers[0].jwks_url` is required"), "{err}");

            jail.set_env("ORGPLANE_AUTH_LEEWAY_SECS", "abc");
            let err = Config::load(None).expect_err("bad number");
            assert!(err.contains("auth.leeway_secs: found string \"abc\", expected u64"), "{err}");
            assert!(err.contains("environment variable ORGPLANE_AUTH_LEEWAY_SECS"), "{err}");
            Ok(())
        });
    }
}
