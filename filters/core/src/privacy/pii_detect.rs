//! PII detectors: a regex finds candidates, a validator (Luhn, mod-97, SSN rules, address parsing, ...)
//! keeps only real ones. Patterns are ASCII-only on purpose: the regex crate is built without Unicode
//! tables to keep the Wasm module small.

use crate::swar;
use std::fmt;
use std::ops::Range;

/// Whether `bytes` holds an ASCII digit, eight bytes per step: a byte-by-byte loop cost as much as
/// a regex pass over long prose (the modules are built for size, so it is not vectorised).
pub fn has_ascii_digit(bytes: &[u8]) -> bool {
    let mut words = bytes.chunks_exact(8);
    let found = words
        .by_ref()
        .any(|chunk| swar::any_digit(swar::word(chunk)));
    found || words.remainder().iter().any(u8::is_ascii_digit)
}

/// Runs of ASCII digits in `text`, as byte ranges in order; runs fewer than [`RUN_GAP`] bytes apart
/// are joined (fewer, slightly longer windows: each search has a fixed cost).
fn digit_runs(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut runs: Vec<Range<usize>> = Vec::new();
    let mut add = |at: usize| match runs.last_mut() {
        Some(last) if at <= last.end + RUN_GAP => last.end = at + 1,
        _ => runs.push(at..at + 1),
    };
    let mut words = bytes.chunks_exact(8);
    for (n, chunk) in words.by_ref().enumerate() {
        // Eight bytes without a digit are skipped in one step.
        if swar::any_digit(swar::word(chunk)) {
            for (i, b) in chunk.iter().enumerate() {
                if b.is_ascii_digit() {
                    add(n * 8 + i);
                }
            }
        }
    }
    let tail = bytes.len() - words.remainder().len();
    for (i, b) in words.remainder().iter().enumerate() {
        if b.is_ascii_digit() {
            add(tail + i);
        }
    }
    runs
}

/// Digit runs at most this far apart are searched as one window.
const RUN_GAP: usize = 16;

/// The parts of `text` within `margin` bytes of a digit run: merged ranges on char boundaries.
/// A pattern whose every match holds a digit and is at most `margin` bytes long finds all its
/// matches inside them.
fn around(text: &str, runs: &[Range<usize>], margin: usize) -> Vec<Range<usize>> {
    let mut windows: Vec<Range<usize>> = Vec::new();
    for run in runs {
        let mut start = run.start.saturating_sub(margin);
        while !text.is_char_boundary(start) {
            start -= 1;
        }
        let mut end = run.end.saturating_add(margin).min(text.len());
        while !text.is_char_boundary(end) {
            end += 1;
        }
        match windows.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => windows.push(start..end),
        }
    }
    windows
}

/// A compiled pattern that can search part of a text while its assertions (`\b`) still see the
/// bytes around that part. With `regex-lite` (no such search) a part is searched as the text's
/// tail, so callers pass whole-text ranges there (see [`Detectors::digit_windows`]).
struct Scanner {
    #[cfg(feature = "regex")]
    regex: regex_automata::meta::Regex,
    #[cfg(not(feature = "regex"))]
    regex: regex_lite::Regex,
}

impl Scanner {
    fn new(pattern: &str) -> Result<Scanner, String> {
        #[cfg(feature = "regex")]
        let regex = regex_automata::meta::Regex::new(pattern).map_err(|e| e.to_string())?;
        #[cfg(not(feature = "regex"))]
        let regex = regex_lite::Regex::new(pattern).map_err(|e| e.to_string())?;
        Ok(Scanner { regex })
    }

    /// The matches within `range` of `text`, as byte ranges of `text`.
    fn find_in<'t>(
        &'t self,
        text: &'t str,
        range: Range<usize>,
    ) -> impl Iterator<Item = Range<usize>> + 't {
        #[cfg(feature = "regex")]
        return self
            .regex
            .find_iter(regex_automata::Input::new(text).range(range))
            .map(|m| m.range());
        #[cfg(not(feature = "regex"))]
        return {
            let haystack = text.get(..range.end).unwrap_or(text);
            let mut at = Some(range.start);
            std::iter::from_fn(move || {
                let m = self.regex.find_at(haystack, at?)?;
                // After an empty match the search resumes one character on.
                let next = haystack.get(m.end()..).and_then(|rest| rest.chars().next());
                at = match (m.is_empty(), next) {
                    (false, _) => Some(m.end()),
                    (true, Some(c)) => Some(m.end() + c.len_utf8()),
                    (true, None) => None,
                };
                Some(m.start()..m.end())
            })
        };
    }
}

/// The built-in entity types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Builtin {
    Email,
    Phone,
    CreditCard,
    UsSsn,
    Iban,
    IpAddress,
    Secret,
}

impl Builtin {
    pub const ALL: [Builtin; 7] = [
        Builtin::Secret,
        Builtin::CreditCard,
        Builtin::Iban,
        Builtin::UsSsn,
        Builtin::Email,
        Builtin::IpAddress,
        Builtin::Phone,
    ];

    /// The config key and the placeholder stem: `email` and `<EMAIL_1>`.
    pub fn key(self) -> &'static str {
        match self {
            Builtin::Email => "email",
            Builtin::Phone => "phone",
            Builtin::CreditCard => "credit_card",
            Builtin::UsSsn => "us_ssn",
            Builtin::Iban => "iban",
            Builtin::IpAddress => "ip_address",
            Builtin::Secret => "secret",
        }
    }

    pub fn from_key(key: &str) -> Option<Builtin> {
        Builtin::ALL.into_iter().find(|b| b.key() == key)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key())
    }
}

/// Non-overlapping byte ranges with a value each, kept ordered by start: whether a new range is free
/// is two neighbour lookups, so resolving k findings costs O(k log k), not O(k^2).
#[derive(Debug)]
pub struct Spans<T> {
    by_start: std::collections::BTreeMap<usize, (usize, T)>,
}

impl<T> Default for Spans<T> {
    fn default() -> Self {
        Spans {
            by_start: std::collections::BTreeMap::new(),
        }
    }
}

impl<T> Spans<T> {
    /// Whether `start..end` overlaps no kept range.
    pub fn is_free(&self, start: usize, end: usize) -> bool {
        let before_ok = self
            .by_start
            .range(..=start)
            .next_back()
            .is_none_or(|(_, (kept_end, _))| *kept_end <= start);
        let after_ok = self
            .by_start
            .range(start..)
            .next()
            .is_none_or(|(kept_start, _)| *kept_start >= end);
        before_ok && after_ok
    }

    /// Keeps `start..end` when it overlaps no kept range; returns whether it was kept.
    pub fn insert_if_free(&mut self, start: usize, end: usize, value: T) -> bool {
        let free = self.is_free(start, end);
        if free {
            self.by_start.insert(start, (end, value));
        }
        free
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    /// The kept values, ordered by start.
    pub fn into_values(self) -> Vec<T> {
        self.by_start.into_values().map(|(_, v)| v).collect()
    }
}

/// A validated finding in a text: byte range and type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub start: usize,
    pub end: usize,
    pub kind: Builtin,
}

struct Pattern {
    kind: Builtin,
    source: &'static str,
    regex: Scanner,
    validate: fn(&str, &str, usize) -> bool,
    /// Every match holds an ASCII digit and is at most this many bytes long (the longest match
    /// the pattern allows), so the pattern searches only this close to digits.
    near_digits: Option<usize>,
}

/// Up to this length a text is first tested by one pass of every pattern together.
const SHORT_TEXT: usize = 4096;

/// The longest match a pattern searched near digits may have (the national-number pattern's
/// reach around phone words is counted from it).
const WINDOW_MARGIN: usize = 128;

/// The longest match of `pattern` in bytes, when the pattern bounds it.
#[cfg(feature = "regex")]
fn longest_match(pattern: &str) -> Option<usize> {
    regex_automata::util::syntax::parse(pattern)
        .ok()?
        .properties()
        .maximum_len()
}

#[cfg(not(feature = "regex"))]
fn longest_match(_: &str) -> Option<usize> {
    // `regex-lite` searches whole texts (see `Detectors::digit_windows`).
    Some(WINDOW_MARGIN)
}

/// All built-in detectors, compiled once per VM.
///
/// Cost: the patterns that need no digit (secrets, e-mail, IPv6) have a literal a search skips to
/// (`sk-`, `@`, `:`), so a whole-text pass each is cheap (together they would lose that: an
/// alternation of them scans 50 times slower). The others need a digit and match a bounded length, so they
/// search only the parts of the text near a digit: a prompt of prose with a hundred values costs a
/// digit scan and a hundred short searches per pattern, not a hundred full passes.
pub struct Detectors {
    patterns: Vec<Pattern>,
    /// National numbers in any grouping ("06-82237745", "(73) 4746-3459", "730 064 218"): alone,
    /// such digit groups are as often amounts, order numbers or dates, so they count as phones only
    /// next to a word of [`PHONE_CONTEXT`] (its validator checks).
    phone_nearby: Pattern,
    /// Any word of [`PHONE_CONTEXT`]: where the national-number pattern searches.
    phone_words: Scanner,
    /// Every pattern as one alternation: one pass tells whether a short text (a name, a model, a
    /// role: most strings of a request) can hold anything, where a search per pattern would cost
    /// a dozen times the fixed cost of a search.
    any: Scanner,
}

fn always(_: &str, _: &str, _: usize) -> bool {
    true
}

fn digits(text: &str) -> Vec<u32> {
    text.chars().filter_map(|c| c.to_digit(10)).collect()
}

pub fn luhn(number: &[u32]) -> bool {
    let sum: u32 = number
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            if i % 2 == 1 {
                if d * 2 > 9 {
                    d * 2 - 9
                } else {
                    d * 2
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// The issuer ranges and lengths of the major card brands (IIN tables as the networks publish them).
fn card_brand_ok(number: &[u32]) -> bool {
    let prefix = |n: usize| number.iter().take(n).fold(0u32, |acc, d| acc * 10 + d);
    let within = |n: usize, low: u32, high: u32| (low..=high).contains(&prefix(n));
    let len = number.len();
    let long = (16..=19).contains(&len);
    let visa = number.first() == Some(&4) && matches!(len, 13 | 16 | 19);
    let mastercard = (within(2, 51, 55) || within(4, 2221, 2720)) && len == 16;
    let amex = matches!(prefix(2), 34 | 37) && len == 15;
    let discover = (prefix(4) == 6011 || within(3, 644, 649) || prefix(2) == 65) && long;
    // JCB: 3528-3589 today; test generators (Faker) issue all of 35xx, and the 15-digit 1800 and
    // 2131 ranges are still printed on old cards.
    let jcb = (prefix(2) == 35 && long) || (matches!(prefix(4), 1800 | 2131) && len == 15);
    let diners = (within(3, 300, 305) || prefix(4) == 3095 || matches!(prefix(2), 36 | 38 | 39))
        && (14..=19).contains(&len);
    // Maestro: the published 50, 56-69 ranges, 12 to 19 digits.
    let maestro = (prefix(2) == 50 || within(2, 56, 69)) && (12..=19).contains(&len);
    let unionpay = prefix(2) == 62 && long;
    let mir = within(4, 2200, 2204) && long;
    let rupay = (matches!(prefix(2), 60 | 81 | 82) || prefix(3) == 508) && len == 16;
    let troy = prefix(4) == 9792 && len == 16;
    visa || mastercard
        || amex
        || discover
        || jcb
        || diners
        || maestro
        || unionpay
        || mir
        || rupay
        || troy
}

fn credit_card(candidate: &str, _: &str, _: usize) -> bool {
    // One separator style throughout: "4111 1111 1111 1111", "4111  1111 ...", "4111-1111-..." or
    // "4111.1111...", never mixed.
    let separators: Vec<&str> = candidate
        .split(|c: char| c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    if separators.windows(2).any(|w| w.first() != w.get(1)) {
        return false;
    }
    let number = digits(candidate);
    (12..=19).contains(&number.len()) && card_brand_ok(&number) && luhn(&number)
}

fn us_ssn(candidate: &str, _: &str, _: usize) -> bool {
    let d = digits(candidate);
    if d.len() != 9 {
        return false;
    }
    let area = d.iter().take(3).fold(0, |a, x| a * 10 + x);
    let group = d.iter().skip(3).take(2).fold(0, |a, x| a * 10 + x);
    let serial = d.iter().skip(5).fold(0, |a, x| a * 10 + x);
    area != 0 && area != 666 && area < 900 && group != 0 && serial != 0
}

/// IBAN length per country (ISO 13616 registry).
fn iban_length(country: &str) -> Option<usize> {
    Some(match country {
        "AD" => 24,
        "AE" => 23,
        "AL" => 28,
        "AT" => 20,
        "AZ" => 28,
        "BA" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BR" => 29,
        "BY" => 28,
        "CH" => 21,
        "CR" => 22,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DK" => 18,
        "DO" => 28,
        "EE" => 20,
        "EG" => 29,
        "ES" => 24,
        "FI" => 18,
        "FO" => 18,
        "FR" => 27,
        "GB" => 22,
        "GE" => 22,
        "GI" => 23,
        "GL" => 18,
        "GR" => 27,
        "GT" => 28,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IQ" => 23,
        "IS" => 26,
        "IT" => 27,
        "JO" => 30,
        "KW" => 30,
        "KZ" => 20,
        "LB" => 28,
        "LC" => 32,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "MC" => 27,
        "MD" => 24,
        "ME" => 22,
        "MK" => 19,
        "MR" => 27,
        "MT" => 31,
        "MU" => 30,
        "NL" => 18,
        "NO" => 15,
        "PK" => 24,
        "PL" => 28,
        "PS" => 29,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "RS" => 22,
        "SA" => 24,
        "SC" => 31,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "ST" => 25,
        "SV" => 28,
        "TL" => 23,
        "TN" => 24,
        "TR" => 26,
        "UA" => 29,
        "VA" => 22,
        "VG" => 24,
        "XK" => 20,
        _ => return None,
    })
}

pub fn iban_valid(candidate: &str) -> bool {
    let compact: String = candidate.chars().filter(|c| !c.is_whitespace()).collect();
    let Some(country) = compact.get(..2) else {
        return false;
    };
    if iban_length(country) != Some(compact.len()) {
        return false;
    }
    let rearranged = compact.chars().skip(4).chain(compact.chars().take(4));
    let mut remainder: u64 = 0;
    for c in rearranged {
        let value = match c.to_digit(36) {
            Some(v) => u64::from(v),
            None => return false,
        };
        remainder = if value >= 10 {
            (remainder * 100 + value) % 97
        } else {
            (remainder * 10 + value) % 97
        };
    }
    remainder == 1
}

fn iban(candidate: &str, _: &str, _: usize) -> bool {
    iban_valid(candidate)
}

fn ipv4(candidate: &str, text: &str, start: usize) -> bool {
    // "v1.2.3.4" or "version 1.2.3.4" is a version, not an address. Only the bytes right before the
    // match are looked at: copying the text before every match made a scan quadratic.
    let before = text
        .as_bytes()
        .get(..start)
        .unwrap_or_default()
        .trim_ascii_end();
    let ends_with = |word: &[u8]| {
        before.len() >= word.len()
            && before
                .get(before.len() - word.len()..)
                .is_some_and(|tail| tail.eq_ignore_ascii_case(word))
    };
    if ends_with(b"v") || ends_with(b"version") {
        return false;
    }
    candidate.parse::<std::net::Ipv4Addr>().is_ok()
        && candidate
            .split('.')
            .all(|octet| octet.len() == 1 || !octet.starts_with('0'))
}

fn ipv6(candidate: &str, text: &str, start: usize) -> bool {
    // Not glued to a word ("Noted::" is not an address), at least two non-empty groups, and a real
    // address by the standard library's parser, with its IPv4 tail (`::ffff:192.0.2.1`) and zone
    // index (`fe80::1%eth0`) part of the value.
    let before = text.get(..start).and_then(|t| t.chars().last());
    let after = text
        .get(start + candidate.len()..)
        .and_then(|t| t.chars().next());
    let word = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == ':');
    let (address, zone) = match candidate.split_once('%') {
        Some((address, zone)) => (address, Some(zone)),
        None => (candidate, None),
    };
    let colons = address.matches(':').count();
    let embedded_v4 = address.contains('.');
    !word(before)
        && !word(after)
        && zone.is_none_or(|z| !z.is_empty())
        && address.split(':').filter(|g| !g.is_empty()).count() >= 2
        && (address.contains("::") || colons == 7 || (embedded_v4 && colons == 6))
        && address.parse::<std::net::Ipv6Addr>().is_ok()
}

/// Where a phone number's extension starts (`ext. 123`, `x123`, `#123`), if it has one.
fn extension_start(candidate: &str) -> Option<usize> {
    candidate.find(['e', 'E', 'x', 'X', '#'])
}

fn phone(candidate: &str, text: &str, start: usize) -> bool {
    let number = extension_start(candidate)
        .and_then(|at| candidate.get(..at))
        .unwrap_or(candidate);
    // The international call prefix (00, or 011 from North America) is not part of the number.
    let trimmed = number.trim_start_matches(['+', '(']);
    let international = trimmed
        .strip_prefix("011")
        .or_else(|| trimmed.strip_prefix("00"))
        .filter(|_| !number.starts_with('('));
    let d = digits(international.unwrap_or(number));
    (7..=15).contains(&d.len()) && stands_alone(candidate, text, start)
}

/// Not part of a longer token ("ORD-0301234567", "x0301234567", more digits) and not a time.
fn stands_alone(candidate: &str, text: &str, start: usize) -> bool {
    // Not part of a longer token: "ORD-0301234567", "x0301234567", or a number with more digits.
    let before = text.get(..start).and_then(|t| t.chars().last());
    let after = text
        .get(start + candidate.len()..)
        .and_then(|t| t.chars().next());
    let glued = |c: Option<char>| {
        c.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '/')
    };
    // A label may follow a hyphen ("555-0100-Office"); more digits may not ("555-0100-7").
    let after_label = text
        .get(start + candidate.len()..)
        .and_then(|t| t.strip_prefix('-'))
        .and_then(|t| t.chars().next())
        .is_some_and(|c| c.is_alphabetic());
    if glued(before) || (glued(after) && !after_label) {
        return false;
    }
    // Dates and times look like digit groups too.
    if candidate.contains(':') {
        return false;
    }
    true
}

/// Words that say a number nearby is a phone number (ASCII, lower case, matched as whole words).
const PHONE_CONTEXT: &[&str] = &[
    "phone",
    "telephone",
    "tel",
    "mobile",
    "cell",
    "cellphone",
    "fax",
    "call",
    "office",
    "home",
    "landline",
    "whatsapp",
    "sms",
    "text",
    "dial",
    "ring",
    "contact",
    "hotline",
    "pager",
    "ph",
    "message",
    "messages",
    "texting",
    "answering",
    "voicemail",
    "callback",
    "calling",
    "called",
    "reach",
    "mob",
    "ext",
];

/// How far from a number (bytes, either side) [`PHONE_CONTEXT`] is looked for: the label of a
/// contact line ("Mobile: ...", "... (office)").
const PHONE_CONTEXT_WINDOW: usize = 32;

/// Whether a word of [`PHONE_CONTEXT`] stands within [`PHONE_CONTEXT_WINDOW`] bytes of
/// `start..end`. Constant work per candidate, whatever the text's length.
fn phone_context_near(text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let before = bytes
        .get(start.saturating_sub(PHONE_CONTEXT_WINDOW)..start)
        .unwrap_or_default();
    let after = bytes
        .get(end..end.saturating_add(PHONE_CONTEXT_WINDOW).min(bytes.len()))
        .unwrap_or_default();
    [before, after].into_iter().any(|window| {
        window.split(|b| !b.is_ascii_alphabetic()).any(|word| {
            PHONE_CONTEXT
                .iter()
                .any(|w| word.eq_ignore_ascii_case(w.as_bytes()))
        })
    })
}

/// A national number in any grouping, 7 to 13 digits (or three pairs), confirmed by a word nearby (see
/// [`PHONE_CONTEXT`]); the usual phone checks (not glued to a longer token, not a time) apply.
fn phone_in_context(candidate: &str, text: &str, start: usize) -> bool {
    let number = extension_start(candidate)
        .and_then(|at| candidate.get(..at))
        .unwrap_or(candidate);
    let count = number.bytes().filter(u8::is_ascii_digit).count();
    let groups: Vec<&str> = number
        .split(['.', ' ', '-'])
        .filter(|g| !g.is_empty())
        .collect();
    // "56.725383" is a decimal and "378.221.54.56" an address-shaped number; "05.53.18.69.64" and
    // "088.147.4350" are phones.
    let dotted = number.contains('.');
    let decimal = dotted && groups.len() < 3;
    let address_shaped = dotted && groups.len() == 4 && groups.iter().all(|g| g.len() <= 3);
    // "666-33-6246" is shaped as an SSN (an invalid one, or the SSN detector had it).
    let ssn_shaped = number.len() == 11
        && number.bytes().enumerate().all(|(i, b)| match i {
            3 | 6 => b == b'-',
            _ => b.is_ascii_digit(),
        });
    // Six digits only as three pairs ("87 47 98", short local numbers): a bare six-digit run is
    // a code.
    let pairs = count == 6 && groups.len() == 3 && groups.iter().all(|g| g.len() == 2);
    ((7..=13).contains(&count) || pairs)
        && !decimal
        && !address_shaped
        && !ssn_shaped
        && !inside_a_dotted_number(text, start, start + candidate.len())
        && !labelled_as_something_else(text, start)
        && stands_alone(candidate, text, start)
        && !looks_like_a_date(number)
        && !starts_a_street_address(text, start + candidate.len())
        && phone_context_near(text, start, start + candidate.len())
}

/// "11.4.14124.5167": the candidate is the tail or head of a longer dotted number (a version).
fn inside_a_dotted_number(text: &str, start: usize, end: usize) -> bool {
    let bytes = text.as_bytes();
    let dot_digit_before = start >= 2
        && bytes.get(start - 1) == Some(&b'.')
        && bytes.get(start - 2).is_some_and(u8::is_ascii_digit);
    let dot_digit_after =
        bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit);
    dot_digit_before || dot_digit_after
}

/// Labels that say the number right after them is not a phone ("invoice 079051080").
const NOT_PHONE_LABELS: &[&str] = &[
    "invoice",
    "order",
    "ref",
    "reference",
    "ticket",
    "account",
    "acct",
    "id",
    "no",
    "nr",
    "build",
    "version",
    "serial",
    "sku",
    "po",
    "tracking",
    "case",
    "amount",
    "total",
    "price",
    "balance",
    "ssn",
    "iban",
    "card",
    "zip",
    "postcode",
    "code",
    "pin",
    "isbn",
    "issue",
    "pr",
    "commit",
    "item",
    "license",
    "licence",
    "passport",
    "number",
];

/// Whether the word just before `start` (past spaces and `:#.(`) is one of [`NOT_PHONE_LABELS`].
fn labelled_as_something_else(text: &str, start: usize) -> bool {
    let before = text
        .as_bytes()
        .get(start.saturating_sub(PHONE_CONTEXT_WINDOW)..start)
        .unwrap_or_default();
    let trimmed = before
        .iter()
        .rposition(|b| !matches!(b, b' ' | b':' | b'#' | b'.' | b'(' | b'\t'))
        .and_then(|last| before.get(..=last))
        .unwrap_or_default();
    let word_start = trimmed
        .iter()
        .rposition(|b| !b.is_ascii_alphabetic())
        .map_or(0, |i| i + 1);
    let word = trimmed.get(word_start..).unwrap_or_default();
    NOT_PHONE_LABELS
        .iter()
        .any(|label| word.eq_ignore_ascii_case(label.as_bytes()))
}

/// "4301 Ethels Lane": a house number before a street name, not a phone.
fn starts_a_street_address(text: &str, end: usize) -> bool {
    const STREET_WORDS: &[&str] = &[
        "street",
        "st",
        "road",
        "rd",
        "avenue",
        "ave",
        "lane",
        "ln",
        "drive",
        "dr",
        "way",
        "court",
        "ct",
        "place",
        "pl",
        "boulevard",
        "blvd",
        "square",
        "sq",
        "terrace",
        "close",
        "crescent",
        "highway",
        "hwy",
        "parkway",
        "pkwy",
        "circle",
        "trail",
        "row",
        "hill",
        "park",
        "gardens",
        "stream",
        "route",
        "rue",
        "strasse",
        "straße",
        "via",
        "calle",
    ];
    let rest = text.get(end..).unwrap_or("");
    let Some(rest) = rest.strip_prefix(' ') else {
        return false;
    };
    // "3441 rue Saint-Antoine", "12 via Roma": the kind of street first.
    let first = rest
        .split(|c: char| !c.is_alphanumeric())
        .next()
        .unwrap_or("");
    if [
        "rue",
        "via",
        "calle",
        "avenida",
        "rua",
        "strada",
        "avenue",
        "boulevard",
        "chemin",
        "allee",
        "place",
        "route",
        "impasse",
        "quai",
    ]
    .iter()
    .any(|s| first.eq_ignore_ascii_case(s))
    {
        return true;
    }
    // The street's name (one to three capitalised words) and then its kind.
    let mut words = rest
        .split(|c: char| !c.is_alphanumeric() && c != 'ß')
        .take(4)
        .peekable();
    if !words
        .peek()
        .is_some_and(|w| w.chars().next().is_some_and(char::is_uppercase))
    {
        return false;
    }
    words
        .skip(1)
        .any(|w| STREET_WORDS.iter().any(|s| w.eq_ignore_ascii_case(s)))
}

/// "2024 01 15", "15.01.2024", "2024-01-15": a date, whatever the words around it.
fn looks_like_a_date(number: &str) -> bool {
    let groups: Vec<&str> = number
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
        .collect();
    let year = |g: &str| g.len() == 4 && (g.starts_with("19") || g.starts_with("20"));
    let small =
        |g: &str, max: u32| g.len() <= 2 && g.parse::<u32>().is_ok_and(|v| (1..=max).contains(&v));
    match groups.as_slice() {
        [y, m, d] if year(y) => small(m, 12) && small(d, 31),
        [d, m, y] | [m, d, y] if year(y) => small(d, 31) && small(m, 31),
        _ => false,
    }
}

fn email(candidate: &str, _: &str, _: usize) -> bool {
    let Some((local, domain)) = candidate.split_once('@') else {
        return false;
    };
    // A top-level domain of letters: ASCII (`com`), an IDN's own script (`рф`) or its ASCII form
    // (`xn--p1ai`); never digits (`x@1.2` is not an address).
    let tld_ok = domain.contains('.')
        && domain.rsplit('.').next().is_some_and(|tld| {
            tld.chars().count() >= 2
                && (tld.chars().all(|c| c.is_ascii_alphabetic())
                    || tld.starts_with("xn--")
                    || tld.chars().all(|c| c.is_alphabetic() && !c.is_ascii()))
        });
    !local.starts_with('.')
        && !local.ends_with('.')
        && !local.contains("..")
        && tld_ok
        && domain
            .split('.')
            .all(|label| !label.is_empty() && !label.starts_with('-') && !label.ends_with('-'))
}

impl Detectors {
    pub fn new() -> Result<Detectors, String> {
        let p = |kind, source: &'static str, validate, near_digits: bool| {
            let near_digits = match (near_digits, longest_match(source)) {
                (false, _) => None,
                (true, Some(len)) if len <= WINDOW_MARGIN => Some(len),
                (true, _) => {
                    return Err(format!(
                        "{source} may match more than {WINDOW_MARGIN} bytes"
                    ))
                }
            };
            Ok(Pattern {
                kind,
                source,
                regex: Scanner::new(source)?,
                validate,
                near_digits,
            })
        };
        // The last argument: every match holds a digit and is short (see `Pattern::near_digits`).
        let patterns = vec![
                // Secrets first: they contain digit runs and '@' that other detectors would claim.
                p(Builtin::Secret, r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----", always, false),
                p(Builtin::Secret, r"\bsk-(?:proj-|svcacct-|admin-|ant-api03-)?[A-Za-z0-9_-]{20,}", always, false),
                p(Builtin::Secret, r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b", always, false),
                // Two patterns, not one alternation: a search skips to a single literal far faster.
                p(Builtin::Secret, r"\bgh[pousr]_[A-Za-z0-9]{36}\b", always, false),
                p(Builtin::Secret, r"\bgithub_pat_[A-Za-z0-9_]{22,}", always, false),
                p(Builtin::Secret, r"\bxox[baprs]-[A-Za-z0-9-]{10,}", always, false),
                p(Builtin::Secret, r"\bAIza[0-9A-Za-z_-]{35}", always, false),
                p(Builtin::Secret, r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{10,}", always, false),
                p(Builtin::CreditCard, r"\b[0-9](?:(?: {1,2}|[.-])?[0-9]){11,18}\b", credit_card, true),
                p(Builtin::Iban, r"\b[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]){11,30}\b", iban, true),
                p(Builtin::UsSsn, r"\b[0-9]{3}-[0-9]{2}-[0-9]{4}\b|\b[0-9]{3} [0-9]{2} [0-9]{4}\b", us_ssn, true),
                // Internationalized addresses (RFC 6531): letters of any script in the local part
                // and the domain (with the `regex` engine; `regex-lite` reads ASCII only).
                p(Builtin::Email, r"[\w.%+-]+@(?:[^\W_]|-)+(?:\.(?:[^\W_]|-)+)+", email, false),
                p(Builtin::IpAddress, r"\b[0-9]{1,3}(?:\.[0-9]{1,3}){3}\b", ipv4, true),
                p(Builtin::IpAddress, r"[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:(?:\.[0-9]{1,3}){3})?(?:%[0-9A-Za-z._~-]+)?", ipv6, false),
                // Phones: E.164 and international (`+`, or the 00 / 011 call prefixes), US (NANP),
                // UK, DE and FR national formats, area codes in brackets, extensions.
                // After a 00 / 011 call prefix the groups need separators: "008633314" is an invoice.
                p(Builtin::Phone, r"(?:\+[1-9][0-9]{0,2}(?:[ .-]?\(?[0-9]{1,4}\)?){2,5}|\b(?:00|011) ?[1-9][0-9]{0,2}(?:[ .-]\(?[0-9]{1,8}\)?){1,5})(?:,? ?(?:[Ee]xt\.?|[Xx]|#) ?[0-9]{1,6}\b)?", phone, true),
                // (The word boundary comes after the extension: "555-0100x12" has none before the x.)
                p(Builtin::Phone, r"(?:\(?\b[2-9][0-9]{2}\)?[ .-][2-9][0-9]{2}[ .-][0-9]{4}|\([2-9][0-9]{2}\) ?[2-9][0-9]{2}-[0-9]{4})(?:,? ?(?:[Ee]xt\.?|[Xx]|#) ?[0-9]{1,6})?\b", phone, true),
                // National UK/DE numbers need a separator: "030123456" alone is as likely an invoice.
                p(Builtin::Phone, r"(?:\b0[1-9][0-9]{1,4}[ /-][0-9]{3,4}[ -]?[0-9]{3,4}\b|\(0[1-9][0-9]{1,4}\) ?[0-9]{3,4}[ -]?[0-9]{3,4}\b|\(0\) ?[1-9][0-9]{1,4} [0-9]{3,4}[ -]?[0-9]{3,4}\b)(?:,? ?(?:[Ee]xt\.?|[Xx]|#) ?[0-9]{1,6}\b)?", phone, true),
                p(Builtin::Phone, r"\b0[1-9](?:[ .][0-9]{2}){4}\b", phone, true),
            ]
            .into_iter()
            .collect::<Result<Vec<_>, _>>()?;
        let phone_nearby = p(
            Builtin::Phone,
            r"(?:\(0?[1-9][0-9]{0,4}\) ?|\b)[0-9]{1,12}(?:[ .-]{1,2}[0-9]{2,8}){0,4}(?:,? ?(?:[Ee]xt\.?|[Xx]|#) ?[0-9]{1,6})?\b",
            phone_in_context,
            true,
        )?;
        // ASCII-only case folding and word boundaries where the engine has the syntax: the words
        // are ASCII, and the smaller automaton scans prose about twice as fast.
        let ascii = if cfg!(feature = "regex") { "-u" } else { "" };
        let phone_words = format!(r"(?i{ascii})\b(?:{})\b", PHONE_CONTEXT.join("|"));
        let any: Vec<String> = patterns
            .iter()
            .chain([&phone_nearby])
            .map(|p| format!("(?:{})", p.source))
            .collect();
        Ok(Detectors {
            any: Scanner::new(&any.join("|"))?,
            patterns,
            phone_nearby,
            phone_words: Scanner::new(&phone_words)?,
        })
    }

    /// The ranges of `text` a pattern whose matches hold a digit and are at most `margin` bytes
    /// long searches: near `runs` with the `regex` engine, the whole text (when it has a digit)
    /// with `regex-lite`, which cannot search a part in context.
    fn digit_windows(text: &str, runs: &[Range<usize>], margin: usize) -> Vec<Range<usize>> {
        match runs.is_empty() {
            true => Vec::new(),
            false if cfg!(feature = "regex") => around(text, runs, margin),
            false => std::iter::once(0..text.len()).collect(),
        }
    }

    /// The parts of `text` where a national number (near the digit `runs`) would stand close
    /// enough to a word of [`PHONE_CONTEXT`] for its validator: merged byte ranges.
    fn near_phone_words(&self, text: &str, runs: &[Range<usize>]) -> Vec<Range<usize>> {
        let margin = self.phone_nearby.near_digits.unwrap_or(WINDOW_MARGIN) + PHONE_CONTEXT_WINDOW;
        let windows = Self::digit_windows(text, runs, margin);
        // The number ends within the context window of the word and is at most this long itself.
        let reach = margin;
        let mut ranges: Vec<Range<usize>> = Vec::new();
        for window in &windows {
            for word in self.phone_words.find_in(text, window.clone()) {
                let mut start = word.start.saturating_sub(reach).max(window.start);
                while !text.is_char_boundary(start) {
                    start -= 1;
                }
                let mut end = (word.end + reach).min(window.end);
                while !text.is_char_boundary(end) {
                    end += 1;
                }
                match ranges.last_mut() {
                    Some(last) if start <= last.end => last.end = last.end.max(end),
                    _ => ranges.push(start..end),
                }
            }
        }
        ranges
    }

    /// Every validated finding in `text`, without overlaps: where two overlap, the longer one wins (an
    /// IBAN over a card-like run inside it), then the earlier, more specific detector.
    pub fn find(&self, text: &str, enabled: &dyn Fn(Builtin) -> bool) -> Vec<Found> {
        // (pattern index, candidate) of every validated match, for the overlap resolution below.
        let mut found: Vec<(usize, Found)> = Vec::new();
        if text.len() <= SHORT_TEXT && self.any.find_in(text, 0..text.len()).next().is_none() {
            return Vec::new();
        }
        let all = 0..text.len();
        let whole = std::slice::from_ref(&all);
        let runs = digit_runs(text);
        let near_phone_words = match enabled(Builtin::Phone) {
            true => self.near_phone_words(text, &runs),
            false => Vec::new(),
        };
        // The national-number pattern is ranked after every other: where it overlaps another
        // finding it yields, whole.
        let phone_nearby = (self.patterns.len(), &self.phone_nearby);
        let patterns = self
            .patterns
            .iter()
            .enumerate()
            .chain(std::iter::once(phone_nearby));
        for (rank, pattern) in patterns {
            if !enabled(pattern.kind) {
                continue;
            }
            let windows;
            let ranges: &[Range<usize>] = match pattern.near_digits {
                _ if rank == phone_nearby.0 => &near_phone_words,
                Some(margin) => {
                    windows = Self::digit_windows(text, &runs, margin);
                    &windows
                }
                None => whole,
            };
            for range in ranges {
                for m in pattern.regex.find_in(text, range.clone()) {
                    let candidate = text.get(m.clone()).unwrap_or_default();
                    if let Some((from, to)) = valid_span(pattern, candidate, text, m.start) {
                        found.push((
                            rank,
                            Found {
                                start: m.start + from,
                                end: m.start + to,
                                kind: pattern.kind,
                            },
                        ));
                    }
                }
            }
        }
        // Overlaps: the stronger evidence wins (a checksum over a digit-count rule: secrets, cards,
        // IBANs, then SSNs, e-mail, IP addresses, phones last), then the longer match. A loser that
        // only ran into a kept value keeps its own valid part ("… 2671) 4111 1111 …": the phone
        // without the card's first group), so neither value is left partly in the clear.
        found.sort_by_key(|(rank, f)| {
            (
                strength(f.kind),
                std::cmp::Reverse(f.end - f.start),
                *rank,
                f.start,
            )
        });
        let mut kept = Spans::default();
        for (rank, candidate) in found {
            if kept.insert_if_free(candidate.start, candidate.end, candidate) {
                continue;
            }
            let Some(pattern) = self.patterns.get(rank) else {
                continue;
            };
            let whole = text.get(candidate.start..candidate.end).unwrap_or("");
            let free = readings(whole).into_iter().find(|&(from, to)| {
                let (start, end) = (candidate.start + from, candidate.start + to);
                kept.is_free(start, end)
                    && whole
                        .get(from..to)
                        .is_some_and(|part| (pattern.validate)(part, text, start))
            });
            if let Some((from, to)) = free {
                let (start, end) = (candidate.start + from, candidate.start + to);
                kept.insert_if_free(
                    start,
                    end,
                    Found {
                        start,
                        end,
                        ..candidate
                    },
                );
            }
        }
        let mut kept: Vec<Found> = kept.into_values();
        kept.sort_by_key(|f| f.start);
        kept
    }
}

/// How many shorter readings of a match are tried (keeps the work per match bounded).
const MAX_READINGS: usize = 32;
/// Readings start at one of the first, and end at one of the last, this many group boundaries.
const READING_CUTS: usize = 6;

/// Which detector's finding wins an overlap: checksums before digit-count rules.
fn strength(kind: Builtin) -> u8 {
    match kind {
        Builtin::Secret => 0,
        // Both checksums: the longer wins, so an IBAN keeps a Luhn-valid run of its digits.
        Builtin::CreditCard | Builtin::Iban => 1,
        Builtin::UsSsn => 3,
        Builtin::Email => 4,
        Builtin::IpAddress => 5,
        Builtin::Phone => 6,
    }
}

/// The shorter readings of a match that begin and end at separators (` `, `-`, `.`, `/`), longest
/// first, at most [`MAX_READINGS`]: ranges of `candidate`.
fn readings(candidate: &str) -> Vec<(usize, usize)> {
    let separator = |c: char| matches!(c, ' ' | '-' | '.' | '/');
    // Readings start at one of the first cuts and end at one of the last ends: a handful of pairs
    // however many groups a long rejected match has (this runs on every rejected match).
    let mut cuts = vec![0];
    let mut ends = vec![candidate.len()];
    for (i, c) in candidate.char_indices().filter(|(_, c)| separator(*c)) {
        cuts.push(i + c.len_utf8());
        ends.push(i);
    }
    cuts.truncate(READING_CUTS);
    ends.reverse();
    ends.truncate(READING_CUTS);
    let mut readings: Vec<(usize, usize)> = cuts
        .iter()
        .flat_map(|&from| ends.iter().map(move |&to| (from, to)))
        .filter(|&(from, to)| from < to && (from, to) != (0, candidate.len()))
        .filter(|&(from, to)| {
            candidate
                .get(from..to)
                .is_some_and(|part| !part.starts_with(separator) && !part.ends_with(separator))
        })
        .collect();
    readings.sort_by_key(|&(from, to)| (std::cmp::Reverse(to - from), from));
    readings.truncate(MAX_READINGS);
    readings
}

/// The valid value in `candidate`, a match starting at `start` of `text`, as a range of
/// `candidate`: the whole match, or, when a greedy match took in digits of a neighbouring value
/// (an IP address's last group before a card number), its longest valid reading. `None`: no value.
fn valid_span(
    pattern: &Pattern,
    candidate: &str,
    text: &str,
    start: usize,
) -> Option<(usize, usize)> {
    if (pattern.validate)(candidate, text, start) {
        return Some((0, candidate.len()));
    }
    readings(candidate).into_iter().find(|&(from, to)| {
        candidate
            .get(from..to)
            .is_some_and(|part| (pattern.validate)(part, text, start + from))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detectors() -> Detectors {
        Detectors::new().unwrap()
    }

    fn kinds(text: &str) -> Vec<(Builtin, String)> {
        detectors()
            .find(text, &|_| true)
            .into_iter()
            .map(|f| (f.kind, text[f.start..f.end].to_string()))
            .collect()
    }

    /// Formats people write that a first round missed, each masked whole (a value is masked whole or
    /// not at all), and look-alikes left alone.
    #[test]
    fn international_forms_are_found_whole() {
        for (text, kind, value) in [
            (
                "Call +1 415 555 2671 ext. 123 today",
                Builtin::Phone,
                "+1 415 555 2671 ext. 123",
            ),
            (
                "Call (415) 555-2671 x1234.",
                Builtin::Phone,
                "(415) 555-2671 x1234",
            ),
            (
                "Ring 0044 20 7946 0958.",
                Builtin::Phone,
                "0044 20 7946 0958",
            ),
            (
                "Ring 011 44 20 7946 0958.",
                Builtin::Phone,
                "011 44 20 7946 0958",
            ),
            (
                "Ring +44 (0)20 7946 0958.",
                Builtin::Phone,
                "+44 (0)20 7946 0958",
            ),
            ("Büro (030) 1234 5678.", Builtin::Phone, "(030) 1234 5678"),
            (
                "JCB 3530 1113 3330 0000 ok",
                Builtin::CreditCard,
                "3530 1113 3330 0000",
            ),
            (
                "Diners 3056 930902 5904 ok",
                Builtin::CreditCard,
                "3056 930902 5904",
            ),
            (
                "UnionPay 6200 0000 0000 0005 ok",
                Builtin::CreditCard,
                "6200 0000 0000 0005",
            ),
            (
                "Dots 4111.1111.1111.1111 ok",
                Builtin::CreditCard,
                "4111.1111.1111.1111",
            ),
            (
                "Spaced 4111  1111  1111  1111 ok",
                Builtin::CreditCard,
                "4111  1111  1111  1111",
            ),
            (
                "From ::ffff:192.0.2.128 today",
                Builtin::IpAddress,
                "::ffff:192.0.2.128",
            ),
            (
                "Link fe80::1ff:fe23:4567:890a%eth2 up",
                Builtin::IpAddress,
                "fe80::1ff:fe23:4567:890a%eth2",
            ),
            (
                "Mail jörg.müller@bücher.de now",
                Builtin::Email,
                "jörg.müller@bücher.de",
            ),
            (
                "Почта пользователь@почта.рф сейчас",
                Builtin::Email,
                "пользователь@почта.рф",
            ),
        ] {
            assert_eq!(kinds(text), vec![(kind, value.to_string())], "{text}");
        }
        for text in [
            "invoice 008633314",
            "order 0049123456789",
            "mixed 4111 1111-1111 1111",
            "time 12:30:45",
            "user@host.c0m",
            "snake_case@var_name.field",
        ] {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }

    #[test]
    fn validators() {
        assert!(luhn(&digits("4111111111111111")));
        assert!(!luhn(&digits("4111111111111112")));
        assert!(iban_valid("DE89 3704 0044 0532 0130 00"));
        assert!(iban_valid("GB82WEST12345698765432"));
        assert!(!iban_valid("GB82WEST12345698765433"));
        assert!(
            !iban_valid("DE89 3704 0044 0532 0130 0"),
            "wrong length for DE"
        );
        assert!(us_ssn("123-45-6789", "", 0));
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "900-12-3456",
            "123-00-6789",
            "123-45-0000",
        ] {
            assert!(!us_ssn(bad, "", 0), "{bad}");
        }
    }

    #[test]
    fn one_example_per_detector() {
        let cases = [
            (
                "mail jane.doe+x@example.co.uk now",
                Builtin::Email,
                "jane.doe+x@example.co.uk",
            ),
            ("call +1 415 555 2671", Builtin::Phone, "+1 415 555 2671"),
            (
                "call (415) 555-2671 today",
                Builtin::Phone,
                "(415) 555-2671",
            ),
            ("ring 020 7946 0958", Builtin::Phone, "020 7946 0958"),
            ("ruf 030 12345678 an", Builtin::Phone, "030 12345678"),
            ("appelez 01 23 45 67 89", Builtin::Phone, "01 23 45 67 89"),
            (
                "card 4111 1111 1111 1111.",
                Builtin::CreditCard,
                "4111 1111 1111 1111",
            ),
            (
                "amex 3782-822463-10005",
                Builtin::CreditCard,
                "3782-822463-10005",
            ),
            (
                "mc 2221000000000009",
                Builtin::CreditCard,
                "2221000000000009",
            ),
            ("ssn 123-45-6789", Builtin::UsSsn, "123-45-6789"),
            (
                "iban DE89 3704 0044 0532 0130 00 ok",
                Builtin::Iban,
                "DE89 3704 0044 0532 0130 00",
            ),
            ("from 192.168.1.20 and", Builtin::IpAddress, "192.168.1.20"),
            (
                "v6 2001:db8::8a2e:370:7334 up",
                Builtin::IpAddress,
                "2001:db8::8a2e:370:7334",
            ),
            (
                "key sk-proj-abcdefghijklmnopqrstuvwx1234",
                Builtin::Secret,
                "sk-proj-abcdefghijklmnopqrstuvwx1234",
            ),
            (
                "aws AKIAIOSFODNN7EXAMPLE",
                Builtin::Secret,
                "AKIAIOSFODNN7EXAMPLE",
            ),
        ];
        for (text, kind, value) in cases {
            assert_eq!(kinds(text), vec![(kind, value.to_string())], "{text}");
        }
    }

    #[test]
    fn hard_negatives_are_not_pii() {
        for text in [
            "version 10.0.19045.2965",
            "v1.2.3.4",
            "2024-01-15",
            "15/01/2024",
            "12:30:45",
            "2024-01-15T12:30:45Z",
            "ORD-2024-558812",
            "order 1234567890123456",
            "550e8400-e29b-41d4-a716-446655440000",
            "ISBN 978-3-16-148410-0",
            "999.999.1.1",
            "000-12-3456",
            "price 1,234.56",
            "zip 94103",
            "sha 3f786850e387550fdab836ed7e6dc881de23001b",
            "GB82WEST12345698765433",
            "4111 1111 1111 1112",
            "build 20240115.1",
            "call me at noon",
            "user@localhost",
        ] {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }

    use crate::test_rng::Rng;

    /// Generators of the corpus's values.
    impl Rng {
        fn digits(&mut self, n: usize) -> String {
            (0..n)
                .map(|_| char::from(b'0' + self.below(10) as u8))
                .collect()
        }
        fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
            items[self.below(items.len() as u64) as usize]
        }
        fn alnum(&mut self, n: usize, alphabet: &str) -> String {
            let chars: Vec<char> = alphabet.chars().collect();
            (0..n)
                .map(|_| chars[self.below(chars.len() as u64) as usize])
                .collect()
        }
    }

    fn luhn_complete(prefix: &str, len: usize, rng: &mut Rng) -> String {
        let mut number = prefix.to_string();
        number.push_str(&rng.digits(len - prefix.len() - 1));
        for check in 0..10 {
            let candidate = format!("{number}{check}");
            if luhn(&digits(&candidate)) {
                return candidate;
            }
        }
        unreachable!()
    }

    fn group(number: &str, sizes: &[usize], sep: &str) -> String {
        let mut parts = Vec::new();
        let mut at = 0;
        for size in sizes {
            parts.push(&number[at..at + size]);
            at += size;
        }
        parts.join(sep)
    }

    fn iban_for(country: &str, bban: &str) -> String {
        let rearranged = format!("{bban}{country}00");
        let mut remainder: u64 = 0;
        for c in rearranged.chars() {
            let v = u64::from(c.to_digit(36).unwrap());
            remainder = if v >= 10 {
                (remainder * 100 + v) % 97
            } else {
                (remainder * 10 + v) % 97
            };
        }
        format!("{country}{:02}{bban}", 98 - remainder)
    }

    fn positive(kind: Builtin, rng: &mut Rng) -> String {
        match kind {
            // Internationalized: letters of other scripts, the IDN's ASCII form (the `regex-lite`
            // engine reads ASCII letters only).
            Builtin::Email if cfg!(feature = "regex") && rng.below(4) == 0 => rng
                .pick(&[
                    "jörg.müller@bücher.de",
                    "用户@例子.广告",
                    "пользователь@почта.рф",
                    "δοκιμή@παράδειγμα.δοκιμή",
                    "info@xn--bcher-kva.de",
                    "josé@correo.es",
                ])
                .to_string(),
            Builtin::Email => {
                let local = format!(
                    "{}{}{}",
                    rng.alnum(5, "abcdefghij"),
                    rng.pick(&["", ".", "_", "+tag."]),
                    rng.alnum(3, "klmnop0123")
                );
                format!(
                    "{local}@{}.{}",
                    rng.pick(&["example", "mail-host", "corp.example", "uni"]),
                    rng.pick(&["com", "org", "co.uk", "de", "io"])
                )
            }
            Builtin::Phone => {
                let area = format!("{}{}", 2 + rng.below(8), rng.digits(2));
                let exchange = format!("{}{}", 2 + rng.below(8), rng.digits(2));
                let line = rng.digits(4);
                match rng.below(15) {
                    0 => format!("+1 {area} {exchange} {line}"),
                    1 => format!("+1{area}{exchange}{line}"),
                    9 => format!("+1 {area} {exchange} {line} ext. {}", rng.digits(3)),
                    10 => format!("({area}) {exchange}-{line} x{}", rng.digits(4)),
                    11 => format!("0044 20 {} {}", rng.digits(4), rng.digits(4)),
                    12 => format!("011 44 20 {} {}", rng.digits(4), rng.digits(4)),
                    13 => format!("+44 (0)20 {} {}", rng.digits(4), rng.digits(4)),
                    14 => format!("(030) {} {}", rng.digits(4), rng.digits(4)),
                    2 => format!("({area}) {exchange}-{line}"),
                    3 => format!("{area}-{exchange}-{line}"),
                    4 => format!("+44 20 {} {}", rng.digits(4), rng.digits(4)),
                    5 => format!("07{} {}", rng.digits(3), rng.digits(6)),
                    6 => format!("+49 30 {}", rng.digits(8)),
                    7 => format!("0151 {}", rng.digits(8)),
                    _ => format!(
                        "0{} {} {} {} {}",
                        1 + rng.below(9),
                        rng.digits(2),
                        rng.digits(2),
                        rng.digits(2),
                        rng.digits(2)
                    ),
                }
            }
            Builtin::CreditCard => {
                let (number, sizes): (String, &[usize]) = match rng.below(10) {
                    5 => (
                        luhn_complete(&format!("{}", 3528 + rng.below(62)), 16, rng),
                        &[4, 4, 4, 4],
                    ), // JCB
                    6 => (
                        luhn_complete(rng.pick(&["36", "38", "300"]), 14, rng),
                        &[4, 6, 4],
                    ), // Diners
                    7 => (
                        luhn_complete(rng.pick(&["6759", "5018", "6304"]), 19, rng),
                        &[4, 4, 4, 4, 3],
                    ), // Maestro
                    8 => (luhn_complete("62", 16, rng), &[4, 4, 4, 4]), // UnionPay
                    9 => (
                        luhn_complete(&format!("220{}", rng.below(5)), 16, rng),
                        &[4, 4, 4, 4],
                    ), // Mir
                    0 => (luhn_complete("4", 16, rng), &[4, 4, 4, 4]),
                    1 => (
                        luhn_complete(&format!("5{}", 1 + rng.below(5)), 16, rng),
                        &[4, 4, 4, 4],
                    ),
                    2 => (
                        luhn_complete(&format!("{}", 2221 + rng.below(500)), 16, rng),
                        &[4, 4, 4, 4],
                    ),
                    3 => (luhn_complete(rng.pick(&["34", "37"]), 15, rng), &[4, 6, 5]),
                    _ => (luhn_complete("6011", 16, rng), &[4, 4, 4, 4]),
                };
                match rng.below(5) {
                    0 => number,
                    1 => group(&number, sizes, " "),
                    2 => group(&number, sizes, "  "),
                    3 => group(&number, sizes, "."),
                    _ => group(&number, sizes, "-"),
                }
            }
            Builtin::UsSsn => {
                let area = 1 + rng.below(665);
                let group_n = 1 + rng.below(99);
                let serial = 1 + rng.below(9999);
                format!("{area:03}-{group_n:02}-{serial:04}")
            }
            Builtin::Iban => {
                let iban = match rng.below(4) {
                    0 => iban_for("DE", &rng.digits(18)),
                    1 => iban_for(
                        "GB",
                        &format!(
                            "{}{}",
                            rng.alnum(4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                            rng.digits(14)
                        ),
                    ),
                    2 => iban_for("FR", &rng.digits(23)),
                    _ => iban_for(
                        "NL",
                        &format!(
                            "{}{}",
                            rng.alnum(4, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"),
                            rng.digits(10)
                        ),
                    ),
                };
                if rng.below(2) == 0 {
                    iban
                } else {
                    iban.as_bytes()
                        .chunks(4)
                        .map(|c| std::str::from_utf8(c).unwrap())
                        .collect::<Vec<_>>()
                        .join(" ")
                }
            }
            Builtin::IpAddress if rng.below(5) == 0 => {
                // IPv6 with an IPv4 tail, or a link-local address with its zone index.
                let v4 = format!(
                    "{}.{}.{}.{}",
                    1 + rng.below(223),
                    rng.below(256),
                    rng.below(256),
                    1 + rng.below(254)
                );
                match rng.below(3) {
                    0 => format!("::ffff:{v4}"),
                    1 => format!("64:ff9b::{v4}"),
                    _ => format!(
                        "fe80::{:x}:{:x}%{}",
                        rng.below(65536),
                        rng.below(65536),
                        rng.pick(&["eth0", "en1", "3"])
                    ),
                }
            }
            Builtin::IpAddress => {
                if rng.below(3) == 0 {
                    let groups: Vec<String> =
                        (0..8).map(|_| format!("{:x}", rng.below(65536))).collect();
                    if rng.below(2) == 0 {
                        groups.join(":")
                    } else {
                        format!("{}:{}::{}", groups[0], groups[1], groups[7])
                    }
                } else {
                    format!(
                        "{}.{}.{}.{}",
                        1 + rng.below(223),
                        rng.below(256),
                        rng.below(256),
                        1 + rng.below(254)
                    )
                }
            }
            Builtin::Secret => {
                let b62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
                match rng.below(7) {
                    0 => format!("sk-proj-{}", rng.alnum(40, b62)),
                    1 => format!("AKIA{}", rng.alnum(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")),
                    2 => format!("ghp_{}", rng.alnum(36, b62)),
                    3 => format!("xoxb-{}-{}", rng.digits(12), rng.alnum(24, b62)),
                    4 => format!("AIza{}", rng.alnum(35, b62)),
                    5 => format!(
                        "eyJ{}.eyJ{}.{}",
                        rng.alnum(20, b62),
                        rng.alnum(30, b62),
                        rng.alnum(43, b62)
                    ),
                    _ => format!(
                        "-----BEGIN RSA PRIVATE KEY-----\n{}\n{}\n-----END RSA PRIVATE KEY-----",
                        rng.alnum(64, b62),
                        rng.alnum(40, b62)
                    ),
                }
            }
        }
    }

    fn hard_negative(rng: &mut Rng) -> String {
        match rng.below(16) {
            0 => {
                // A card-shaped number that fails the Luhn check.
                let valid = luhn_complete("4", 16, rng);
                let last = valid.chars().last().and_then(|c| c.to_digit(10)).unwrap();
                format!("{}{}", &valid[..15], (last + 1 + rng.below(8) as u32) % 10)
            }
            1 => format!("ORD-{}-{}", 2000 + rng.below(30), rng.digits(6)),
            2 => format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                rng.next() as u32,
                rng.below(65536),
                rng.below(65536),
                rng.below(65536),
                rng.next() & 0xffff_ffff_ffff
            ),
            3 => format!(
                "{}-{:02}-{:02}",
                1990 + rng.below(40),
                1 + rng.below(12),
                1 + rng.below(28)
            ),
            4 => format!(
                "{:02}/{:02}/{}",
                1 + rng.below(28),
                1 + rng.below(12),
                1990 + rng.below(40)
            ),
            5 => format!(
                "{:02}:{:02}:{:02}",
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            6 => format!("v{}.{}.{}", rng.below(20), rng.below(50), rng.below(200)),
            7 => format!(
                "version {}.{}.{}.{}",
                rng.below(20),
                rng.below(10),
                rng.below(30000),
                rng.below(9999)
            ),
            8 => format!(
                "{}-{:02}-{}",
                rng.pick(&["000", "666", "900", "987"]),
                1 + rng.below(99),
                rng.digits(4)
            ),
            9 => format!("invoice {}", rng.digits(9)),
            10 => format!(
                "{}.{}.{}.{}",
                256 + rng.below(700),
                rng.below(256),
                rng.below(256),
                rng.below(256)
            ),
            11 => format!("ticket #{}", rng.digits(6)),
            12 => format!(
                "{}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                2020 + rng.below(9),
                1 + rng.below(12),
                1 + rng.below(28),
                rng.below(24),
                rng.below(60),
                rng.below(60)
            ),
            13 => rng.alnum(40, "0123456789abcdef"),
            14 => format!(
                "build {}{}.{}",
                2020 + rng.below(9),
                rng.digits(4),
                rng.below(9)
            ),
            _ => format!("{}.{:02} USD", rng.digits(4), rng.below(100)),
        }
    }

    #[test]
    fn corpus_precision_and_recall_per_entity_type() {
        let detectors = detectors();
        let mut rng = Rng(0x5eed_1234_abcd_9876);
        let fillers = [
            "Please contact",
            "My details:",
            "Send it to",
            "The value is",
            "Use",
            "Noted:",
        ];
        let mut tp = std::collections::BTreeMap::<Builtin, u32>::new();
        let mut fp = tp.clone();
        let mut fneg = tp.clone();
        for round in 0..400 {
            for kind in Builtin::ALL {
                // A positive with a hard negative next to it, in a sentence.
                let value = positive(kind, &mut rng);
                let noise = hard_negative(&mut rng);
                let filler = rng.pick(&fillers);
                let text = if round % 2 == 0 {
                    format!("{filler} {value} (ref {noise}) thanks.")
                } else {
                    format!("Ref {noise}; {filler}: {value}, ok?")
                };
                let start = text.find(&value).unwrap();
                let end = start + value.len();
                let found = detectors.find(&text, &|_| true);
                let hit = found
                    .iter()
                    .any(|f| f.kind == kind && f.start == start && f.end == end);
                *if hit {
                    tp.entry(kind).or_default()
                } else {
                    fneg.entry(kind).or_default()
                } += 1;
                for f in &found {
                    if !(f.kind == kind && f.start == start && f.end == end) {
                        *fp.entry(f.kind).or_default() += 1;
                        eprintln!(
                            "false positive {:?} {:?} in {text:?}",
                            f.kind,
                            &text[f.start..f.end]
                        );
                    }
                }
                if !hit {
                    eprintln!("missed {kind:?} {value:?} in {text:?}: {found:?}");
                }
            }
        }
        println!("| entity | precision | recall | true positives | false positives | missed |");
        println!("|---|---|---|---|---|---|");
        for kind in Builtin::ALL {
            let (t, f, n) = (
                tp.get(&kind).copied().unwrap_or(0),
                fp.get(&kind).copied().unwrap_or(0),
                fneg.get(&kind).copied().unwrap_or(0),
            );
            let precision = f64::from(t) / f64::from((t + f).max(1));
            let recall = f64::from(t) / f64::from((t + n).max(1));
            println!("| {kind} | {precision:.4} | {recall:.4} | {t} | {f} | {n} |");
            assert!(precision >= 0.99, "{kind}: precision {precision}");
            assert!(recall >= 0.98, "{kind}: recall {recall}");
        }
    }

    #[test]
    #[cfg(feature = "regex")]
    fn the_digit_patterns_search_near_digits_within_their_longest_match() {
        let d = detectors();
        let searched_near_digits: Vec<Option<usize>> = d
            .patterns
            .iter()
            .chain([&d.phone_nearby])
            .map(|p| p.near_digits)
            .collect();
        // Secrets, e-mail and IPv6 search the whole text; cards, IBANs, SSNs, IPv4 and phones
        // only near digits, as far as their longest match reaches.
        let expected = [
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            None,
            Some(55),
            Some(64),
            Some(11),
            None,
            Some(15),
            None,
            Some(75),
            Some(27),
            Some(32),
            Some(14),
            Some(74),
        ];
        assert_eq!(searched_near_digits, expected);
        assert!(longest_match(r"[0-9]+").is_none());
    }

    #[test]
    fn searching_near_digits_finds_what_a_whole_text_search_finds() {
        // Values and near misses at every distance from each other and from the text's ends, in
        // prose, dense runs and non-ASCII text: the windowed search must agree with a plain one.
        let d = detectors();
        let mut rng = Rng(7);
        let fillers = [
            "",
            " ",
            "word ",
            "ä ",
            "x",
            "Text with no digits at all, quite long indeed. ",
        ];
        for round in 0..400 {
            let mut text = String::new();
            for _ in 0..(1 + rng.below(12)) {
                let filler = rng.pick(&fillers).repeat(rng.below(8) as usize);
                text.push_str(&filler);
                let kind = Builtin::ALL[rng.below(7) as usize];
                let value = if rng.below(3) == 0 {
                    hard_negative(&mut rng)
                } else {
                    positive(kind, &mut rng)
                };
                text.push_str(&value);
                if round % 5 == 0 {
                    text.push_str(rng.pick(&[" call me ", " tel. ", " phone: "]));
                }
            }
            for pattern in d.patterns.iter().chain([&d.phone_nearby]) {
                let Some(margin) = pattern.near_digits else {
                    continue;
                };
                let windowed: Vec<Range<usize>> =
                    Detectors::digit_windows(&text, &digit_runs(&text), margin)
                        .into_iter()
                        .flat_map(|w| pattern.regex.find_in(&text, w).collect::<Vec<_>>())
                        .collect();
                let whole: Vec<Range<usize>> =
                    pattern.regex.find_in(&text, 0..text.len()).collect();
                assert_eq!(windowed, whole, "{} in {text:?}", pattern.source);
            }
        }
    }

    #[test]
    fn the_digit_check_agrees_with_a_plain_loop() {
        let mut rng = Rng(7);
        for len in 0..200 {
            for _ in 0..50 {
                let bytes: Vec<u8> = (0..len)
                    .map(|_| {
                        if rng.below(40) == 0 {
                            b'0' + rng.below(10) as u8
                        } else {
                            let b = rng.below(256) as u8;
                            if b.is_ascii_digit() {
                                b'a'
                            } else {
                                b
                            }
                        }
                    })
                    .collect();
                assert_eq!(
                    has_ascii_digit(&bytes),
                    bytes.iter().any(u8::is_ascii_digit),
                    "{bytes:?}"
                );
            }
        }
    }

    #[test]
    fn national_numbers_in_any_grouping_count_where_the_text_calls_them_phones() {
        for (text, value) in [
            ("Can someone call me on 06-82237745? Thanks", "06-82237745"),
            ("Mobile: 8240084271", "8240084271"),
            ("723 813 266 (office)", "723 813 266"),
            ("fax (73) 4746-3459", "(73) 4746-3459"),
            ("Tel. 088.147.4350", "088.147.4350"),
            ("home phone 469 2020", "469 2020"),
        ] {
            assert_eq!(
                kinds(text),
                vec![(Builtin::Phone, value.to_string())],
                "{text}"
            );
        }
        // The same digits without a word that makes them a phone, or with one but in another role.
        for text in [
            "Invoice 06-82237745 is due",
            "order 8240084271 shipped",
            "The office is at 4301 Ethels Lane, Tampa",
            "Call me at 03:08:56.725383",
            "Call the office on 2024-01-15",
            "the phone cost 56.725383 dollars",
        ] {
            assert_eq!(kinds(text), vec![], "{text}");
        }
    }
}
