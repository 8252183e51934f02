//! The fuzz targets' checks (fuzz/checks.rs) on every input of their corpus (fuzz/corpus), and
//! on a few thousand deterministic mutations of it: what `fuzz/run.sh` explores for minutes,
//! `cargo test` repeats in about a second.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../fuzz/checks.rs"]
mod checks;

use std::path::Path;

/// xorshift64*: a fixed sequence, so a failure here fails the same way every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Bytes that matter to the parsers under test.
const INTERESTING: &[u8] = b"\0 \t\r\n.\"'=,:[]{}-_~+/%\\\x7f\x80\xc3\xff0129aAzZ";

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = at.min(out.len() - 1);
                out[i] = INTERESTING[rng.below(INTERESTING.len())];
            }
            1 => out.insert(at, INTERESTING[rng.below(INTERESTING.len())]),
            2 if at < out.len() => {
                let end = (at + rng.below(16)).min(out.len());
                out.drain(at..end);
            }
            3 => out.truncate(at),
            _ => {
                let from = rng.below(out.len());
                let piece: Vec<u8> = out[from..(from + rng.below(32)).min(out.len())].to_vec();
                let at = at.min(out.len());
                out.splice(at..at, piece);
            }
        }
    }
    out
}

fn replay(target: &str, check: fn(&[u8]), mutations: usize) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut corpus: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.unwrap().path()).unwrap())
        .collect();
    assert!(!corpus.is_empty(), "no corpus for {target}");
    corpus.sort();
    for input in &corpus {
        check(input);
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..mutations {
        let seed = &corpus[rng.below(corpus.len())];
        check(&mutate(&mut rng, seed));
    }
}

#[test]
fn bearer_extraction() {
    replay("bearer", checks::bearer, 20_000);
}

#[test]
fn value_token_checks() {
    replay("value_token", checks::value_token, 5_000);
}

#[test]
fn store_record_decoding() {
    replay("store_record", checks::store_record, 20_000);
}

#[test]
fn config_parsing() {
    replay("config", checks::config, 2_000);
}

#[test]
fn http1_head_decisions_agree_with_hyper() {
    replay("http1_head", checks::http1_head, 4_000);
}
