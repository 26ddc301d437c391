//! The file name of a multipart part, read from its `Content-Disposition` header as RFC 7578 §4.2 and
//! RFC 6266 describe it: `filename="…"` as a quoted-string (backslash escapes), a bare token, or the extended
//! `filename*=charset'lang'percent-encoded` form (RFC 8187), which wins when both are present.

use percent_encoding::percent_decode_str;

/// The part's file name, or `None` when the header names none.
pub fn file_name(header: &str) -> Option<String> {
    let mut plain = None;
    let mut extended = None;
    for (name, value) in parameters(header) {
        if name.eq_ignore_ascii_case("filename*") {
            extended = extended.or_else(|| decode_extended(&value));
        } else if name.eq_ignore_ascii_case("filename") {
            plain = plain.or(Some(value));
        }
    }
    extended.or(plain)
}

/// The `name=value` parameters after the disposition type, values unquoted.
fn parameters(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = header.chars().peekable();
    // Skip the disposition type ("form-data").
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            name.push(c);
            chars.next();
        }
        let name = name.trim().to_string();
        if name.is_empty() && chars.peek().is_none() {
            break;
        }
        if chars.peek() != Some(&'=') {
            // A parameter without a value: skip it.
            if chars.peek().is_none() {
                break;
            }
            continue;
        }
        chars.next();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(escaped) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
            // Anything between the closing quote and the next ';' is not part of the value.
            while chars.peek().is_some_and(|c| *c != ';') {
                chars.next();
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ';' {
                    break;
                }
                value.push(c);
                chars.next();
            }
            value = value.trim().to_string();
        }
        out.push((name, value));
    }
    out
}

/// `charset'language'percent-encoded` → the text, for UTF-8 and ISO-8859-1 (the two RFC 8187 requires).
fn decode_extended(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let charset = parts.next()?.trim();
    let _language = parts.next()?;
    let encoded = parts.next()?;
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.iter().map(|b| char::from(*b)).collect())
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::file_name;

    #[test]
    fn quoted_plain_and_escaped_names() {
        assert_eq!(file_name(r#"form-data; name="imageData"; filename="horse.png""#).as_deref(), Some("horse.png"));
        assert_eq!(file_name(r#"form-data; name=imageData; filename=horse.png"#).as_deref(), Some("horse.png"));
        assert_eq!(file_name(r#"form-data; filename="a \"b\" c.jpg"; name="x""#).as_deref(), Some(r#"a "b" c.jpg"#));
        assert_eq!(file_name(r#"form-data; filename="semi;colon.jpg""#).as_deref(), Some("semi;colon.jpg"));
        assert_eq!(file_name(r#"form-data; filename="back\\slash.jpg""#).as_deref(), Some(r"back\slash.jpg"));
        assert_eq!(file_name(r#"form-data; name="imageData""#), None);
        assert_eq!(file_name("form-data"), None);
        assert_eq!(file_name(r#"form-data; FILENAME="Upper.JPG""#).as_deref(), Some("Upper.JPG"));
    }

    #[test]
    fn extended_names_win_and_decode() {
        let h = r#"form-data; name="imageData"; filename="fallback.jpg"; filename*=UTF-8''%C3%A9t%C3%A9%20photo.jpg"#;
        assert_eq!(file_name(h).as_deref(), Some("été photo.jpg"));
        assert_eq!(file_name("form-data; filename*=iso-8859-1'en'%E9.png").as_deref(), Some("é.png"));
        // An undecodable extended value falls back to the plain one.
        assert_eq!(file_name(r#"form-data; filename="ok.jpg"; filename*=koi8-r''%E9"#).as_deref(), Some("ok.jpg"));
    }

    #[test]
    fn malformed_headers_do_not_panic() {
        for h in [
            "",
            ";",
            "form-data;;;",
            "form-data; filename",
            "form-data; filename=\"unterminated",
            "=;=\"",
            "form-data; filename*=''",
        ] {
            let _ = file_name(h);
        }
    }
}
