//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and any
//! committed crash inputs (`fuzz/artifacts/<target>/`) through the same
//! decoder calls the cargo-fuzz targets make (`fuzz/common/decoders.rs`):
//! none may panic, and what decodes must round-trip.
//!
//! Fuzzing itself needs cargo-fuzz; see `docs/reliability.md`. Setting
//! `SHELLFLIP_WRITE_SEEDS=1` makes `seeds_decode_and_round_trip` (re)write
//! the seed inputs into `fuzz/corpus/<target>/seed-*`.

#[path = "../fuzz/common/decoders.rs"]
mod decoders;

use std::path::{Path, PathBuf};
use std::time::Instant;

use decoders::{FuzzState, TARGETS};
use shellflip::state::{self, StateFds};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none if it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .map(|e| e.expect("read a corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `decode` on `input`, turning a panic into a message naming `what`.
fn replay(decode: decoders::Target, what: &str, input: &[u8]) -> Result<(), String> {
    std::panic::catch_unwind(|| decode(input)).map_err(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(non-string panic)");
        format!("{what} ({} bytes): {message}", input.len())
    })
}

#[test]
fn committed_corpus_replays_without_panics() {
    let started = Instant::now();
    let mut failures = Vec::new();
    for (target, decode) in TARGETS {
        let corpus = files(&fuzz_dir().join("corpus").join(target));
        assert!(
            corpus.len() >= decoders::seeds(target).len(),
            "the corpus of {target} has only {} files; regenerate the seeds with \
             SHELLFLIP_WRITE_SEEDS=1 cargo test --test fuzz_corpus",
            corpus.len()
        );
        let artifacts = files(&fuzz_dir().join("artifacts").join(target));
        for path in corpus.iter().chain(&artifacts) {
            let input = std::fs::read(path).expect("read a corpus file");
            if let Err(failure) = replay(*decode, &path.display().to_string(), &input) {
                failures.push(failure);
            }
        }
        eprintln!(
            "{target}: {} corpus files, {} artifacts replayed",
            corpus.len(),
            artifacts.len()
        );
    }
    assert!(failures.is_empty(), "{failures:#?}");
    eprintln!("replayed in {:?}", started.elapsed());
}

#[test]
fn seeds_decode_and_round_trip() {
    let write = std::env::var_os("SHELLFLIP_WRITE_SEEDS").is_some_and(|v| v == "1");
    for (target, decode) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        for (name, input) in decoders::seeds(target) {
            replay(*decode, &name, &input).unwrap();
            if write {
                std::fs::create_dir_all(&dir).unwrap();
                std::fs::write(dir.join(format!("seed-{name}")), &input).unwrap();
            }
        }
    }
}

#[test]
fn the_sample_state_survives_an_envelope_round_trip() {
    let sample = decoders::sample_state();
    let mut fds = StateFds::default();
    let bytes = state::encode_envelope(&sample, &mut fds).unwrap();
    let back: FuzzState = state::decode_envelope(&bytes, &mut fds).unwrap();
    // The skipped field is not carried.
    let expected = FuzzState {
        cache: Vec::new(),
        ..sample
    };
    assert_eq!(back, expected);
}

/// Every truncation and every single-byte corruption of the valid seeds:
/// a small deterministic sweep that runs even where cargo-fuzz does not.
#[test]
fn truncations_and_byte_flips_of_the_seeds_do_not_panic() {
    let mut failures = Vec::new();
    for (target, decode) in TARGETS {
        for (name, input) in decoders::seeds(target) {
            for len in 0..input.len() {
                if let Err(f) = replay(*decode, &format!("{name} cut to {len}"), &input[..len]) {
                    failures.push(f);
                }
            }
            for i in 0..input.len() {
                for flip in [0x01u8, 0x80, 0xff] {
                    let mut mutated = input.clone();
                    mutated[i] ^= flip;
                    let what = format!("{name} byte {i} ^ {flip:#04x}");
                    if let Err(f) = replay(*decode, &what, &mutated) {
                        failures.push(f);
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A `FuzzState` envelope whose payload is `{"x": [[[...nil...]]]}`,
/// nested `depth` arrays deep in a field that `FuzzState` does not have.
fn nested_state(depth: usize) -> Vec<u8> {
    let mut payload = vec![0x81, 0xa1, b'x']; // map of 1, key "x"
    payload.extend(std::iter::repeat_n(0x91, depth)); // array of 1
    payload.push(0xc0); // nil
    decoders::envelope_with_payload(&payload)
}

/// Runs `f` on a thread with a stack of `size` bytes.
fn on_stack(size: usize, f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(size)
        .spawn(f)
        .unwrap()
        .join()
        .expect("the decoder panicked");
}

/// Inputs longer than the fuzzer's 4 KiB limit: nesting 100,000 levels
/// deep (MessagePack arrays in an unknown field of the state, JSON arrays
/// in a request) is refused (the state decoder stops at
/// `MAX_STATE_DEPTH` = 128, serde_json at 128), on an 8 MiB stack like the
/// main thread's, where the runtime decodes the state.
#[test]
fn deeply_nested_inputs_are_refused() {
    on_stack(8 << 20, || {
        let envelope = nested_state(100_000);
        let error = state::decode_envelope::<FuzzState>(&envelope, &mut StateFds::default())
            .expect_err("100,000 levels of nesting");
        assert!(error.to_string().contains("depth limit"), "{error}");
        decoders::state_envelope(&envelope);

        let mut json = br#"{"op":"status","x":"#.to_vec();
        json.extend(std::iter::repeat_n(b'[', 100_000));
        let error = shellflip::control::decode_request(&json).unwrap_err();
        assert!(error.to_string().contains("recursion limit"), "{error}");
        assert!(shellflip::control::decode_response(&json).is_err());
        let frame = shellflip_control::frame::encode_frame(
            &json[..60_000],
            shellflip::control::MAX_FRAME_BYTES,
        )
        .unwrap();
        decoders::control_frame(&frame);
    });
}

/// Finding, fixed (see docs/reliability.md): rmp-serde allowed 1024 levels
/// of nesting, and skipping an unknown field nested 1000 deep took more than
/// 2 MiB of stack in a debug build. The state decoder stops at
/// `MAX_STATE_DEPTH` (128), and skips unknown values without recursion.
/// This aborts the test binary if it regresses.
#[test]
fn state_nested_1000_deep_fits_a_2_mib_stack() {
    on_stack(2 << 20, || {
        let envelope = nested_state(1000);
        assert!(state::decode_envelope::<FuzzState>(&envelope, &mut StateFds::default()).is_err());
    });
}
