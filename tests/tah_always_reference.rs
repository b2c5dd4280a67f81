//! `--think always` against a reference derived from the fixture's own semantics:
//! a plain f64 re-implementation of docs/TAH_SEMANTICS.md §3–4 written the way the reference
//! notes state it — dense matrices, an explicit duo-causal mask over
//! [depth-1 keys | depth-2 keys], HF's rotate-half RoPE — sharing no code with
//! the engine's forward pass. With every token at depth 2, every mask entry of
//! the depth-2 pass matters. Its depth-1 half is itself checked against the
//! reference implementation's `prefill_depth1_logits`.

mod common;
use common::*;
use tah::format::{keys, GgufFile};
use tah::model::kv_cache::KvType;
use tah::session::{Session, SessionOptions};
use tah::tah::{TahOptions, ThinkMode};

struct W<'a>(&'a GgufFile);

impl W<'_> {
    /// A tensor as f64, row-major.
    fn t(&self, name: &str) -> Vec<f64> {
        let t = self.0.tensor(name).unwrap_or_else(|| panic!("{name}"));
        self.0.tensor_f32(t).into_iter().map(|x| x as f64).collect()
    }
}

/// y (n × out) = x (n × in) · Wᵀ, W (out × in).
fn mm(x: &[f64], w: &[f64], n_in: usize) -> Vec<f64> {
    let n_out = w.len() / n_in;
    let n = x.len() / n_in;
    let mut y = vec![0.0; n * n_out];
    for i in 0..n {
        for o in 0..n_out {
            y[i * n_out + o] = (0..n_in).map(|k| x[i * n_in + k] * w[o * n_in + k]).sum();
        }
    }
    y
}

fn rms(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|r| {
            let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
            r.iter()
                .zip(w)
                .map(move |(v, g)| g * v * inv)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// HF rotate-half RoPE of one head vector at position p.
fn rope(v: &mut [f64], p: usize, theta: f64) {
    let hd = v.len();
    for i in 0..hd / 2 {
        let ang = p as f64 * theta.powf(-(2.0 * i as f64) / hd as f64);
        let (s, c) = ang.sin_cos();
        let (a, b) = (v[i], v[i + hd / 2]);
        v[i] = a * c - b * s;
        v[i + hd / 2] = b * c + a * s;
    }
}

struct Pass {
    logits: Vec<f64>,
    /// Per layer: (K, V) rows (T × kv_dim), post-RoPE.
    kv: Vec<(Vec<f64>, Vec<f64>)>,
}

/// One pass over all T tokens. `lora`: depth ≥ 2. `prev`: the depth-1 keys that a
/// depth-2 query also sees (mask: key position ≤ query position, both depths).
fn pass(w: &W, x0: Vec<f64>, lora: bool, prev: Option<&Pass>) -> Pass {
    let (h, l_n, nh, nkv, hd, ff, v_n, eps, theta) = (64, 4, 4, 2, 16, 128, 512, 1e-6, 1e6);
    let t = x0.len() / h;
    let scale = 2.0; // alpha / r = 8 / 4
    let lin = |x: &[f64], l: usize, stem: &str, n_in: usize| -> Vec<f64> {
        let mut y = mm(x, &w.t(&keys::blk(l, stem, "weight")), n_in);
        if lora {
            let a = mm(x, &w.t(&keys::lora_a(l, stem)), n_in);
            let b = mm(&a, &w.t(&keys::lora_b(l, stem)), 4);
            for (o, d) in y.iter_mut().zip(b) {
                *o += scale * d;
            }
        }
        y
    };
    let mut x = x0;
    let mut kv_out = Vec::new();
    for l in 0..l_n {
        let xn = rms(&x, &w.t(&keys::blk(l, "attn_norm", "weight")), eps);
        let (qn, kn) = (
            w.t(&keys::blk(l, "attn_q_norm", "weight")),
            w.t(&keys::blk(l, "attn_k_norm", "weight")),
        );
        let mut q = rms(&lin(&xn, l, "attn_q", h), &qn, eps);
        let mut k = rms(&lin(&xn, l, "attn_k", h), &kn, eps);
        let v = lin(&xn, l, "attn_v", h);
        for i in 0..t {
            for hh in 0..nh {
                rope(&mut q[i * nh * hd + hh * hd..][..hd], i, theta);
            }
            for hh in 0..nkv {
                rope(&mut k[i * nkv * hd + hh * hd..][..hd], i, theta);
            }
        }
        // Keys visible to the query at position i: [depth-1 keys | this pass's keys].
        let mut att = vec![0.0; t * nh * hd];
        for i in 0..t {
            for hh in 0..nh {
                let g = hh / (nh / nkv);
                let qv = &q[i * nh * hd + hh * hd..][..hd];
                // (score, value row) of every visible key.
                let push = |kk: &[f64], vv: &[f64], j: usize, all: &mut Vec<(f64, Vec<f64>)>| {
                    let kr = &kk[j * nkv * hd + g * hd..][..hd];
                    let s: f64 =
                        qv.iter().zip(kr).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt();
                    all.push((s, vv[j * nkv * hd + g * hd..][..hd].to_vec()));
                };
                let mut all: Vec<(f64, Vec<f64>)> = Vec::new();
                for j in 0..t {
                    if let Some(p) = prev {
                        if j <= i {
                            push(&p.kv[l].0, &p.kv[l].1, j, &mut all);
                        }
                    }
                    if j <= i {
                        push(&k, &v, j, &mut all);
                    }
                }
                let m = all
                    .iter()
                    .map(|(s, _)| *s)
                    .fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = all.iter().map(|(s, _)| (s - m).exp()).sum();
                for (s, vv) in &all {
                    for d in 0..hd {
                        att[i * nh * hd + hh * hd + d] += (s - m).exp() / z * vv[d];
                    }
                }
            }
        }
        let o = lin(&att, l, "attn_output", nh * hd);
        for (a, b) in x.iter_mut().zip(o) {
            *a += b;
        }
        let xn = rms(&x, &w.t(&keys::blk(l, "ffn_norm", "weight")), eps);
        let gate = lin(&xn, l, "ffn_gate", h);
        let up = lin(&xn, l, "ffn_up", h);
        let act: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        let down = lin(&act, l, "ffn_down", ff);
        for (a, b) in x.iter_mut().zip(down) {
            *a += b;
        }
        kv_out.push((k, v));
    }
    let xn = rms(&x, &w.t(keys::OUTPUT_NORM), eps);
    let logits = mm(&xn, &w.t(keys::TOKEN_EMBD), h);
    assert_eq!(logits.len(), t * v_n);
    Pass { logits, kv: kv_out }
}

#[test]
fn think_always_matches_a_dense_mask_reference() {
    let r = Reference::load();
    let ids: Vec<u32> = r
        .i64("prefill_input_ids")
        .iter()
        .map(|&t| t as u32)
        .collect();
    let f = GgufFile::open(fixture_tah()).unwrap();
    let w = W(&f);
    let (h, v_n) = (64, 512);
    let e = w.t(keys::TOKEN_EMBD);

    let x0: Vec<f64> = ids
        .iter()
        .flat_map(|&t| e[t as usize * h..(t as usize + 1) * h].to_vec())
        .collect();
    let p1 = pass(&w, x0, false, None);
    // The depth-1 half against the reference implementation itself.
    let (_, d1) = r.f32("prefill_depth1_logits");
    let d1_err = p1
        .logits
        .iter()
        .zip(&d1)
        .map(|(a, b)| (a - *b as f64).abs())
        .fold(0.0, f64::max);
    assert!(
        d1_err < 5e-4,
        "dense reference depth 1 vs reference implementation: {d1_err}"
    );

    // Soft inputs from the top-16 depth-1 logits of every token.
    let mut x2 = Vec::new();
    for row in p1.logits.chunks(v_n) {
        let mut idx: Vec<usize> = (0..v_n).collect();
        idx.sort_by(|&a, &b| row[b].partial_cmp(&row[a]).unwrap());
        let top = &idx[..16];
        let m = row[top[0]];
        let z: f64 = top.iter().map(|&j| (row[j] - m).exp()).sum();
        let mut x = vec![0.0; h];
        for &j in top {
            for d in 0..h {
                x[d] += (row[j] - m).exp() / z * e[j * h + d];
            }
        }
        x2.extend(x);
    }
    let p2 = pass(&w, x2, true, Some(&p1));
    let want: Vec<f32> = p1
        .logits
        .iter()
        .zip(&p2.logits)
        .map(|(a, b)| (a + b) as f32)
        .collect();

    for batch in [64, 7] {
        let model = load(&fixture_tah());
        let opts = SessionOptions {
            ctx: 64,
            kv_type: KvType::F32,
            batch,
            tah: TahOptions {
                mode: ThinkMode::Always,
                ..Default::default()
            },
        };
        let mut s = Session::new(model, &opts).unwrap();
        let mut got = Vec::new();
        let mut cb = |_: usize, row: &[f32], info: tah::tah::TokenInfo| {
            assert_eq!(info.depth, 2);
            got.extend_from_slice(row);
        };
        s.feed(&ids, Some(&mut cb)).unwrap();
        let err = max_abs_diff(&got, &want);
        eprintln!("think always (batch {batch}) vs dense f64 reference: max |Δ| = {err:e}");
        assert!(err < 5e-4, "batch {batch}: {err}");
    }
}
