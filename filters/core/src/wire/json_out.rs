//! Writing a `serde_json::Value` back out, byte for byte as `serde_json::to_writer` does, but with
//! strings copied eight bytes at a time. serde_json looks at every byte of a string to find the ones
//! to escape; a filter that rewrites a 200 KB prompt spent more on that than on scanning it (in Wasm,
//! where serde_json has no faster path). Everything but strings is written by serde_json itself.

use crate::swar;
use serde_json::Value;

/// Appends `value` as compact JSON to `out`, exactly as `serde_json::to_writer` would.
pub fn write_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (key, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, key);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
        // Numbers, booleans and null: serde_json's own output (a Vec never fails to take it).
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// `value` as compact JSON bytes, exactly as `serde_json::to_vec` would produce them.
pub fn to_vec(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, value);
    out
}

/// Non-zero when one of the eight bytes in `word` must be escaped: below 0x20, `"` or `\`.
fn escapes_in(word: u64) -> u64 {
    swar::any_below(word, 0x20) | swar::any_equal(word, b'"') | swar::any_equal(word, b'\\')
}

/// How many bytes `bytes` starts with that need no escape: sixteen at a time, then one by one.
fn plain_prefix(bytes: &[u8]) -> usize {
    let mut plain = 0;
    let mut pairs = bytes.chunks_exact(16);
    for pair in &mut pairs {
        let (low, high) = pair.split_at(8);
        if escapes_in(swar::word(low)) | escapes_in(swar::word(high)) != 0 {
            break;
        }
        plain += 16;
    }
    plain
        + bytes
            .get(plain..)
            .unwrap_or_default()
            .iter()
            .take_while(|b| escape_of(**b).is_none())
            .count()
}

/// Appends `s` as a JSON string, with serde_json's escapes.
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let mut rest = s.as_bytes();
    out.reserve(rest.len() + 2);
    out.push(b'"');
    while !rest.is_empty() {
        let plain = plain_prefix(rest);
        let (run, after) = rest.split_at(plain);
        out.extend_from_slice(run);
        let Some((&byte, after)) = after.split_first() else {
            break;
        };
        match escape_of(byte) {
            Some(Escape::Short(letter)) => out.extend_from_slice(&[b'\\', letter]),
            Some(Escape::Unicode) => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                let hex = |nibble: u8| HEX.get(usize::from(nibble)).copied().unwrap_or(b'0');
                out.extend_from_slice(&[b'\\', b'u', b'0', b'0', hex(byte >> 4), hex(byte & 0xf)]);
            }
            None => out.push(byte),
        }
        rest = after;
    }
    out.push(b'"');
}

enum Escape {
    Short(u8),
    Unicode,
}

/// serde_json's escape for `byte`, if it needs one.
fn escape_of(byte: u8) -> Option<Escape> {
    Some(match byte {
        b'"' => Escape::Short(b'"'),
        b'\\' => Escape::Short(b'\\'),
        0x08 => Escape::Short(b'b'),
        0x0c => Escape::Short(b'f'),
        b'\n' => Escape::Short(b'n'),
        b'\r' => Escape::Short(b'r'),
        b'\t' => Escape::Short(b't'),
        0x00..=0x1f => Escape::Unicode,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use crate::test_rng::Rng;

    /// Strings mixing every kind of character the escaping tells apart, at every alignment.
    fn random_string(rng: &mut Rng) -> String {
        let pieces = [
            "a",
            "Z",
            " ",
            "\"",
            "\\",
            "\n",
            "\r",
            "\t",
            "\u{8}",
            "\u{c}",
            "\u{0}",
            "\u{1f}",
            "\u{1}",
            "\u{7f}",
            "é",
            "€",
            "😀",
            "/",
            "<",
            "'",
            "plain text ",
            "0123456789",
        ];
        let len = rng.below(40);
        (0..len)
            .map(|_| pieces[rng.below(pieces.len() as u64) as usize])
            .collect()
    }

    #[test]
    fn strings_are_written_exactly_as_serde_json_writes_them() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let s = random_string(&mut rng);
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
        // Every single byte value a str can hold alone, at every offset in a word.
        for c in (0u32..0x80).filter_map(char::from_u32) {
            for pad in 0..9 {
                let s = format!("{}{c}{}", "x".repeat(pad), "y".repeat(pad));
                let mut ours = Vec::new();
                write_str(&mut ours, &s);
                assert_eq!(ours, serde_json::to_vec(&s).unwrap(), "{s:?}");
            }
        }
    }

    #[test]
    fn values_are_written_exactly_as_serde_json_writes_them() {
        let value = json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "line\none \"quoted\" \\ tab\t\u{1} é 😀"}],
            "temperature": 0.2, "max_tokens": 256, "n": -1, "big": 18446744073709551615u64,
            "tiny": 1e-300, "stream": true, "stop": null, "nested": [[], {}, [1, [2, {"k": "v"}]]],
            "key \"with\" escapes\n": "",
        });
        assert_eq!(to_vec(&value), serde_json::to_vec(&value).unwrap());
        let mut rng = Rng(42);
        for _ in 0..2_000 {
            let mut object = serde_json::Map::new();
            for _ in 0..rng.below(6) {
                object.insert(
                    random_string(&mut rng),
                    json!([random_string(&mut rng), rng.next()]),
                );
            }
            let value = Value::Object(object);
            assert_eq!(to_vec(&value), serde_json::to_vec(&value).unwrap());
        }
    }
}
