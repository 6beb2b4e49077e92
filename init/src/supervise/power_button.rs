//! The ACPI power button, seen as KEY_POWER on an input device (`/dev/input/event*`).
//!
//! TODO(acpi-genetlink): also listen on the kernel's "acpi_event" generic-netlink family
//! (multicast group "acpi_mc_group") for kernels that report the button only there.

use std::io::Read;
use std::path::Path;

pub const EV_KEY: u16 = 0x01;
pub const KEY_POWER: u16 = 116;

/// `struct input_event` on 64-bit Linux: timeval (16 bytes), type, code (u16), value (i32).
pub const EVENT_SIZE: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputEvent {
    pub kind: u16,
    pub code: u16,
    pub value: i32,
}

impl InputEvent {
    /// A key press (value 1; 0 is release, 2 autorepeat) of the power key.
    pub fn is_power_press(&self) -> bool {
        self.kind == EV_KEY && self.code == KEY_POWER && self.value == 1
    }
}

/// Parses one native-endian `struct input_event`.
pub fn parse_event(buf: &[u8]) -> Option<InputEvent> {
    let b = buf.get(..EVENT_SIZE)?;
    Some(InputEvent {
        kind: u16::from_ne_bytes([b[16], b[17]]),
        code: u16::from_ne_bytes([b[18], b[19]]),
        value: i32::from_ne_bytes([b[20], b[21], b[22], b[23]]),
    })
}

/// Does the `capabilities/key` bitmap (hex words, most significant first, each one
/// `long` wide) of an input device include `key`?
pub fn has_key(capabilities: &str, key: u16) -> bool {
    let bits = usize::BITS as usize;
    let words: Vec<&str> = capabilities.split_whitespace().collect();
    let index = key as usize / bits;
    let Some(word) = words.len().checked_sub(index + 1).map(|i| words[i]) else {
        return false;
    };
    usize::from_str_radix(word, 16).is_ok_and(|w| w & (1 << (key as usize % bits)) != 0)
}

/// Starts one reader thread per input device that has a power key; each press calls
/// `on_press`. Returns the devices watched.
pub fn listen(
    root: &crate::sys::root::Root,
    on_press: impl Fn() + Send + Sync + Clone + 'static,
) -> Vec<String> {
    let sys = root.path("/sys/class/input");
    let Ok(dir) = std::fs::read_dir(&sys) else {
        return Vec::new();
    };
    let mut watched = Vec::new();
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("event") {
            continue;
        }
        let caps = std::fs::read_to_string(sys.join(&name).join("device/capabilities/key"))
            .unwrap_or_default();
        if !has_key(&caps, KEY_POWER) {
            continue;
        }
        let dev = root.path("/dev/input").join(&name);
        match std::fs::File::open(&dev) {
            Ok(file) => {
                let on_press = on_press.clone();
                let spawned = std::thread::Builder::new()
                    .name(format!("power-{name}"))
                    .spawn(move || read_events(file, &dev, on_press));
                match spawned {
                    Ok(_) => watched.push(name),
                    Err(e) => crate::warn!("power button {name}: thread: {e}"),
                }
            }
            Err(e) => crate::warn!("power button: open {}: {e}", dev.display()),
        }
    }
    watched
}

fn read_events(mut file: std::fs::File, dev: &Path, on_press: impl Fn()) {
    let mut buf = [0u8; EVENT_SIZE * 16];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if buf[..n]
                    .chunks_exact(EVENT_SIZE)
                    .filter_map(parse_event)
                    .any(|e| e.is_power_press())
                {
                    on_press();
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                crate::warn!("power button: read {}: {e}", dev.display());
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_SIZE] {
        let mut b = [0u8; EVENT_SIZE];
        b[..8].copy_from_slice(&1_700_000_000i64.to_ne_bytes());
        b[8..16].copy_from_slice(&123_456i64.to_ne_bytes());
        b[16..18].copy_from_slice(&kind.to_ne_bytes());
        b[18..20].copy_from_slice(&code.to_ne_bytes());
        b[20..24].copy_from_slice(&value.to_ne_bytes());
        b
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(parse_event(&event(EV_KEY, KEY_POWER, 1))
            .unwrap()
            .is_power_press());
        assert!(
            !parse_event(&event(EV_KEY, KEY_POWER, 0))
                .unwrap()
                .is_power_press(),
            "release"
        );
        assert!(
            !parse_event(&event(EV_KEY, KEY_POWER, 2))
                .unwrap()
                .is_power_press(),
            "repeat"
        );
        assert!(
            !parse_event(&event(EV_KEY, 115, 1))
                .unwrap()
                .is_power_press(),
            "volume up"
        );
        assert!(
            !parse_event(&event(0, KEY_POWER, 1))
                .unwrap()
                .is_power_press(),
            "EV_SYN"
        );
        assert_eq!(parse_event(&[0u8; 23]), None);
    }

    #[test]
    fn capability_bitmap_words_are_most_significant_first() {
        // QEMU's ACPI power button ("Power Button", LNXPWRBN): only KEY_POWER, bit 116 = word 1 bit 52.
        assert!(has_key("10000000000000 0", KEY_POWER));
        // A keyboard-like device without KEY_POWER.
        assert!(!has_key("fffffffffffffffe", KEY_POWER));
        assert!(!has_key("", KEY_POWER));
        assert!(has_key("1 0 10000000000000 0", KEY_POWER));
    }
}
