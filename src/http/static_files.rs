//! The built-in `static` upstream kind: a service that serves a directory itself
//! (quickstart pages, maintenance pages, public assets without an internal server).
//!
//! The request path maps onto the directory as nginx's `root` does. Percent-decoded `..`,
//! NUL and backslashes are refused, symlinks out of the directory are refused, and files
//! above [`MAX_STATIC_FILE`] are not served (the edge is not a download server).

use std::path::{Component, Path, PathBuf};

use http::{HeaderValue, Method, Response, StatusCode, header};

use super::body::ProxyBody;
use super::respond::ProxyError;

/// Largest file served from a static directory.
pub const MAX_STATIC_FILE: u64 = 16 * 1024 * 1024;

/// Serves `request_path` from `root`.
pub async fn serve(root: &Path, method: &Method, request_path: &str) -> Result<Response<ProxyBody>, ProxyError> {
    if method != Method::GET && method != Method::HEAD {
        return Err(ProxyError::MethodNotAllowed);
    }
    let relative = safe_relative_path(request_path).ok_or(ProxyError::BadRequest("invalid path"))?;
    let mut path = root.join(relative);
    if request_path.ends_with('/') || tokio::fs::metadata(&path).await.is_ok_and(|m| m.is_dir()) {
        path.push("index.html");
    }
    // Resolve symlinks and make sure the file is still inside the root.
    let canonical_root = tokio::fs::canonicalize(root).await.map_err(|_| ProxyError::Internal)?;
    let canonical = tokio::fs::canonicalize(&path).await.map_err(|_| ProxyError::NotFound)?;
    if !canonical.starts_with(&canonical_root) {
        return Err(ProxyError::NotFound);
    }
    let metadata = tokio::fs::metadata(&canonical).await.map_err(|_| ProxyError::NotFound)?;
    if !metadata.is_file() || metadata.len() > MAX_STATIC_FILE {
        return Err(ProxyError::NotFound);
    }
    let body = if method == Method::HEAD {
        ProxyBody::empty()
    } else {
        ProxyBody::full(tokio::fs::read(&canonical).await.map_err(|_| ProxyError::NotFound)?)
    };
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(&canonical)));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(metadata.len()));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    Ok(response)
}

/// The request path as a relative path without `..`, or `None` when it tries to escape.
fn safe_relative_path(request_path: &str) -> Option<PathBuf> {
    let decoded = crate::net::percent::decode(request_path)?;
    if decoded.contains('\0') || decoded.contains('\\') {
        return None;
    }
    let mut out = PathBuf::new();
    for component in Path::new(decoded.trim_start_matches('/')).components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "txt" => "text/plain; charset=utf-8",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/x-icon",
        "woff2" => "font/woff2",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_is_refused() {
        assert_eq!(safe_relative_path("/a/b.css"), Some(PathBuf::from("a/b.css")));
        assert_eq!(safe_relative_path("/"), Some(PathBuf::new()));
        for bad in ["/../etc/passwd", "/a/%2e%2e/%2e%2e/x", "/a%00b", "/a\\..\\b", "/%zz"] {
            assert_eq!(safe_relative_path(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn serves_index_files_and_refuses_symlinks_out_of_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("www");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("index.html"), "<h1>hi</h1>").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), root.join("leak.txt")).unwrap();
        let r = serve(&root, &Method::GET, "/").await.unwrap();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(r.headers()[header::CONTENT_LENGTH], "11");
        assert_eq!(serve(&root, &Method::GET, "/leak.txt").await.unwrap_err(), ProxyError::NotFound);
        assert_eq!(serve(&root, &Method::GET, "/nope").await.unwrap_err(), ProxyError::NotFound);
        assert_eq!(serve(&root, &Method::POST, "/").await.unwrap_err(), ProxyError::MethodNotAllowed);
    }
}
