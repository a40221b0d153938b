//! Turns a TOML error span into `file:line:col: dotted.key: message`, shared by inventory and scenario.

use std::ops::Range;

use crate::error::{Error, Located, SourcePos};

/// A config error at `span`. Serde's messages do not say which key they are about, so the dotted
/// key is recovered from the text: the table header above the span and the key on its line.
pub(crate) fn config_error(
    file: &str,
    text: &str,
    span: Option<Range<usize>>,
    message: &str,
) -> Error {
    let message = message.trim_end();
    let Some(span) = span else {
        return Error::Config(Located::new(format!("{file}: {message}"), None));
    };
    let key = key_path_at(text, span.start);
    let message = match key {
        Some(k) if !message.starts_with(k.as_str()) => format!("{k}: {message}"),
        _ => message.to_string(),
    };
    let pos = SourcePos::from_offset(file, text, span.start);
    Error::Config(Located::new(message, Some(pos)).with_source_text(text))
}

fn key_path_at(text: &str, offset: usize) -> Option<String> {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = &text[line_start..line_end];
    let header = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| {
            l.trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        });
    let trimmed = line.trim();
    if trimmed.starts_with('[') {
        return Some(
            trimmed
                .trim_start_matches('[')
                .split(']')
                .next()?
                .trim()
                .to_string(),
        );
    }
    let key = trimmed.split('=').next().map(str::trim).filter(|k| {
        trimmed.contains('=')
            && !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '"'))
    });
    match (header, key) {
        (Some(h), Some(k)) => Some(format!("{h}.{}", k.replace('"', ""))),
        (None, Some(k)) => Some(k.replace('"', "")),
        (Some(h), None) => Some(h),
        (None, None) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_header_and_key() {
        let t = "[a]\nx = 1\n[b.c]\ny = { z = 2 }\n";
        assert_eq!(key_path_at(t, t.find("1").unwrap()).unwrap(), "a.x");
        assert_eq!(key_path_at(t, t.find("z").unwrap()).unwrap(), "b.c.y");
        assert_eq!(key_path_at(t, 0).unwrap(), "a");
    }
}
