//! A minimal reader for the zip archives written by `torch.save`.
//!
//! torch writes every entry STORED (uncompressed), with a data descriptor
//! (so the local header's sizes are zero and the central directory is the
//! truth), zip64 end-of-central-directory records, and zip64 extra fields for
//! entries of 4 GiB or more. This reader only needs those features. The input
//! is untrusted: every offset and size is checked against the buffer before
//! use, and nothing is allocated from a claimed size that was not checked
//! against the buffer length first.

use std::collections::HashMap;
use std::fmt;

const SIG_LOCAL: u32 = 0x0403_4b50;
const SIG_CENTRAL: u32 = 0x0201_4b50;
const SIG_EOCD: u32 = 0x0605_4b50;
const SIG_ZIP64_EOCD: u32 = 0x0606_4b50;
const SIG_ZIP64_LOCATOR: u32 = 0x0706_4b50;

const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_LEN: usize = 20;
const ZIP64_EOCD_LEN: usize = 56;
const CENTRAL_LEN: usize = 46;
const LOCAL_LEN: usize = 30;
const ZIP64_EXTRA_ID: u16 = 0x0001;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ZipError {
    /// No end-of-central-directory record in the last 64 KiB + 22 bytes.
    NoEndOfCentralDirectory,
    /// A zip64 record was announced but is missing or malformed.
    BadZip64(String),
    /// Multi-disk archives are not something torch writes.
    MultiDisk,
    /// The central directory lies (partly) outside the file.
    CentralDirectoryOutOfBounds {
        offset: u64,
        size: u64,
        file_len: usize,
    },
    /// The central directory ended before all its entries were read.
    TruncatedCentralDirectory {
        entry_index: usize,
        entries: u64,
    },
    /// A central directory header did not start with its signature.
    BadCentralSignature {
        entry_index: usize,
        offset: usize,
    },
    /// Claimed entry count cannot fit in the central directory size.
    TooManyEntries {
        entries: u64,
        cd_size: u64,
    },
    NameNotUtf8 {
        entry_index: usize,
    },
    DuplicateEntry(String),
    Encrypted(String),
    /// Only STORED (method 0) entries are supported.
    Compressed {
        name: String,
        method: u16,
    },
    /// Stored entries must have compressed size == uncompressed size.
    SizeMismatch {
        name: String,
        compressed: u64,
        uncompressed: u64,
    },
    /// A zip64 extra field was needed for a value but was absent or short.
    MissingZip64Field {
        name: String,
        field: &'static str,
    },
    BadLocalHeader {
        name: String,
        offset: u64,
    },
    /// The entry's local header or data lies past the end of the file.
    EntryOutOfBounds {
        name: String,
        offset: u64,
        size: u64,
        file_len: usize,
    },
    CrcMismatch {
        name: String,
        expected: u32,
        actual: u32,
    },
    Empty,
    /// torch names every entry `<root>/...`; the first entry had no `/`.
    NoRootPrefix(String),
    OutsideRoot {
        name: String,
        prefix: String,
    },
    MissingEntry(String),
}

impl fmt::Display for ZipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ZipError::*;
        match self {
            NoEndOfCentralDirectory => {
                write!(f, "not a zip archive: no end-of-central-directory record found")
            }
            BadZip64(why) => write!(f, "bad zip64 end of central directory: {why}"),
            MultiDisk => write!(f, "multi-disk zip archives are not supported"),
            CentralDirectoryOutOfBounds { offset, size, file_len } => write!(
                f,
                "central directory (offset {offset}, size {size}) lies outside the file ({file_len} bytes)"
            ),
            TruncatedCentralDirectory { entry_index, entries } => write!(
                f,
                "central directory is truncated at entry {entry_index} of {entries}"
            ),
            BadCentralSignature { entry_index, offset } => write!(
                f,
                "central directory entry {entry_index} at offset {offset} has a bad signature"
            ),
            TooManyEntries { entries, cd_size } => write!(
                f,
                "central directory claims {entries} entries but is only {cd_size} bytes"
            ),
            NameNotUtf8 { entry_index } => {
                write!(f, "zip entry {entry_index} has a name that is not UTF-8")
            }
            DuplicateEntry(name) => write!(f, "zip entry '{name}' appears twice"),
            Encrypted(name) => write!(f, "zip entry '{name}' is encrypted"),
            Compressed { name, method } => write!(
                f,
                "zip entry '{name}' is compressed (method {method}); torch.save archives store entries uncompressed, only method 0 (stored) is supported"
            ),
            SizeMismatch { name, compressed, uncompressed } => write!(
                f,
                "stored zip entry '{name}' has compressed size {compressed} != uncompressed size {uncompressed}"
            ),
            MissingZip64Field { name, field } => write!(
                f,
                "zip entry '{name}' needs a zip64 {field} but its zip64 extra field is missing or too short"
            ),
            BadLocalHeader { name, offset } => {
                write!(f, "zip entry '{name}': no valid local header at offset {offset}")
            }
            EntryOutOfBounds { name, offset, size, file_len } => write!(
                f,
                "zip entry '{name}' (offset {offset}, size {size}) extends past the end of the file ({file_len} bytes)"
            ),
            CrcMismatch { name, expected, actual } => write!(
                f,
                "zip entry '{name}' is corrupt: CRC-32 {actual:08x}, expected {expected:08x}"
            ),
            Empty => write!(f, "zip archive has no entries"),
            NoRootPrefix(name) => write!(
                f,
                "first zip entry '{name}' has no '<root>/' prefix as torch.save writes"
            ),
            OutsideRoot { name, prefix } => {
                write!(f, "zip entry '{name}' is not under the archive root '{prefix}'")
            }
            MissingEntry(name) => write!(f, "zip archive has no entry '{name}'"),
        }
    }
}

impl std::error::Error for ZipError {}

/// One stored entry: its data is `data[offset..offset + size]`, already
/// checked to lie inside the archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipEntry {
    pub name: String,
    pub offset: usize,
    pub size: usize,
}

/// A parsed `torch.save` archive borrowing the input bytes.
#[derive(Debug)]
pub struct TorchZip<'a> {
    data: &'a [u8],
    prefix: String,
    entries: Vec<ZipEntry>,
    by_name: HashMap<String, usize>,
}

impl<'a> TorchZip<'a> {
    /// Parses the archive and checks every entry's bounds and CRC-32.
    pub fn parse(data: &'a [u8]) -> Result<TorchZip<'a>, ZipError> {
        let eocd = find_eocd(data)?;
        let cd = central_directory_location(data, eocd)?;
        let entries = read_central_directory(data, cd)?;

        let first = entries.first().ok_or(ZipError::Empty)?;
        let prefix = match first.name.find('/') {
            Some(i) => first.name[..=i].to_string(),
            None => return Err(ZipError::NoRootPrefix(first.name.clone())),
        };
        let mut by_name = HashMap::with_capacity(entries.len());
        for (i, e) in entries.iter().enumerate() {
            if !e.name.starts_with(&prefix) {
                return Err(ZipError::OutsideRoot {
                    name: e.name.clone(),
                    prefix,
                });
            }
            if by_name.insert(e.name.clone(), i).is_some() {
                return Err(ZipError::DuplicateEntry(e.name.clone()));
            }
        }
        Ok(TorchZip {
            data,
            prefix,
            entries,
            by_name,
        })
    }

    /// The archive root, e.g. `iter_decider/` (taken from the first entry).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// All entries in central-directory order.
    pub fn entries(&self) -> &[ZipEntry] {
        &self.entries
    }

    /// The bytes of the entry with this full name (including the prefix).
    pub fn entry(&self, full_name: &str) -> Option<&'a [u8]> {
        let e = &self.entries[*self.by_name.get(full_name)?];
        // In bounds: checked in `read_central_directory`.
        self.data.get(e.offset..e.offset + e.size)
    }

    /// The bytes of `<prefix><name>`, e.g. `get("data.pkl")`.
    pub fn get(&self, name: &str) -> Result<&'a [u8], ZipError> {
        let full = format!("{}{}", self.prefix, name);
        self.entry(&full).ok_or(ZipError::MissingEntry(full))
    }
}

/// Little-endian field reader over a slice; `None` when out of bounds.
fn le_u16(d: &[u8], at: usize) -> Option<u16> {
    let b = d.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([b[0], b[1]]))
}
fn le_u32(d: &[u8], at: usize) -> Option<u32> {
    let b = d.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}
fn le_u64(d: &[u8], at: usize) -> Option<u64> {
    let b = d.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// Offset of the end-of-central-directory record: the last signature match
/// whose comment length fits the file, searched over the maximal comment
/// range (65535 bytes).
fn find_eocd(data: &[u8]) -> Result<usize, ZipError> {
    if data.len() < EOCD_LEN {
        return Err(ZipError::NoEndOfCentralDirectory);
    }
    let last = data.len() - EOCD_LEN;
    let first = last.saturating_sub(0xFFFF);
    for pos in (first..=last).rev() {
        if le_u32(data, pos) == Some(SIG_EOCD) {
            let comment_len = le_u16(data, pos + 20).unwrap_or(u16::MAX) as usize;
            if pos + EOCD_LEN + comment_len <= data.len() {
                return Ok(pos);
            }
        }
    }
    Err(ZipError::NoEndOfCentralDirectory)
}

#[derive(Debug, Clone, Copy)]
struct CdLocation {
    offset: u64,
    size: u64,
    entries: u64,
}

fn central_directory_location(data: &[u8], eocd: usize) -> Result<CdLocation, ZipError> {
    let disk = le_u16(data, eocd + 4).unwrap_or(0);
    let cd_disk = le_u16(data, eocd + 6).unwrap_or(0);
    let entries16 = le_u16(data, eocd + 10).unwrap_or(0);
    let size32 = le_u32(data, eocd + 12).unwrap_or(0);
    let offset32 = le_u32(data, eocd + 16).unwrap_or(0);

    // torch always writes the zip64 records; use them whenever the locator
    // is there, and insist on them when a 32-bit field is saturated.
    let has_locator = eocd >= ZIP64_LOCATOR_LEN
        && le_u32(data, eocd - ZIP64_LOCATOR_LEN) == Some(SIG_ZIP64_LOCATOR);
    let saturated = entries16 == 0xFFFF || size32 == 0xFFFF_FFFF || offset32 == 0xFFFF_FFFF;
    if !has_locator {
        if saturated {
            return Err(ZipError::BadZip64(
                "the end-of-central-directory fields are saturated but there is no zip64 locator"
                    .into(),
            ));
        }
        if disk != 0 || cd_disk != 0 {
            return Err(ZipError::MultiDisk);
        }
        return Ok(CdLocation {
            offset: offset32 as u64,
            size: size32 as u64,
            entries: entries16 as u64,
        });
    }

    let loc = eocd - ZIP64_LOCATOR_LEN;
    let z64_offset = le_u64(data, loc + 8).unwrap_or(u64::MAX);
    let total_disks = le_u32(data, loc + 16).unwrap_or(0);
    if total_disks > 1 {
        return Err(ZipError::MultiDisk);
    }
    let z64 = usize::try_from(z64_offset)
        .ok()
        .filter(|&o| o.checked_add(ZIP64_EOCD_LEN).is_some_and(|end| end <= loc))
        .ok_or_else(|| {
            ZipError::BadZip64(format!(
                "zip64 record offset {z64_offset} lies outside the file"
            ))
        })?;
    if le_u32(data, z64) != Some(SIG_ZIP64_EOCD) {
        return Err(ZipError::BadZip64(format!(
            "no zip64 record signature at offset {z64}"
        )));
    }
    // All reads below are within z64..z64 + 56, checked above.
    let disk = le_u32(data, z64 + 16).unwrap_or(0);
    let cd_disk = le_u32(data, z64 + 20).unwrap_or(0);
    if disk != 0 || cd_disk != 0 {
        return Err(ZipError::MultiDisk);
    }
    Ok(CdLocation {
        entries: le_u64(data, z64 + 32).unwrap_or(0),
        size: le_u64(data, z64 + 40).unwrap_or(0),
        offset: le_u64(data, z64 + 48).unwrap_or(0),
    })
}

fn read_central_directory(data: &[u8], cd: CdLocation) -> Result<Vec<ZipEntry>, ZipError> {
    let out_of_bounds = || ZipError::CentralDirectoryOutOfBounds {
        offset: cd.offset,
        size: cd.size,
        file_len: data.len(),
    };
    let start = usize::try_from(cd.offset).map_err(|_| out_of_bounds())?;
    let size = usize::try_from(cd.size).map_err(|_| out_of_bounds())?;
    let end = start.checked_add(size).ok_or_else(out_of_bounds)?;
    let dir = data.get(start..end).ok_or_else(out_of_bounds)?;
    // Each header takes at least 46 bytes, which bounds the allocation below.
    if cd.entries > (size / CENTRAL_LEN) as u64 {
        return Err(ZipError::TooManyEntries {
            entries: cd.entries,
            cd_size: cd.size,
        });
    }

    let mut entries = Vec::with_capacity(cd.entries as usize);
    let mut pos = 0usize;
    for i in 0..cd.entries as usize {
        let truncated = || ZipError::TruncatedCentralDirectory {
            entry_index: i,
            entries: cd.entries,
        };
        if dir.len() - pos < CENTRAL_LEN {
            return Err(truncated());
        }
        if le_u32(dir, pos) != Some(SIG_CENTRAL) {
            return Err(ZipError::BadCentralSignature {
                entry_index: i,
                offset: start + pos,
            });
        }
        let h = &dir[pos..pos + CENTRAL_LEN];
        let flags = le_u16(h, 8).unwrap_or(0);
        let method = le_u16(h, 10).unwrap_or(0);
        let crc = le_u32(h, 16).unwrap_or(0);
        let comp32 = le_u32(h, 20).unwrap_or(0);
        let uncomp32 = le_u32(h, 24).unwrap_or(0);
        let name_len = le_u16(h, 28).unwrap_or(0) as usize;
        let extra_len = le_u16(h, 30).unwrap_or(0) as usize;
        let comment_len = le_u16(h, 32).unwrap_or(0) as usize;
        let disk16 = le_u16(h, 34).unwrap_or(0);
        let local32 = le_u32(h, 42).unwrap_or(0);

        let var_len = name_len + extra_len + comment_len;
        if dir.len() - pos - CENTRAL_LEN < var_len {
            return Err(truncated());
        }
        let name_at = pos + CENTRAL_LEN;
        let name = std::str::from_utf8(&dir[name_at..name_at + name_len])
            .map_err(|_| ZipError::NameNotUtf8 { entry_index: i })?
            .to_string();
        let extra = &dir[name_at + name_len..name_at + name_len + extra_len];
        pos = name_at + var_len;

        if flags & 1 != 0 {
            return Err(ZipError::Encrypted(name));
        }
        if method != 0 {
            return Err(ZipError::Compressed { name, method });
        }
        let mut z64_fields = zip64_extra_values(extra).into_iter();
        // The zip64 extra holds, in this order, only the fields that are
        // saturated in the header.
        let mut widen = |v32: u32, field: &'static str| -> Result<u64, ZipError> {
            if v32 != 0xFFFF_FFFF {
                return Ok(v32 as u64);
            }
            z64_fields
                .next()
                .ok_or_else(|| ZipError::MissingZip64Field {
                    name: name.clone(),
                    field,
                })
        };
        let uncompressed = widen(uncomp32, "uncompressed size")?;
        let compressed = widen(comp32, "compressed size")?;
        let local = widen(local32, "local header offset")?;
        if disk16 != 0 && disk16 != 0xFFFF {
            return Err(ZipError::MultiDisk);
        }
        if compressed != uncompressed {
            return Err(ZipError::SizeMismatch {
                name,
                compressed,
                uncompressed,
            });
        }

        let (offset, size) = locate_data(data, &name, local, uncompressed)?;
        let actual = crc32(&data[offset..offset + size]);
        if actual != crc {
            return Err(ZipError::CrcMismatch {
                name,
                expected: crc,
                actual,
            });
        }
        entries.push(ZipEntry { name, offset, size });
    }
    Ok(entries)
}

/// The u64 values of the zip64 extended-information extra field, if any
/// (at most 3 are used; a longer field is cut there).
fn zip64_extra_values(extra: &[u8]) -> Vec<u64> {
    let mut at = 0usize;
    while let (Some(id), Some(len)) = (le_u16(extra, at), le_u16(extra, at + 2)) {
        let body_at = at + 4;
        let body = match extra.get(body_at..body_at + len as usize) {
            Some(b) => b,
            None => break,
        };
        if id == ZIP64_EXTRA_ID {
            return body
                .chunks_exact(8)
                .take(3)
                .filter_map(|c| le_u64(c, 0))
                .collect();
        }
        at = body_at + len as usize;
    }
    Vec::new()
}

/// Checks the local header at `local` and returns the entry's data range.
fn locate_data(data: &[u8], name: &str, local: u64, size: u64) -> Result<(usize, usize), ZipError> {
    let oob = || ZipError::EntryOutOfBounds {
        name: name.to_string(),
        offset: local,
        size,
        file_len: data.len(),
    };
    let at = usize::try_from(local).map_err(|_| oob())?;
    let header_end = at.checked_add(LOCAL_LEN).ok_or_else(oob)?;
    if header_end > data.len() {
        return Err(oob());
    }
    if le_u32(data, at) != Some(SIG_LOCAL) {
        return Err(ZipError::BadLocalHeader {
            name: name.to_string(),
            offset: local,
        });
    }
    let name_len = le_u16(data, at + 26).unwrap_or(0) as usize;
    let extra_len = le_u16(data, at + 28).unwrap_or(0) as usize;
    // The local name must match, or the central directory points elsewhere.
    let local_name = data
        .get(header_end..header_end + name_len)
        .ok_or_else(oob)?;
    if local_name != name.as_bytes() {
        return Err(ZipError::BadLocalHeader {
            name: name.to_string(),
            offset: local,
        });
    }
    let start = header_end + name_len + extra_len;
    let size = usize::try_from(size).map_err(|_| oob())?;
    let end = start.checked_add(size).ok_or_else(oob)?;
    if end > data.len() {
        return Err(oob());
    }
    Ok((start, size))
}

/// CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320) as zip uses it.
pub fn crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    let mut c = !0u32;
    for &b in bytes {
        c = table[((c ^ b as u32) & 0xFF) as usize] ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }
}
