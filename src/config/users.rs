//! `auth.basic.users_file`: the local user table, a TOML `[users]` table of
//! `name = "<argon2 PHC string>"`.
//!
//! Configuration reads it to refuse a file that does not parse (so `portcullis check` and a
//! reload report it), and `auth::basic` loads it to verify passwords. Only the format is
//! checked here; hashes are verified at authentication time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Why a users file cannot be used. Each message names the file (the configuration error
/// adds the key path and the fix).
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    /// The file cannot be read (missing, permissions, not UTF-8). The I/O error is part of the
    /// message operators see, so it is not also chained as a source.
    #[error("cannot read {}: {error}", path.display())]
    Read { path: PathBuf, error: std::io::Error },
    /// Not TOML, or not exactly one `[users]` table of strings.
    #[error("{}: {message}", path.display())]
    Syntax { path: PathBuf, message: String },
    /// A user's entry is not an argon2 PHC string (a clear-text password, a truncated paste).
    #[error("{}: users.{user}: not an argon2 PHC string ({error})", path.display())]
    Hash { path: PathBuf, user: String, error: argon2::password_hash::Error },
}

/// Reads the users file at `path`: user name → argon2 PHC string.
pub fn load_users_file(path: &Path) -> Result<HashMap<String, String>, UsersFileError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct UsersFile {
        users: HashMap<String, String>,
    }
    let text = std::fs::read_to_string(path).map_err(|error| UsersFileError::Read { path: path.to_path_buf(), error })?;
    let file: UsersFile =
        toml::from_str(&text).map_err(|e| UsersFileError::Syntax { path: path.to_path_buf(), message: e.message().to_string() })?;
    for (user, hash) in &file.users {
        argon2::PasswordHash::new(hash).map_err(|error| UsersFileError::Hash { path: path.to_path_buf(), user: user.clone(), error })?;
    }
    Ok(file.users)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$5wdzb3sGzJ0xbjz1z0Fpiz0u4QWd8Kx0Tq1CvQbmk1E";

    #[test]
    fn a_users_table_of_argon2_hashes_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        std::fs::write(&path, format!("[users]\nagent1 = \"{HASH}\"\n")).unwrap();
        let users = load_users_file(&path).unwrap();
        assert_eq!(users.get("agent1").map(String::as_str), Some(HASH));
    }

    #[test]
    fn each_problem_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let shown = path.display().to_string();
        let missing = load_users_file(&path).unwrap_err().to_string();
        assert!(missing.starts_with(&format!("cannot read {shown}: ")), "{missing}");
        std::fs::write(&path, "[users]\nagent1 = \"s3cret\"\n").unwrap();
        let clear = load_users_file(&path).unwrap_err().to_string();
        assert!(clear.starts_with(&format!("{shown}: users.agent1: not an argon2 PHC string (")), "{clear}");
        std::fs::write(&path, "[people]\n").unwrap();
        let syntax = load_users_file(&path).unwrap_err().to_string();
        assert!(syntax.starts_with(&format!("{shown}: unknown field `people`")), "{syntax}");
    }
}
