//! A bounded, in-process fuzz run of the untrusted-input parsers for CI:
//! the same property checks as the libFuzzer targets (`fuzz/src/lib.rs`), fed
//! by a seeded mutator over the seed corpus (`fuzz/seeds/`). No sanitizer
//! build, so it costs seconds to build; `make fuzz` runs the deep libFuzzer
//! campaign. `FUZZ_SMOKE_SECS` sets the time per target (default 20; 5 for
//! the PROXY header parser, whose whole input space is a few hundred bytes).

#[path = "../fuzz/src/lib.rs"]
mod checks;

use std::path::Path;
use std::time::{Duration, Instant};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\r\n",
    b"\r\n\r\n",
    b"\n\n",
    b":",
    b",",
    b"%",
    b"..",
    b"/",
    b"?",
    b"&",
    b"=",
    b"Upgrade: websocket\r\n",
    b"Connection: Upgrade\r\n",
    b"Sec-WebSocket-Version: 13\r\n",
    b"Content-Length: ",
    b"Transfer-Encoding: chunked\r\n",
    b"\x00",
    b"\xff",
    b"\x7f",
    b"\x80\x7f\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\x88\x80",
    b"\x89\xfe",
];

/// Tokens of the PROXY protocol header, for its target only.
const PROXY_TOKENS: &[&[u8]] = &[
    b"PROXY ",
    b"TCP4 ",
    b"TCP6 ",
    b"UNKNOWN",
    b" ",
    b"\r\n",
    b"\r",
    b"\n",
    b"255.255.255.255",
    b"0",
    b"00",
    b"65535",
    b"65536",
    b"::ffff:",
    b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    b"\r\n\r\n\x00\r\nQUIT\n",
    b"\x20\x00",
    b"\x21\x11\x00\x0c",
    b"\x21\x21\x00\x24",
    b"\x21\x31\x00\xd8",
    b"\xff\xff",
    b"\x02\x00\x0a",
    b"\x03\x00\x04",
    b"\x04\x00\x00",
];

fn mutate(rng: &mut Rng, input: &[u8], corpus: &[Vec<u8>], tokens: &[&[u8]]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(7) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(v.len() + 1);
                let ins = tokens[rng.below(tokens.len())];
                v.splice(i..i, ins.iter().copied());
            }
            3 if !v.is_empty() => {
                let a = rng.below(v.len());
                let b = (a + rng.below(64)).min(v.len());
                v.drain(a..b);
            }
            4 if !v.is_empty() => v.truncate(rng.below(v.len())),
            5 => {
                let other = &corpus[rng.below(corpus.len())];
                let cut = rng.below(other.len() + 1);
                v.extend_from_slice(&other[cut..]);
            }
            _ if !v.is_empty() => {
                let a = rng.below(v.len());
                let b = (a + rng.below(32)).min(v.len());
                let chunk = v[a..b].to_vec();
                v.splice(a..a, chunk);
            }
            _ => v.push(rng.next() as u8),
        }
    }
    v.truncate(16 * 1024);
    v
}

fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut out: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .collect();
    out.push(Vec::new());
    out
}

fn run(target: &str, check: fn(&[u8]), tokens: &[&[u8]], default_secs: u64) {
    let secs: u64 = std::env::var("FUZZ_SMOKE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default_secs);
    let mut corpus = seeds(target);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d ^ secs);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut runs = 0u64;
    while Instant::now() < deadline {
        for _ in 0..256 {
            let base = &corpus[rng.below(corpus.len())];
            let input = mutate(&mut rng, base, &corpus, tokens);
            let result = std::panic::catch_unwind(|| check(&input));
            if result.is_err() {
                panic!(
                    "{target}: input {:?} broke a check",
                    String::from_utf8_lossy(&input)
                );
            }
            runs += 1;
            // Keep some mutants as new bases so that mutations compound.
            if rng.below(64) == 0 && corpus.len() < 4096 {
                corpus.push(input);
            }
        }
    }
    eprintln!("fuzz smoke {target}: {runs} inputs in {secs} s, no failures");
}

#[test]
fn request_head_parser() {
    run("head", checks::head, INTERESTING, 20);
}

#[test]
fn client_frame_reader() {
    run("frames", checks::frames, INTERESTING, 20);
}

#[test]
fn proxy_header_parser() {
    run("proxy", checks::proxy, PROXY_TOKENS, 5);
}

/// Mutated seeds and the structured generator: the server's framer acts on
/// the requests a strict reference parser sees, and on no others.
#[test]
fn http_request_sequence() {
    run(
        "http_sequence",
        checks::http_sequence::check,
        INTERESTING,
        15,
    );
    let mut g = checks::http_sequence::Gen(0x51_7cc1_b727_220a);
    for _ in 0..50_000 {
        let input = checks::http_sequence::generate(&mut g);
        checks::http_sequence::check(&input);
    }
}
