//! Hostile inputs must be refused before they make the loaders allocate more
//! than the input's size justifies.
//!
//! This test binary counts every allocation (a global allocator wrapping the
//! system's). [`measure`] runs a load with a budget of `FACTOR × input length +
//! SLACK` bytes live at once; an allocation past the budget is *refused* (the
//! allocator returns null, and Rust aborts the test binary with "memory
//! allocation of N bytes failed"), so a missing guard fails the test without
//! taking the machine's memory first. Inputs that are accepted are checked the
//! same way: their peak stays within the bound too.
//!
//! Covered: GGUF (counts, array lengths, string lengths, dimensions, and the
//! model's semantic layer), the torch-pickle reader, the safetensors header
//! and the safetensors shard index.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Counts the bytes allocated by each thread (the loaders are single-threaded;
/// tests run on several threads at once, each with its own budget).
struct Counting;

thread_local! {
    static LIVE: Cell<isize> = const { Cell::new(0) };
    static PEAK: Cell<isize> = const { Cell::new(0) };
    static LIMIT: Cell<isize> = const { Cell::new(isize::MAX) };
}

/// Accounts for `n` more live bytes on this thread, unless that passes its limit.
fn reserve(n: usize) -> bool {
    let n = n as isize;
    LIVE.try_with(|live| {
        let now = live.get().saturating_add(n);
        if now > LIMIT.with(Cell::get) {
            return false;
        }
        live.set(now);
        PEAK.with(|p| p.set(p.get().max(now)));
        true
    })
    .unwrap_or(true)
}

fn release(n: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get() - n as isize));
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        if !reserve(l.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc(l);
        if p.is_null() {
            release(l.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        if !reserve(l.size()) {
            return std::ptr::null_mut();
        }
        let p = System.alloc_zeroed(l);
        if p.is_null() {
            release(l.size());
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l);
        release(l.size());
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        if new > l.size() && !reserve(new - l.size()) {
            return std::ptr::null_mut();
        }
        let q = System.realloc(p, l, new);
        if q.is_null() {
            if new > l.size() {
                release(new - l.size());
            }
        } else if new < l.size() {
            release(l.size() - new);
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Live bytes one input may add: FACTOR per input byte, plus SLACK.
const FACTOR: usize = 64;
const SLACK: usize = 4 << 20;
/// The unpickler's own budget is 8 value cells per input byte
/// (`pickle::cell_budget`), and a cell is one `Value` in an `Item` (~150 bytes:
/// the tensor variants are stored inline), so its bound is larger.
const PICKLE_FACTOR: usize = 1280;

/// Runs `f` on an input of `len` bytes with the budget on (for this thread);
/// returns its result and the peak number of bytes it added.
fn measure<T>(len: usize, f: impl FnOnce() -> T) -> (T, usize) {
    measure_with(FACTOR, len, f)
}

fn measure_with<T>(factor: usize, len: usize, f: impl FnOnce() -> T) -> (T, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    LIMIT.with(|l| l.set(base + (factor * len + SLACK) as isize));
    let r = f();
    LIMIT.with(|l| l.set(isize::MAX));
    let peak = PEAK.with(Cell::get) - base;
    (r, peak.max(0) as usize)
}

/// `f` must fail, within the budget.
fn refused<T, E: std::fmt::Display>(
    what: &str,
    len: usize,
    f: impl FnOnce() -> Result<T, E>,
) -> String {
    refused_with(FACTOR, what, len, f)
}

fn refused_with<T, E: std::fmt::Display>(
    factor: usize,
    what: &str,
    len: usize,
    f: impl FnOnce() -> Result<T, E>,
) -> String {
    let (r, peak) = measure_with(factor, len, || f().map(|_| ()).map_err(|e| e.to_string()));
    let err = r.expect_err(what);
    eprintln!("{what}: refused after a peak of {peak} bytes for {len} input bytes: {err}");
    err
}

#[test]
fn the_budget_is_enforced_by_the_allocator() {
    let (v, peak) = measure(1 << 20, || vec![1u8; 8 << 20]);
    assert!(peak >= 8 << 20, "peak {peak}");
    drop(v);
    let (_, peak) = measure(0, || ());
    assert!(peak < 1 << 16, "peak {peak}");
}

// ---- GGUF ---------------------------------------------------------------------

#[path = "common/runner.rs"]
mod runner;

mod gguf {
    use super::*;
    use tah::format::{keys, GgufFile, GgufWriter, MetaValue};
    use tah::model::Model;
    use tah::quant::GgmlType;

    fn header(n_tensors: u64, n_kv: u64) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(n_tensors.to_le_bytes());
        b.extend(n_kv.to_le_bytes());
        b
    }

    fn string(b: &mut Vec<u8>, s: &str) {
        b.extend((s.len() as u64).to_le_bytes());
        b.extend(s.as_bytes());
    }

    fn load(name: &str, bytes: Vec<u8>) -> String {
        let len = bytes.len();
        refused(name, len, move || {
            let f = GgufFile::from_bytes(name, bytes).map_err(|e| e.to_string())?;
            Model::from_file(f).map(|_| ()).map_err(|e| e.to_string())
        })
    }

    #[test]
    fn huge_counts() {
        let mut b = header(0, 1 << 40);
        b.resize(4096, 0);
        assert!(load("2^40 metadata entries", b).contains("truncated"));
        let mut b = header(1 << 40, 0);
        b.resize(4096, 0);
        assert!(load("2^40 tensors", b).contains("truncated"));
    }

    #[test]
    fn huge_array_lengths() {
        for (elem, count) in [
            (0u32, 1u64 << 40),
            (8, 1 << 36),
            (9, 1 << 33),
            (10, u64::MAX / 2),
        ] {
            let mut b = header(0, 1);
            string(&mut b, "k");
            b.extend(9u32.to_le_bytes()); // array
            b.extend(elem.to_le_bytes());
            b.extend(count.to_le_bytes());
            b.resize(b.len() + 4096, 0);
            let e = load(&format!("array of {count} elements of type {elem}"), b);
            assert!(e.contains("truncated"), "{e}");
        }
    }

    #[test]
    fn huge_string_lengths() {
        // A key, a string value, and a tensor name claiming 2^50 bytes.
        let mut b = header(0, 1);
        b.extend((1u64 << 50).to_le_bytes());
        b.resize(4096, b'k');
        assert!(load("key of 2^50 bytes", b).contains("truncated"));
        let mut b = header(0, 1);
        string(&mut b, "k");
        b.extend(8u32.to_le_bytes());
        b.extend((1u64 << 50).to_le_bytes());
        b.resize(4096, b'v');
        assert!(load("string value of 2^50 bytes", b).contains("truncated"));
        let mut b = header(1, 0);
        b.extend((1u64 << 50).to_le_bytes());
        b.resize(4096, b't');
        assert!(load("tensor name of 2^50 bytes", b).contains("truncated"));
    }

    #[test]
    fn huge_dimensions() {
        for dims in [
            vec![1u64 << 32, 1 << 32],
            vec![1 << 31, 1 << 31],
            vec![1 << 20, 1 << 20, 1 << 20],
            vec![1 << 40],
        ] {
            let mut b = header(1, 0);
            string(&mut b, "t");
            b.extend((dims.len() as u32).to_le_bytes());
            for d in &dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(0u32.to_le_bytes()); // f32
            b.extend(0u64.to_le_bytes()); // offset
            b.resize(4096, 0);
            load(&format!("tensor of dims {dims:?}"), b);
        }
    }

    /// Metadata of a small TaH model whose layer count is the largest accepted.
    fn tah_model(lora_targets: Vec<&str>, hidden_dims: Vec<u32>) -> Vec<u8> {
        let mut w = GgufWriter::new();
        let a = |s: &str| keys::arch_key("qwen3", s);
        w.set(keys::ARCHITECTURE, MetaValue::String("qwen3".into()));
        w.set(&a(keys::arch::EMBEDDING_LENGTH), MetaValue::U32(32));
        w.set(&a(keys::arch::BLOCK_COUNT), MetaValue::U32(4096));
        w.set(&a(keys::arch::FEED_FORWARD_LENGTH), MetaValue::U32(64));
        w.set(&a(keys::arch::HEAD_COUNT), MetaValue::U32(4));
        w.set(&a(keys::arch::HEAD_COUNT_KV), MetaValue::U32(2));
        w.set(&a(keys::arch::KEY_LENGTH), MetaValue::U32(8));
        w.set(&a(keys::arch::RMS_EPS), MetaValue::F32(1e-6));
        w.set(keys::MAX_ITER, MetaValue::U32(2));
        w.set(keys::INPUT_TOPK, MetaValue::U32(4));
        w.set(keys::LORA_RANK, MetaValue::U32(2));
        w.set(keys::LORA_ALPHA, MetaValue::F32(4.0));
        w.set(
            keys::LORA_TARGETS,
            MetaValue::Array(
                lora_targets
                    .iter()
                    .map(|s| MetaValue::String(s.to_string()))
                    .collect(),
            ),
        );
        w.set(keys::DECIDER_THRESHOLD, MetaValue::F32(0.5));
        w.set(keys::DECIDER_TOPK, MetaValue::U32(4));
        w.set(
            keys::DECIDER_LAYERS,
            MetaValue::Array(vec![MetaValue::U32(1)].into()),
        );
        w.set(
            keys::DECIDER_HIDDEN_DIMS,
            MetaValue::Array(hidden_dims.into_iter().map(MetaValue::U32).collect()),
        );
        w.set(keys::DECIDER_EXPANSION, MetaValue::U32(1));
        w.add_tensor(keys::TOKEN_EMBD, &[32, 100], GgmlType::F32)
            .unwrap();
        let mut sink = w.begin(Vec::new()).unwrap();
        sink.write_tensor(&vec![0u8; 32 * 100 * 4]).unwrap();
        sink.finish().unwrap()
    }

    /// The semantic layer lists every tensor a configuration needs: a short
    /// file must not be able to make that list huge.
    #[test]
    fn repeated_lora_targets() {
        let b = tah_model(vec!["attn_q"; 5000], vec![16]);
        let e = load("5000 copies of one LoRA target over 4096 layers", b);
        assert!(e.contains("tah.lora.targets"), "{e}");
    }

    #[test]
    fn long_decider_hidden_dims() {
        let b = tah_model(vec!["attn_q"], vec![1; 200_000]);
        let e = load("200,000 decider blocks", b);
        assert!(e.contains("tah.decider.hidden_dims"), "{e}");
    }

    #[test]
    fn layer_count_beyond_the_tensor_table() {
        let b = tah_model(vec!["attn_q"], vec![16]);
        let len = b.len();
        let (r, peak) = measure(len, || {
            let f = GgufFile::from_bytes("ok.tah", b).unwrap();
            Model::from_file(f).map(|_| ()).map_err(|e| e.to_string())
        });
        // A layer count the tensor table cannot back is refused before the
        // 4096 layers' tensor names are listed (megabytes from a 14 KB file).
        let e = r.unwrap_err();
        assert!(e.contains("block_count"), "{e}");
        eprintln!("4096-layer model: {e}; peak {peak} bytes for {len} bytes");
    }

    /// Elements in the big metadata array of the tests below (64 Mi).
    const BIG: u64 = 64 << 20;

    /// A GGUF file with an architecture key and one array of `BIG` u8 elements
    /// (written by hand: the writer would need the array in memory).
    fn big_array_file() -> Vec<u8> {
        let mut b = header(0, 2);
        string(&mut b, keys::ARCHITECTURE);
        b.extend(8u32.to_le_bytes());
        string(&mut b, "qwen3");
        string(&mut b, "test.big");
        b.extend(9u32.to_le_bytes()); // array
        b.extend(0u32.to_le_bytes()); // of u8
        b.extend(BIG.to_le_bytes());
        b.resize(b.len() + BIG as usize, 7);
        b
    }

    /// A metadata array is a view into the file: reading it, and describing the
    /// file as `tah info` does, allocates a few KB, not 32 bytes per element.
    #[test]
    fn big_metadata_array_is_not_copied() {
        let b = big_array_file();
        let len = b.len();
        let (info, peak) = measure(len, || {
            let f = GgufFile::from_bytes("big.gguf", b).unwrap();
            let a = f.get("test.big").and_then(|v| v.as_array()).unwrap();
            assert_eq!((a.len() as u64, a.elem_type()), (BIG, 0));
            assert_eq!(a.get(BIG as usize - 1), Some(MetaValue::U8(7)));
            assert_eq!(a.get(BIG as usize), None);
            tah::app::info::render(&tah::app::info::describe(&f))
        });
        assert!(info.contains("architecture:  qwen3"), "{info}");
        eprintln!("{BIG}-element u8 array: peak {peak} heap bytes for {len} bytes");
        assert!(peak < 1 << 20, "peak {peak} heap bytes");
    }

    /// Peak resident memory (VmHWM) of a fresh process that maps the file with
    /// `GgufFile::open` and describes it as `tah info` does: at most 1.5× the
    /// file plus 48 MiB for the test binary itself. (Before the arrays became
    /// views this was 2.1 GB for this 64 MiB file.) The child is this test
    /// binary, run again on this one test with `TAH_RSS_CHILD` naming the file.
    #[test]
    fn big_metadata_array_peak_rss() {
        if let Ok(path) = std::env::var("TAH_RSS_CHILD") {
            let f = GgufFile::open(&path).unwrap();
            let text = tah::app::info::render(&tah::app::info::describe(&f));
            assert!(text.contains("qwen3"));
            let status = std::fs::read_to_string("/proc/self/status").unwrap();
            let hwm = status
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .expect("VmHWM in /proc/self/status");
            println!("VMHWM_KB {}", hwm.trim().trim_end_matches("kB").trim());
            return;
        }
        if !std::path::Path::new("/proc/self/status").exists() {
            eprintln!("no /proc: peak RSS not measured");
            return;
        }
        // Under an emulator (qemu-user: the cross-built suite) the process's
        // RSS is the emulator's; the native suite measures this.
        if super::runner::runner().is_some() {
            eprintln!("skipping under TAH_TEST_RUNNER: the emulator's RSS is not the engine's");
            return;
        }
        let path = std::env::temp_dir().join(format!("tah-big-array-{}.gguf", std::process::id()));
        let bytes = big_array_file();
        std::fs::write(&path, &bytes).unwrap();
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "gguf::big_metadata_array_peak_rss",
                "--nocapture",
            ])
            .env("TAH_RSS_CHILD", &path)
            .output()
            .unwrap();
        let _ = std::fs::remove_file(&path);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kb: u64 = stdout
            .lines()
            .find_map(|l| l.strip_prefix("VMHWM_KB "))
            .unwrap_or_else(|| panic!("no VmHWM from the child: {stdout}"))
            .parse()
            .unwrap();
        let limit = bytes.len() as u64 * 3 / 2 + (48 << 20);
        eprintln!(
            "{BIG}-element u8 array: peak RSS {kb} KiB for a {} byte file (limit {} KiB)",
            bytes.len(),
            limit >> 10
        );
        assert!(kb << 10 < limit, "peak RSS {kb} KiB");
    }
}

// ---- torch pickle -------------------------------------------------------------

mod pickle {
    use super::*;
    use tah_convert::pickle::unpickle;

    #[test]
    fn huge_string_length() {
        let mut p = vec![0x80, 2, 0x8d];
        p.extend((1u64 << 62).to_le_bytes());
        p.resize(4096, b'a');
        let e = refused_with(PICKLE_FACTOR, "BINUNICODE8 of 2^62 bytes", p.len(), || {
            unpickle(&p)
        });
        assert!(e.contains("truncated"), "{e}");
        let mut p = vec![0x80, 2, b'X'];
        p.extend(u32::MAX.to_le_bytes());
        p.resize(4096, b'a');
        refused_with(PICKLE_FACTOR, "BINUNICODE of 4 GiB", p.len(), || {
            unpickle(&p)
        });
        let mut p = vec![0x80, 4, 0x95];
        p.extend((1u64 << 62).to_le_bytes());
        p.resize(4096, b'N');
        refused_with(PICKLE_FACTOR, "FRAME of 2^62 bytes", p.len(), || {
            unpickle(&p)
        });
    }

    /// "Billion laughs": a tuple of the memoized value twice, memoized again,
    /// 60 times: 2^60 values from under 400 bytes.
    #[test]
    fn memo_doubling() {
        let mut p = vec![0x80, 2, 0x8c, 8];
        p.extend(b"laughing");
        p.extend([b'q', 0]);
        for _ in 0..60 {
            p.extend([b'h', 0, b'h', 0, 0x86, b'q', 0]);
        }
        p.push(b'.');
        let e = refused_with(
            PICKLE_FACTOR,
            "2^60 copies through the memo",
            p.len(),
            || unpickle(&p),
        );
        assert!(e.contains("value cells"), "{e}");
    }

    /// Long but legal streams: one new value, mark or memo entry per opcode.
    #[test]
    fn long_streams_within_bound() {
        let n = 1 << 18;
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b']', n)); // EMPTY_LIST on the stack, n times
        cases.push(("a stack of empty lists", p));
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', n)); // MARK
        cases.push(("a stack of marks", p));
        let mut p = vec![0x80, 2, b'N'];
        for i in 0..n as u32 {
            p.push(b'r'); // LONG_BINPUT i
            p.extend(i.to_le_bytes());
        }
        cases.push(("a memo entry per opcode", p));
        let mut p = vec![0x80, 2, 0x8c, 64];
        p.extend([b's'; 64]);
        p.extend([b'q', 0]);
        for _ in 0..n / 2 {
            p.extend([b'h', 0]); // a 64-byte string, copied per 2-byte opcode
        }
        cases.push(("copies of a memoized string", p));
        let mut p = vec![0x80, 2, b'('];
        p.extend(std::iter::repeat_n(b'N', 15));
        p.extend([b't', b'q', 0]);
        for _ in 0..n / 2 {
            p.extend([b'h', 0]); // a 16-cell tuple, copied per 2-byte opcode
        }
        cases.push((
            "copies of a memoized tuple (the cell budget's worst case)",
            p,
        ));
        for (what, p) in cases {
            let (r, peak) = measure_with(PICKLE_FACTOR, p.len(), || unpickle(&p).map(|_| ()));
            eprintln!(
                "{what}: {} after a peak of {peak} bytes for {} bytes",
                if r.is_ok() { "accepted" } else { "refused" },
                p.len()
            );
        }
    }
}

// ---- safetensors --------------------------------------------------------------

mod safetensors_in {
    use super::*;
    use std::path::Path;
    use tah_convert::safetensors_in::{parse_shard_index, Safetensors};

    #[test]
    fn huge_header_length() {
        for n in [1u64 << 40, u64::MAX, 99 << 20] {
            let mut b = n.to_le_bytes().to_vec();
            b.resize(4096, b' ');
            refused(&format!("header of {n} bytes"), b.len(), || {
                Safetensors::from_bytes("x.safetensors", b.clone())
            });
        }
    }

    #[test]
    fn huge_shapes() {
        for shape in [
            "[1099511627776, 1099511627776]",
            "[18446744073709551615]",
            "[4294967296, 4294967296, 4294967296]",
        ] {
            let h = format!(
                "{{\"t\":{{\"dtype\":\"F32\",\"shape\":{shape},\"data_offsets\":[0,16]}}}}"
            );
            let mut b = (h.len() as u64).to_le_bytes().to_vec();
            b.extend(h.as_bytes());
            b.extend([0u8; 16]);
            refused(&format!("tensor of shape {shape}"), b.len(), || {
                Safetensors::from_bytes("x.safetensors", b.clone())
            });
        }
    }

    /// An index naming many distinct shards is read in bounded memory and
    /// time (the shard list is built with a set, not a linear search per entry).
    #[test]
    fn index_with_many_shards() {
        let n = 200_000;
        let mut s = String::from("{\"metadata\":{},\"weight_map\":{");
        for i in 0..n {
            if i > 0 {
                s.push(',');
            }
            s.push_str(&format!("\"t{i}\":\"s{i}.safetensors\""));
        }
        s.push_str("}}");
        let start = std::time::Instant::now();
        let (r, peak) = measure(s.len(), || {
            parse_shard_index(Path::new("index.json"), s.as_bytes())
        });
        let files = r.unwrap();
        assert_eq!(files.len(), n);
        eprintln!(
            "index of {n} shards ({} bytes): peak {peak} bytes, {:?}",
            s.len(),
            start.elapsed()
        );
        assert!(start.elapsed().as_secs() < 20, "took {:?}", start.elapsed());
    }

    #[test]
    fn index_nesting_and_bad_entries() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        refused("index nested 100,000 deep", deep.len(), || {
            parse_shard_index(Path::new("i.json"), deep.as_bytes())
        });
        let bad = br#"{"weight_map":{"a":"../../etc/passwd"}}"#;
        let e = refused("index naming a path", bad.len(), || {
            parse_shard_index(Path::new("i.json"), bad)
        });
        assert!(e.contains("not a plain file name"), "{e}");
    }
}
