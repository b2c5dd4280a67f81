//! The soft input of a continuing token: the softmax of its top-k (cumulative)
//! logits mixing rows of the *input* embedding matrix (even when the LM head is
//! untied), `x = Σ_j softmax(v)_j · E[id_j]`, no temperature.

use crate::kernels::Matrix;

/// The `k` largest logits, descending (ties: lower id first), into `ids`/`vals`
/// (cleared first; their capacity is reused, so steady state allocates nothing).
pub fn top_k(logits: &[f32], k: usize, ids: &mut Vec<u32>, vals: &mut Vec<f32>) {
    ids.clear();
    vals.clear();
    let k = k.min(logits.len());
    if k == 0 {
        return;
    }
    // Once k values are held, most blocks hold nothing above the k-th: one
    // branch-free (vectorized) test per block skips them.
    const BLOCK: usize = 64;
    for (b, block) in logits.chunks(BLOCK).enumerate() {
        if vals.len() == k {
            let kth = vals[k - 1];
            if !block.iter().fold(false, |any, &v| any | (v > kth)) {
                continue;
            }
        }
        for (i, &v) in block.iter().enumerate() {
            if vals.len() == k && v.partial_cmp(&vals[k - 1]) != Some(std::cmp::Ordering::Greater) {
                continue; // not above the current k-th (NaN never enters)
            }
            // Insertion point after every value ≥ v keeps equal values in id order.
            let at = vals.partition_point(|&x| x >= v);
            if vals.len() == k {
                vals.pop();
                ids.pop();
            }
            vals.insert(at, v);
            ids.insert(at, (b * BLOCK + i) as u32);
        }
    }
}

/// Writes the soft input for the top-k `ids`/`vals` into `out` (dim), using `row`
/// (dim) as scratch.
pub fn soft_input(embd: &Matrix, ids: &[u32], vals: &[f32], out: &mut [f32], row: &mut [f32]) {
    let max = vals.first().copied().unwrap_or(0.0);
    let sum: f32 = vals.iter().map(|v| (v - max).exp()).sum();
    out.fill(0.0);
    for (&id, &v) in ids.iter().zip(vals) {
        let w = (v - max).exp() / sum;
        embd.dequantize_row(id as usize, row);
        for (o, e) in out.iter_mut().zip(row.iter()) {
            *o += w * e;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_is_sorted_and_stable() {
        let logits = [1.0, 5.0, 3.0, 5.0, -2.0, 4.0];
        let (mut ids, mut vals) = (Vec::new(), Vec::new());
        top_k(&logits, 4, &mut ids, &mut vals);
        assert_eq!(ids, vec![1, 3, 5, 2]);
        assert_eq!(vals, vec![5.0, 5.0, 4.0, 3.0]);
        top_k(&logits, 10, &mut ids, &mut vals);
        assert_eq!(ids, vec![1, 3, 5, 2, 0, 4]);
    }

    #[test]
    fn top_k_matches_a_full_sort_across_blocks() {
        // Long enough for many skipped blocks; repeated values and a NaN.
        let mut logits: Vec<f32> = (0..1000u32)
            .map(|i| ((i.wrapping_mul(2654435761) >> 7) % 97) as f32 - 40.0)
            .collect();
        logits[333] = f32::NAN;
        logits[998] = 100.0;
        let (mut ids, mut vals) = (Vec::new(), Vec::new());
        for k in [1, 5, 16, 100] {
            top_k(&logits, k, &mut ids, &mut vals);
            let mut want: Vec<u32> = (0..1000u32)
                .filter(|&i| !logits[i as usize].is_nan())
                .collect();
            // Descending value, ties by lower id.
            want.sort_by(|&a, &b| {
                logits[b as usize]
                    .total_cmp(&logits[a as usize])
                    .then(a.cmp(&b))
            });
            want.truncate(k);
            assert_eq!(ids, want, "k = {k}");
        }
    }
}
