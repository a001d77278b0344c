//! Hostile input: mutated and deeply nested documents never panic or hang.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::shape::FULL;
use super::*;

const MUTATION_ALPHABET: &[&str] = &[
    ":", "-", " ", "\n", "\t", "[", "]", "{", "}", ",", "\"", "'", "&a", "*a", "!!", "#", "?", "|",
    ">", "%", "@", "0", "/", ".", "::", "ports", "cidr", "preset", "fqdn", "\u{feff}", "é", "\r",
    "\\", "<<: *a",
];

#[test]
fn garbage_never_panics() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..2000 {
        let len = rng.random_range(0..200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        let _ = parse_policy(&String::from_utf8_lossy(&bytes), "fuzz.yaml");
        let text: String = (0..len)
            .map(|_| {
                *MUTATION_ALPHABET
                    .get(rng.random_range(0..MUTATION_ALPHABET.len()))
                    .unwrap_or(&"")
            })
            .collect();
        let _ = parse_policy(&text, "fuzz.yaml");
    }
    let base: Vec<char> = FULL.chars().collect();
    for _ in 0..2500 {
        let mut text = base.clone();
        for _ in 0..rng.random_range(1..6) {
            let at = rng.random_range(0..=text.len());
            match rng.random_range(0..3) {
                0 if at < text.len() => {
                    text.remove(at);
                }
                1 if at < text.len() => {
                    text[at] = MUTATION_ALPHABET[rng.random_range(0..MUTATION_ALPHABET.len())]
                        .chars()
                        .next()
                        .unwrap_or(' ');
                }
                _ => {
                    let piece = MUTATION_ALPHABET[rng.random_range(0..MUTATION_ALPHABET.len())];
                    text.splice(at..at, piece.chars());
                }
            }
        }
        let text: String = text.into_iter().collect();
        if let Err(PolicyError::Invalid { location, .. }) = parse_policy(&text, "fuzz.yaml") {
            assert!(location.line >= 1 && location.column >= 1, "{location}");
        }
    }
    // Deep nesting is refused, not recursed into, with the limit in words.
    for open in ["[", "{a: ", "- "] {
        let (_, _, m) = err(&open.repeat(20_000));
        assert_eq!(m, "invalid YAML: nested deeper than 32 levels", "{open}");
    }
    let nested: String = (0..300).map(|i| format!("{}a:\n", " ".repeat(i))).collect();
    let (_, _, m) = err(&nested);
    assert_eq!(m, "invalid YAML: nested deeper than 32 levels");
    // Alias bombs are refused by the parser's budget.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    assert!(parse_policy(&bomb, "bomb.yaml").is_err());
}

#[test]
fn control_characters_are_refused_where_they_are() {
    // Issue 11 case 1: a NUL before `- cidr: 10.0.0.0/8` used to cut the policy short.
    let yaml = "default: allow\nblock:\n  - preset: cloud-metadata\n\0 - cidr: 10.0.0.0/8\nallow:\n  - cidr: 10.96.0.10/32\n";
    assert_err(
        yaml,
        4,
        1,
        "invalid YAML: control character U+0000 is not allowed (only tab, line feed and carriage return are)",
    );
    for (c, column) in [('\u{1}', 9), ('\u{1b}', 9), ('\u{7f}', 9), ('\u{85}', 9)] {
        let (l, col, m) = err(&format!("mode: en{c}force\n"));
        assert_eq!((l, col), (1, column), "{m}");
        assert!(m.contains(&format!("U+{:04X}", u32::from(c))), "{m}");
    }
    // Tab, CR and LF stay allowed.
    ok("default: allow\r\nblock:\r\n  - cidr: 10.0.0.0/8\t# tab\r\n");
}

#[test]
fn long_values_are_cut_in_messages() {
    let value = "x".repeat(10_000_000);
    let (_, _, m) = err(&format!("mode: {value}\n"));
    assert!(m.len() < 200, "{} bytes", m.len());
    assert!(
        m.starts_with(&format!("unknown mode \"{}…\"", "x".repeat(100))),
        "{m}"
    );
    let (_, _, m) = err(&format!("block:\n  - cidr: 10.0.0.0/{value}\n"));
    assert!(m.len() < 300, "{} bytes", m.len());
    let (_, _, m) = err(&format!("{value}: 1\n"));
    assert!(m.len() < 300, "{} bytes", m.len());
}
