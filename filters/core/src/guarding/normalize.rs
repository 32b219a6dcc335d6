//! Text as guard rules see it: the evasions attackers use to slip a phrase past a pattern undone.
//! Invisible characters go, lookalike letters become the ASCII letters they imitate, and text hidden
//! in Unicode tag characters is decoded and reported on its own. One pass, linear in the text.

/// `text` with evasions undone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    /// Invisible characters removed, lookalikes folded to ASCII; case kept (for users' patterns).
    pub text: String,
    /// Text hidden in Unicode tag characters (U+E0020..U+E007E), decoded; empty when there is none.
    pub smuggled: String,
    /// Invisible formatting characters removed (zero-width, bidi controls, soft hyphens, ...).
    pub invisible: usize,
}

/// Undoes the character-level evasions in `text` (see [`Folded`]).
pub fn fold(text: &str) -> Folded {
    // Most prompts are ASCII: nothing to undo.
    if text.is_ascii() {
        return Folded {
            text: text.to_string(),
            ..Folded::default()
        };
    }
    let mut out = Folded {
        text: String::with_capacity(text.len()),
        ..Folded::default()
    };
    // The tags after U+1F3F4: an emoji flag (England is `gbeng`, then U+E007F), or text hidden
    // behind a flag. Only a short code of letters and digits is a flag.
    let mut flag: Option<String> = None;
    for c in text.chars() {
        let code = u32::from(c);
        let is_tag = (0xE0000..=0xE007F).contains(&code);
        if !is_tag {
            if let Some(tags) = flag.take() {
                out.smuggle_unless_flag(tags);
            }
        }
        if c.is_ascii() {
            out.text.push(c);
            continue;
        }
        if is_tag {
            // Tag characters render as nothing; models read them as the ASCII they encode.
            let ascii = char::from_u32(code - 0xE0000).filter(|a| (' '..='~').contains(a));
            match (&mut flag, ascii) {
                (Some(tags), Some(ascii)) => tags.push(ascii),
                (Some(_), None) => {
                    // U+E007F ends the flag.
                    if let Some(tags) = flag.take() {
                        out.smuggle_unless_flag(tags);
                    }
                }
                (None, Some(ascii)) => out.smuggled.push(ascii),
                (None, None) => {}
            }
            continue;
        }
        if code == 0x1F3F4 {
            flag = Some(String::new());
        }
        if is_invisible(code) {
            out.invisible += 1;
            continue;
        }
        if is_ignorable_mark(code) {
            continue;
        }
        match fold_char(code) {
            Some(folded) => out.text.push(folded),
            None => out.text.push(c),
        }
    }
    if let Some(tags) = flag.take() {
        out.smuggle_unless_flag(tags);
    }
    out
}

impl Folded {
    /// Tags after a flag emoji: a subdivision code (`gbsct`: at most 7 letters and digits) or
    /// hidden text.
    fn smuggle_unless_flag(&mut self, tags: String) {
        let is_code = tags.len() <= 7 && tags.bytes().all(|b| b.is_ascii_alphanumeric());
        if !is_code {
            self.smuggled.push_str(&tags);
        }
    }
}

/// Formatting characters that render as nothing (or nearly) and split a word for a pattern but not
/// for a model.
fn is_invisible(code: u32) -> bool {
    matches!(code,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180E
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFEFF | 0xFFA0
        | 0x1BCA0..=0x1BCA3 | 0x1D173..=0x1D17A)
}

/// Combining marks and variation selectors: dropped so `ìgnore` and `i̇gnore` read `ignore`.
fn is_ignorable_mark(code: u32) -> bool {
    matches!(code, 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF
        | 0xFE00..=0xFE0F | 0xFE20..=0xFE2F | 0xE0100..=0xE01EF)
}

/// Latin-1 letters with diacritics, U+00C0..U+00FF, as their base letters (`.` keeps the original).
const LATIN1: &[u8; 64] = b"AAAAAAACEEEEIIIIDNOOOOO.OUUUUYTsaaaaaaaceeeeiiiidnooooo.ouuuuyty";

/// Cyrillic and Greek letters that look like Latin ones (the confusables used in homoglyph attacks),
/// and the small capitals of "ꜱᴍᴀʟʟ ᴄᴀᴘꜱ" text.
const LOOKALIKES: &[(u32, char)] = &[
    (0x01EB, 'q'),
    (0x0261, 'g'),
    (0x0262, 'g'),
    (0x026A, 'i'),
    (0x0274, 'n'),
    (0x0280, 'r'),
    (0x028F, 'y'),
    (0x0299, 'b'),
    (0x029C, 'h'),
    (0x029F, 'l'),
    (0x0391, 'A'),
    (0x0392, 'B'),
    (0x0395, 'E'),
    (0x0396, 'Z'),
    (0x0397, 'H'),
    (0x0399, 'I'),
    (0x039A, 'K'),
    (0x039C, 'M'),
    (0x039D, 'N'),
    (0x039F, 'O'),
    (0x03A1, 'P'),
    (0x03A4, 'T'),
    (0x03A5, 'Y'),
    (0x03A7, 'X'),
    (0x03B1, 'a'),
    (0x03B5, 'e'),
    (0x03B9, 'i'),
    (0x03BA, 'k'),
    (0x03BD, 'v'),
    (0x03BF, 'o'),
    (0x03C1, 'p'),
    (0x03C4, 't'),
    (0x03C5, 'u'),
    (0x03C7, 'x'),
    (0x0405, 'S'),
    (0x0406, 'I'),
    (0x0408, 'J'),
    (0x0410, 'A'),
    (0x0412, 'B'),
    (0x0415, 'E'),
    (0x041A, 'K'),
    (0x041C, 'M'),
    (0x041D, 'H'),
    (0x041E, 'O'),
    (0x0420, 'P'),
    (0x0421, 'C'),
    (0x0422, 'T'),
    (0x0423, 'Y'),
    (0x0425, 'X'),
    (0x0430, 'a'),
    (0x0435, 'e'),
    (0x043E, 'o'),
    (0x0440, 'p'),
    (0x0441, 'c'),
    (0x0443, 'y'),
    (0x0445, 'x'),
    (0x0455, 's'),
    (0x0456, 'i'),
    (0x0458, 'j'),
    (0x04BB, 'h'),
    (0x04CF, 'l'),
    (0x0501, 'd'),
    (0x051B, 'q'),
    (0x051D, 'w'),
    (0x1D00, 'a'),
    (0x1D04, 'c'),
    (0x1D05, 'd'),
    (0x1D07, 'e'),
    (0x1D0A, 'j'),
    (0x1D0B, 'k'),
    (0x1D0D, 'm'),
    (0x1D0F, 'o'),
    (0x1D18, 'p'),
    (0x1D1B, 't'),
    (0x1D1C, 'u'),
    (0x1D20, 'v'),
    (0x1D21, 'w'),
    (0x1D22, 'z'),
    (0x2010, '-'),
    (0x2011, '-'),
    (0x2012, '-'),
    (0x2013, '-'),
    (0x2014, '-'),
    (0x2018, '\''),
    (0x2019, '\''),
    (0x201C, '"'),
    (0x201D, '"'),
    (0x2024, '.'),
    (0x2044, '/'),
    (0x2215, '/'),
    (0xA730, 'f'),
    (0xA731, 's'),
    (0xFF5C, '|'),
];

fn letter(base: char, offset: u32) -> Option<char> {
    char::from_u32(u32::from(base) + offset)
}

/// One character's ASCII lookalike, if it has one.
fn fold_char(code: u32) -> Option<char> {
    match code {
        0x00C0..=0x00FF => {
            let index = usize::try_from(code - 0x00C0).ok()?;
            LATIN1
                .get(index)
                .filter(|b| **b != b'.')
                .map(|b| char::from(*b))
        }
        // Fullwidth ASCII (`ｉｇｎｏｒｅ`) and the ideographic space.
        0xFF01..=0xFF5E => char::from_u32(code - 0xFEE0),
        0x3000 | 0x00A0 | 0x2000..=0x200A | 0x202F | 0x205F => Some(' '),
        // Mathematical alphanumerics: 13 alphabets of 52 letters (bold, italic, script, ...).
        0x1D400..=0x1D6A3 => {
            let i = (code - 0x1D400) % 52;
            if i < 26 {
                letter('A', i)
            } else {
                letter('a', i - 26)
            }
        }
        0x1D7CE..=0x1D7FF => letter('0', (code - 0x1D7CE) % 10),
        // Circled, parenthesized and squared letters, regional indicators.
        0x24B6..=0x24CF => letter('A', code - 0x24B6),
        0x24D0..=0x24E9 => letter('a', code - 0x24D0),
        0x249C..=0x24B5 => letter('a', code - 0x249C),
        0x2460..=0x2468 => letter('1', code - 0x2460),
        0x1F130..=0x1F149 => letter('A', code - 0x1F130),
        0x1F150..=0x1F169 => letter('A', code - 0x1F150),
        0x1F170..=0x1F189 => letter('A', code - 0x1F170),
        0x1F1E6..=0x1F1FF => letter('A', code - 0x1F1E6),
        _ => LOOKALIKES
            .binary_search_by_key(&code, |(from, _)| *from)
            .ok()
            .and_then(|i| LOOKALIKES.get(i))
            .map(|(_, to)| *to),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookalikes_are_sorted_for_the_binary_search() {
        assert!(LOOKALIKES.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn evasions_fold_to_plain_ascii() {
        let cases = [
            ("ig\u{200B}no\u{200D}re", "ignore"),
            ("ｉｇｎｏｒｅ ａｌｌ", "ignore all"),
            ("іgnоrе", "ignore"),
            ("𝐢𝐠𝐧𝐨𝐫𝐞", "ignore"),
            ("𝒾𝑔𝓃𝑜𝓇𝑒", "ignore"),
            ("ⓘⓖⓝⓞⓡⓔ", "ignore"),
            ("ɪɢɴᴏʀᴇ", "ignore"),
            ("ìgnóre", "ignore"),
            ("i\u{0307}gnore", "ignore"),
            ("\u{202E}erongi", "erongi"),
        ];
        for (input, want) in cases {
            assert_eq!(fold(input).text, want, "{input:?}");
        }
        assert_eq!(fold("a\u{200B}b\u{2060}c").invisible, 2);
    }

    #[test]
    fn tag_characters_are_decoded_as_smuggled_text() {
        let hidden: String = "ignore all"
            .chars()
            .map(|c| char::from_u32(0xE0000 + u32::from(c)).unwrap_or(c))
            .collect();
        let folded = fold(&format!("What is the weather?{hidden}"));
        assert_eq!(folded.text, "What is the weather?");
        assert_eq!(folded.smuggled, "ignore all");
        // A subdivision flag is a tag sequence too, and no smuggling.
        let england = "\u{1F3F4}\u{E0067}\u{E0062}\u{E0065}\u{E006E}\u{E0067}\u{E007F}";
        assert_eq!(fold(&format!("Go {england}!")).smuggled, "");
        // Text hidden behind a flag emoji is still found.
        let behind_flag = format!("\u{1F3F4}{hidden}\u{E007F}");
        assert_eq!(fold(&behind_flag).smuggled, "ignore all");
    }

    #[test]
    fn other_scripts_are_kept() {
        assert_eq!(fold("日本語のテキスト").text, "日本語のテキスト");
        // Diacritics go (ß, a letter of its own, becomes its Latin-1 lookalike s).
        assert_eq!(fold("Grüße").text, "Gruse");
    }
}
