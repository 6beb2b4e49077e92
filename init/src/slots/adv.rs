//! syslinux's Auxiliary Data Vector: the last 1024 bytes of `ldlinux.sys`, two identical
//! 512-byte copies so that a torn write leaves one valid. `ldlinux.sys` boots the label in
//! the `BOOTONCE` record instead of `DEFAULT`, after removing the record on disk.
//!
//! Each copy: magic (u32 LE), checksum, 500 bytes of records, tail magic. The checksum makes
//! the sum of the u32 words from the checksum to the tail (exclusive) equal `MAGIC2`.
//! Records are `tag, length, bytes`; tag 0 ends the list.

pub const ADV_COPY: usize = 512;
pub const ADV_BYTES: usize = 2 * ADV_COPY;
const DATA: std::ops::Range<usize> = 8..ADV_COPY - 4;
const MAGIC1: u32 = 0x5a2d_2fa5;
const MAGIC2: u32 = 0xa304_1767;
const MAGIC3: u32 = 0xdd28_bf64;
/// `ADV_BOOTONCE` in syslinux's `advconst.h`.
pub const TAG_BOOTONCE: u8 = 1;

/// The records of a valid ADV, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Adv {
    pub records: Vec<(u8, Vec<u8>)>,
}

fn word(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn copy_is_valid(c: &[u8]) -> bool {
    if word(c, 0) != MAGIC1 || word(c, ADV_COPY - 4) != MAGIC3 {
        return false;
    }
    let sum = (4..ADV_COPY - 4)
        .step_by(4)
        .fold(0u32, |s, at| s.wrapping_add(word(c, at)));
    sum == MAGIC2
}

impl Adv {
    /// Parses the two copies; the first valid one wins. `None` when neither is valid
    /// (syslinux then treats the ADV as empty, and so do we).
    pub fn parse(bytes: &[u8]) -> Option<Adv> {
        if bytes.len() != ADV_BYTES {
            return None;
        }
        let copy = [&bytes[..ADV_COPY], &bytes[ADV_COPY..]]
            .into_iter()
            .find(|c| copy_is_valid(c))?;
        let data = &copy[DATA];
        let mut records = Vec::new();
        let mut at = 0;
        while at + 2 <= data.len() && data[at] != 0 {
            let len = usize::from(data[at + 1]);
            let value = data.get(at + 2..at + 2 + len)?;
            records.push((data[at], value.to_vec()));
            at += 2 + len;
        }
        Some(Adv { records })
    }

    pub fn get(&self, tag: u8) -> Option<&[u8]> {
        self.records
            .iter()
            .find(|(t, _)| *t == tag)
            .map(|(_, v)| v.as_slice())
    }

    /// Sets (or with an empty value removes) a record, as `syslinux_setadv` does.
    pub fn set(&mut self, tag: u8, value: &[u8]) -> Result<(), String> {
        if value.len() > 255 {
            return Err(format!(
                "ADV record {tag} is {} bytes; at most 255",
                value.len()
            ));
        }
        self.records.retain(|(t, _)| *t != tag);
        if !value.is_empty() {
            self.records.push((tag, value.to_vec()));
        }
        let used: usize = self.records.iter().map(|(_, v)| 2 + v.len()).sum();
        if used > DATA.len() {
            return Err(format!(
                "ADV records need {used} bytes; syslinux has {}",
                DATA.len()
            ));
        }
        Ok(())
    }

    /// Both copies, ready to be written over the end of `ldlinux.sys`.
    pub fn encode(&self) -> Result<[u8; ADV_BYTES], String> {
        let mut copy = [0u8; ADV_COPY];
        let mut at = DATA.start;
        for (tag, value) in &self.records {
            let len = u8::try_from(value.len())
                .map_err(|_| format!("ADV record {tag} is longer than 255 bytes"))?;
            if *tag == 0 || at + 2 + value.len() > DATA.end {
                return Err(format!("ADV record {tag} does not fit"));
            }
            copy[at] = *tag;
            copy[at + 1] = len;
            copy[at + 2..at + 2 + value.len()].copy_from_slice(value);
            at += 2 + value.len();
        }
        copy[..4].copy_from_slice(&MAGIC1.to_le_bytes());
        copy[ADV_COPY - 4..].copy_from_slice(&MAGIC3.to_le_bytes());
        let rest = (8..ADV_COPY - 4)
            .step_by(4)
            .fold(0u32, |s, at| s.wrapping_add(word(&copy, at)));
        copy[4..8].copy_from_slice(&MAGIC2.wrapping_sub(rest).to_le_bytes());
        let mut out = [0u8; ADV_BYTES];
        out[..ADV_COPY].copy_from_slice(&copy);
        out[ADV_COPY..].copy_from_slice(&copy);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An empty ADV as `syslinux --install` leaves it at the end of ldlinux.sys (bytes read
    /// from a built image): magic, checksum = MAGIC2, zeros, tail magic; twice.
    #[test]
    fn empty_adv_is_byte_for_byte_what_syslinux_installs() {
        let e = Adv::default().encode().unwrap();
        let mut want = [0u8; ADV_COPY];
        want[..8].copy_from_slice(&[0xa5, 0x2f, 0x2d, 0x5a, 0x67, 0x17, 0x04, 0xa3]);
        want[508..].copy_from_slice(&[0x64, 0xbf, 0x28, 0xdd]);
        assert_eq!(e[..ADV_COPY], want);
        assert_eq!(e[ADV_COPY..], want);
        assert_eq!(Adv::parse(&e), Some(Adv::default()));
    }

    #[test]
    fn bootonce_round_trips_and_replaces() {
        let mut a = Adv::default();
        a.set(2, b"menu").unwrap();
        a.set(TAG_BOOTONCE, b"slot-a").unwrap();
        a.set(TAG_BOOTONCE, b"slot-b").unwrap();
        let bytes = a.encode().unwrap();
        let back = Adv::parse(&bytes).unwrap();
        assert_eq!(back.get(TAG_BOOTONCE), Some(&b"slot-b"[..]));
        assert_eq!(back.get(2), Some(&b"menu"[..]));
        assert_eq!(back.records.len(), 2);
        assert_eq!(&bytes[8..10], &[2, 4], "records in insertion order");
        let mut cleared = back.clone();
        cleared.set(TAG_BOOTONCE, b"").unwrap();
        assert_eq!(cleared.get(TAG_BOOTONCE), None);
    }

    #[test]
    fn a_torn_copy_falls_back_to_the_other_and_two_torn_mean_none() {
        let mut a = Adv::default();
        a.set(TAG_BOOTONCE, b"slot-b").unwrap();
        let mut bytes = a.encode().unwrap();
        bytes[20] ^= 0xff; // first copy's checksum no longer matches
        assert_eq!(
            Adv::parse(&bytes).unwrap().get(TAG_BOOTONCE),
            Some(&b"slot-b"[..])
        );
        bytes[512 + 20] ^= 0xff;
        assert_eq!(Adv::parse(&bytes), None);
        assert_eq!(Adv::parse(&bytes[..512]), None, "wrong length");
    }

    #[test]
    fn oversized_records_are_refused() {
        let mut a = Adv::default();
        assert!(a.set(1, &[b'x'; 256]).is_err());
        a.set(1, &[b'x'; 255]).unwrap();
        a.set(2, &[b'y'; 240]).unwrap();
        assert!(
            a.set(3, &[b'z'; 10]).is_err(),
            "500 bytes of records at most"
        );
    }
}
