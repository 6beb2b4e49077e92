//! The ACPI power button, seen two ways: as KEY_POWER on an input device
//! (`/dev/input/event*`), and as a "button/power" event on the kernel's "acpi_event"
//! generic netlink family (multicast group "acpi_mc_group"), which kernels send even
//! without the input layer. Either one means power off.

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

pub const ACPI_FAMILY: &str = "acpi_event";
pub const ACPI_GROUP: &str = "acpi_mc_group";
const ACPI_GENL_CMD_EVENT: u8 = 1;
const ACPI_GENL_ATTR_EVENT: u16 = 1;

/// `struct acpi_genl_event`: device_class[20], bus_id[15], (pad), u32 type, u32 data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiEvent {
    pub device_class: String,
    pub bus_id: String,
    pub kind: u32,
    pub data: u32,
}

impl AcpiEvent {
    pub fn is_power_button(&self) -> bool {
        self.device_class == "button/power"
    }
}

fn c_str(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// Parses the generic netlink payload (genl header + attributes) of an ACPI event.
pub fn parse_acpi_event(genl: &[u8]) -> Option<AcpiEvent> {
    if *genl.first()? != ACPI_GENL_CMD_EVENT {
        return None;
    }
    let attrs = crate::sys::netlink::attributes(genl.get(4..)?);
    let (_, ev) = attrs
        .into_iter()
        .find(|(k, _)| *k == ACPI_GENL_ATTR_EVENT)?;
    let word = |at: usize| Some(u32::from_ne_bytes(ev.get(at..at + 4)?.try_into().ok()?));
    Some(AcpiEvent {
        device_class: c_str(ev.get(..20)?),
        bus_id: c_str(ev.get(20..35)?),
        kind: word(36)?,
        data: word(40)?,
    })
}

/// Joins the ACPI event multicast group and calls `on_press` for every power button
/// event, from a thread of its own. Errors when the family is absent (no ACPI, or a
/// network namespace other than the initial one).
pub fn listen_acpi(on_press: impl Fn() + Send + 'static) -> anyhow::Result<()> {
    use crate::sys::genetlink::GenlSocket;
    use crate::sys::netlink::messages;
    let sock = GenlSocket::open()?;
    let family = sock.resolve(ACPI_FAMILY)?;
    let group = family
        .group(ACPI_GROUP)
        .ok_or_else(|| anyhow::anyhow!("family {ACPI_FAMILY} has no group {ACPI_GROUP}"))?;
    sock.join(group)?;
    std::thread::Builder::new()
        .name("acpi-events".into())
        .spawn(move || loop {
            let buf = match sock.recv() {
                Ok(b) => b,
                Err(e) => {
                    crate::warn!("ACPI events: {e}");
                    return;
                }
            };
            for msg in messages(&buf).into_iter().filter(|m| m.kind == family.id) {
                match parse_acpi_event(msg.payload) {
                    Some(ev) if ev.is_power_button() => on_press(),
                    Some(ev) => crate::debug!("ACPI event {ev:?}"),
                    None => {}
                }
            }
        })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ACPI event message payload as drivers/acpi/event.c builds it.
    fn acpi_payload(class: &str, bus: &str, kind: u32, data: u32) -> Vec<u8> {
        let mut ev = vec![0u8; 44];
        ev[..class.len()].copy_from_slice(class.as_bytes());
        ev[20..20 + bus.len()].copy_from_slice(bus.as_bytes());
        ev[36..40].copy_from_slice(&kind.to_ne_bytes());
        ev[40..44].copy_from_slice(&data.to_ne_bytes());
        let mut p = vec![ACPI_GENL_CMD_EVENT, 1, 0, 0];
        p.extend_from_slice(&48u16.to_ne_bytes());
        p.extend_from_slice(&ACPI_GENL_ATTR_EVENT.to_ne_bytes());
        p.extend_from_slice(&ev);
        p
    }

    #[test]
    fn the_real_kernels_acpi_family_has_the_event_group() {
        use crate::sys::genetlink::GenlSocket;
        let family = GenlSocket::open().and_then(|s| s.resolve(ACPI_FAMILY));
        match family {
            Ok(f) => assert!(f.group(ACPI_GROUP).is_some(), "{f:?}"),
            Err(e) => eprintln!("SKIP: no ACPI event family on this kernel: {e}"),
        }
    }

    #[test]
    fn acpi_power_button_event_is_recognised() {
        let ev = parse_acpi_event(&acpi_payload("button/power", "LNXPWRBN:00", 0x80, 1)).unwrap();
        assert_eq!(ev.device_class, "button/power");
        assert_eq!(ev.bus_id, "LNXPWRBN:00");
        assert_eq!((ev.kind, ev.data), (0x80, 1));
        assert!(ev.is_power_button());
        let lid = parse_acpi_event(&acpi_payload("button/lid", "PNP0C0D:00", 0x80, 1)).unwrap();
        assert!(!lid.is_power_button());
        let mut wrong_cmd = acpi_payload("button/power", "LNXPWRBN:00", 0x80, 1);
        wrong_cmd[0] = 2;
        assert_eq!(parse_acpi_event(&wrong_cmd), None);
        assert_eq!(
            parse_acpi_event(&[1, 1, 0, 0, 8, 0, 1, 0]),
            None,
            "truncated event"
        );
    }

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
