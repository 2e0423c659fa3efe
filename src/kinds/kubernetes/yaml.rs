//! YAML for exported Kubernetes objects.
//!
//! kubectl reads YAML 1.1 (sigs.k8s.io/yaml): there an unquoted `on`, `NO`,
//! `y`, `0755` or `12:30` is a boolean or a number, and a ConfigMap value
//! written that way no longer applies ("cannot unmarshal bool into Go
//! struct field ConfigMap.data of type string"). yaml_serde writes YAML
//! 1.2 and leaves such strings bare, so exports use this small emitter:
//! a string is written plain only when it reads back as the same string
//! under both YAML versions, otherwise double-quoted with JSON escapes
//! (valid YAML); multi-line strings become literal blocks.

use serde_json::Value;

/// The object as a YAML document (ends with a newline).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() => write_seq(&mut out, items, 0),
        other => {
            write_scalar(&mut out, other, 0);
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    for _ in 0..n {
        out.push(' ');
    }
}

/// `key: value` lines at `level` spaces.
fn write_map(out: &mut String, map: &serde_json::Map<String, Value>, level: usize) {
    for (key, value) in map {
        indent(out, level);
        write_string(out, key, level, true);
        out.push(':');
        write_value_after_key(out, value, level);
    }
}

/// `- item` lines at `level` spaces (kubectl style: a list under a key is
/// not indented further than the key).
fn write_seq(out: &mut String, items: &[Value], level: usize) {
    for item in items {
        indent(out, level);
        out.push('-');
        match item {
            Value::Object(map) if !map.is_empty() => {
                // The first key goes on the dash's line, the rest align with it.
                let mut first = true;
                for (key, value) in map {
                    if first {
                        out.push(' ');
                        first = false;
                    } else {
                        indent(out, level + 2);
                    }
                    write_string(out, key, level + 2, true);
                    out.push(':');
                    write_value_after_key(out, value, level + 2);
                }
            }
            Value::Array(inner) if !inner.is_empty() => {
                out.push('\n');
                write_seq(out, inner, level + 2);
            }
            scalar => {
                out.push(' ');
                write_scalar(out, scalar, level + 2);
                out.push('\n');
            }
        }
    }
}

fn write_value_after_key(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_map(out, map, level + 2);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_seq(out, items, level);
        }
        scalar => {
            out.push(' ');
            write_scalar(out, scalar, level + 2);
            out.push('\n');
        }
    }
}

fn write_scalar(out: &mut String, value: &Value, level: usize) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => out.push_str(&n.to_string()),
        Value::String(s) => write_string(out, s, level, false),
        Value::Object(_) => out.push_str("{}"),
        Value::Array(_) => out.push_str("[]"),
    }
}

/// Words YAML 1.1 reads as booleans or null.
const RESERVED: &[&str] = &[
    "y", "yes", "n", "no", "true", "false", "on", "off", "null", "~",
];

/// Whether `s` can be written without quotes and reads back as the same
/// string in YAML 1.1 and 1.2.
fn plain_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    if !(first.is_ascii_alphabetic() || first == '_' || first == '/') {
        return false;
    }
    if s.ends_with(' ') || s.contains("  ") {
        return false;
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '/' | '-' | ' '))
    {
        return false;
    }
    !RESERVED.iter().any(|r| r.eq_ignore_ascii_case(s))
}

fn write_string(out: &mut String, s: &str, level: usize, is_key: bool) {
    if plain_safe(s) {
        out.push_str(s);
    } else if !is_key && literal_block_ok(s) {
        write_literal(out, s, level);
    } else {
        write_double_quoted(out, s);
    }
}

/// Characters a YAML reader rejects raw (controls) or reads as line breaks
/// (NEL, LS, PS), and the byte-order mark: escaped in quoted strings, never
/// in literal blocks.
fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

/// A double-quoted scalar: JSON escapes, which YAML shares, plus `\uXXXX`
/// for every character in [`needs_escape`].
fn write_double_quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if needs_escape(c) => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A multi-line string of printable text reads best as a literal block.
fn literal_block_ok(s: &str) -> bool {
    // Only newlines (no text) would read back as "" with any chomping.
    s.contains('\n')
        && !s.trim_end_matches('\n').is_empty()
        && !s.chars().any(|c| needs_escape(c) && c != '\n')
        // Trailing spaces on a line survive a literal block, but a line of
        // only spaces before the end is ambiguous with the chomping rules.
        && !s.lines().any(|l| l.ends_with(' '))
}

fn write_literal(out: &mut String, s: &str, level: usize) {
    out.push('|');
    // An explicit indentation indicator when the first line with text
    // starts with a space (the block's indentation would otherwise be
    // read from it).
    if s.split('\n')
        .find(|l| !l.is_empty())
        .is_some_and(|l| l.starts_with(' '))
    {
        out.push('2');
    }
    let body = s.trim_end_matches('\n');
    let trailing = s.len() - body.len();
    match trailing {
        0 => out.push('-'),
        1 => {}
        _ => out.push('+'),
    }
    out.push('\n');
    for line in body.split('\n') {
        if !line.is_empty() {
            indent(out, level);
            out.push_str(line);
        }
        out.push('\n');
    }
    // Keep (`+`) chomping: the extra newlines are part of the value.
    for _ in 1..trailing {
        out.push('\n');
    }
    // `to_yaml`'s callers add a newline after every scalar; a block already
    // ended with one, so take it back.
    out.pop();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roundtrip(v: Value) {
        let text = to_yaml(&v);
        let back: Value = yaml_serde::from_str(&text)
            .unwrap_or_else(|e| panic!("cannot parse back:\n{text}\n{e}"));
        assert_eq!(back, v, "YAML was:\n{text}");
    }

    #[test]
    fn tricky_strings_read_back_as_strings() {
        let tricky = [
            "on",
            "NO",
            "yes",
            "y",
            "true",
            "False",
            "~",
            "null",
            "",
            "0755",
            "1e3",
            "12:30",
            "0x1F",
            ".inf",
            "-",
            "- a",
            "a: b",
            "a #b",
            "#x",
            "@x",
            "`x",
            "!tag",
            "&a",
            "*a",
            "'q'",
            "\"q\"",
            "{a}",
            "[a]",
            "%x",
            "x ",
            " x",
            "Zürich – ☃",
            "a\tb",
            "a\rb",
            "line1\nline2\n",
            "line1\nline2",
            "  leading\nspaces\n",
            "ends\n\n\n",
            "\n",
            "\n\nx",
            "a\n \nb\n",
            "tab\tin\nblock\n",
            "trailing \nspace\n",
            "=",
            "<<",
            "?",
            "|",
            ">",
            "\tstarts with a tab\nline\n",
            "del\u{7f}",
            "c1\u{85}nel",
            "ls\u{2028}ps\u{2029}",
            "multi\nls\u{2028}\n",
            "bom\u{feff}",
            "nonchar\u{fffe}\u{ffff}",
            "\u{1}\u{1f}",
        ];
        for s in tricky {
            roundtrip(json!({ "data": { "k": s } }));
            roundtrip(json!([s]));
            roundtrip(json!({ s: 1 }));
        }
    }

    #[test]
    fn reserved_words_are_quoted() {
        let text = to_yaml(&json!({"a": "on", "b": "NO", "c": "0755", "d": "plain-value"}));
        assert!(text.contains("a: \"on\""), "{text}");
        assert!(text.contains("b: \"NO\""), "{text}");
        assert!(text.contains("c: \"0755\""), "{text}");
        assert!(text.contains("d: plain-value"), "{text}");
    }

    #[test]
    fn nested_structures_round_trip() {
        roundtrip(json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app.kubernetes.io/name": "web"}, "annotations": {}},
            "spec": {
                "replicas": 3,
                "template": {"spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27", "ports": [{"containerPort": 80}],
                     "args": [], "env": [{"name": "A", "value": "1"}],
                     "command": ["sh", "-c", "echo hi\nexit 0\n"]}
                ]}},
                "strategy": {"rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
                "nested": [[1, 2], [], [{"a": null}], {"x": []}],
                "float": 1.5, "neg": -3, "bool": false
            }
        }));
    }
}
