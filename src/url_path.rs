//! Path hygiene, shared by the request path (`access`) and configuration (`config`'s
//! passthrough rules): a path is refused when, after percent-decoding once, it has a `.`, `..` or
//! empty (`//`) segment, an encoded `/` or `\\`, or bad encoding — an upstream that normalises
//! paths would otherwise be asked for something outside its API's base path.

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnsafePath {
    #[error("the path has a `.` or `..` segment")]
    DotSegment,
    #[error("the path has an empty segment (`//`)")]
    EmptySegment,
    #[error("the path has an encoded `/` or a `\\`")]
    EncodedSeparator,
    #[error("the path is not valid percent-encoded UTF-8")]
    BadEncoding,
}

/// Refuses a path that could step outside the API it names (see the module header).
pub fn check_path(path: &str) -> Result<(), UnsafePath> {
    let decoded = percent_decode(path).ok_or(UnsafePath::BadEncoding)?;
    let lower = path.to_ascii_lowercase();
    if lower.contains("%2f") || lower.contains("%5c") || decoded.contains('\\') {
        return Err(UnsafePath::EncodedSeparator);
    }
    let mut segments = decoded.split('/');
    // The path starts with `/`: its first segment is the empty one before it.
    segments.next();
    let segments: Vec<&str> = segments.collect();
    for (i, segment) in segments.iter().enumerate() {
        match *segment {
            "." | ".." => return Err(UnsafePath::DotSegment),
            // A trailing slash (`/v1/files/`) is one empty last segment; anywhere else, `//`.
            "" if i + 1 < segments.len() => return Err(UnsafePath::EmptySegment),
            _ => {}
        }
    }
    Ok(())
}

/// `%XX` sequences decoded once; `None` when one is malformed or the result is not UTF-8.
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_and_encoded_separators_are_refused() {
        for ok in [
            "/v1/files",
            "/v1/files/",
            "/v1/files/file-1.jsonl",
            "/v1/a%20b",
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("/v1/../../x", UnsafePath::DotSegment),
            ("/v1/./files", UnsafePath::DotSegment),
            ("/v1/%2e%2e/x", UnsafePath::DotSegment),
            ("/v1/%2E./x", UnsafePath::DotSegment),
            ("/v1//files", UnsafePath::EmptySegment),
            ("/v1/files%2f..%2fx", UnsafePath::EncodedSeparator),
            ("/v1/files%5cx", UnsafePath::EncodedSeparator),
            ("/v1/files\\x", UnsafePath::EncodedSeparator),
            ("/v1/%zz", UnsafePath::BadEncoding),
            ("/v1/%ff", UnsafePath::BadEncoding),
        ] {
            assert_eq!(check_path(bad), Err(why), "{bad}");
        }
        // Decoded once: a doubly encoded dot is a literal `%2e` upstream, not a dot segment.
        assert_eq!(check_path("/v1/%252e%252e/x"), Ok(()));
    }
}
