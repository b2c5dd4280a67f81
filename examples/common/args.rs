//! Argument helpers shared by the kernel benchmarks.

use tah::quant::GgmlType;

/// `a,b,c` weight type names, or `default` when absent.
pub fn types(arg: Option<&String>, default: &str) -> Vec<GgmlType> {
    arg.map_or(default, |s| s.as_str())
        .split(',')
        .map(|s| GgmlType::from_name(s).expect("type"))
        .collect()
}

/// `ROWSxCOLS` arguments, or `default` when there are none.
pub fn shapes(args: &[String], default: &[(usize, usize)]) -> Vec<(usize, usize)> {
    if args.is_empty() {
        return default.to_vec();
    }
    args.iter()
        .map(|s| {
            let (r, c) = s.split_once('x').expect("ROWSxCOLS");
            (r.parse().expect("ROWS"), c.parse().expect("COLS"))
        })
        .collect()
}
