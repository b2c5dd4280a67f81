//! Arbitrary bytes through the `iter_decider.bin` path: the torch zip reader,
//! the restricted unpickler on its own, the decider loader on the bytes as an
//! archive, and the decider loader on the fixture's archive with the bytes as
//! its `data.pkl` (so mutated pickles reach the state-dict checks with real
//! storages behind them, past the zip CRCs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tah_convert::decider::parse_iter_decider;
use tah_convert::pickle::unpickle;
use tah_convert::torchzip::{crc32, TorchZip};

/// The fixture's archive entries, `data.pkl` left out (empty when the fixture
/// is not there).
fn fixture_entries() -> &'static [(String, Vec<u8>)] {
    static E: OnceLock<Vec<(String, Vec<u8>)>> = OnceLock::new();
    E.get_or_init(|| {
        let shared = std::env::var("TAH_SHARED")
            .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared").into());
        let path = format!("{shared}/fixtures/tah-tiny/iter_decider.bin");
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("unpickle: {path} missing; the wrapped-pickle mode is off");
            return Vec::new();
        };
        let zip = TorchZip::parse(&bytes).expect("fixture archive parses");
        zip.entries()
            .iter()
            .filter(|e| !e.name.ends_with("/data.pkl"))
            .map(|e| (e.name.clone(), zip.entry(&e.name).unwrap().to_vec()))
            .collect()
    })
}

/// A STORED zip of `entries` as torch writes it (without the zip64 records).
fn build_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut central = Vec::new();
    for (name, data) in entries {
        let off = out.len() as u32;
        let crc = crc32(data);
        let mut common = Vec::new();
        common.extend(0u16.to_le_bytes()); // flags
        common.extend(0u16.to_le_bytes()); // method: stored
        common.extend([0u8; 4]); // time, date
        common.extend(crc.to_le_bytes());
        common.extend((data.len() as u32).to_le_bytes());
        common.extend((data.len() as u32).to_le_bytes());
        common.extend((name.len() as u16).to_le_bytes());
        common.extend(0u16.to_le_bytes()); // extra length
        out.extend(0x0403_4b50u32.to_le_bytes());
        out.extend(20u16.to_le_bytes());
        out.extend(&common);
        out.extend(name.as_bytes());
        out.extend(*data);
        central.extend(0x0201_4b50u32.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        central.extend(20u16.to_le_bytes());
        central.extend(&common);
        central.extend([0u8; 12]); // comment len, disk, attributes
        central.extend(off.to_le_bytes());
        central.extend(name.as_bytes());
    }
    let cd_start = out.len() as u32;
    out.extend(&central);
    out.extend(0x0605_4b50u32.to_le_bytes());
    out.extend([0u8; 4]);
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((entries.len() as u16).to_le_bytes());
    out.extend((central.len() as u32).to_le_bytes());
    out.extend(cd_start.to_le_bytes());
    out.extend(0u16.to_le_bytes());
    out
}

fuzz_target!(|data: &[u8]| {
    let _ = unpickle(data);
    if let Ok(zip) = TorchZip::parse(data) {
        for e in zip.entries() {
            let _ = zip.entry(&e.name);
        }
        let _ = zip.get("data.pkl");
    }
    let _ = parse_iter_decider(data);

    let fixture = fixture_entries();
    if !fixture.is_empty() {
        let mut entries: Vec<(&str, &[u8])> = vec![("iter_decider/data.pkl", data)];
        entries.extend(fixture.iter().map(|(n, d)| (n.as_str(), d.as_slice())));
        let zip = build_zip(&entries);
        let _ = parse_iter_decider(&zip);
    }
});
