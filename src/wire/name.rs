//! Domain names: wire form (length-prefixed labels), reverse names, and the
//! hickory `Name` for the record sets hickory encodes.
//!
//! The index keys its maps by wire labels and pre-encodes names into answers;
//! the query path compares the question's lower-cased wire bytes against
//! them. Every such name is built here, so both sides agree on the bytes.

use std::net::IpAddr;

use hickory_proto::rr::Name;

/// Longest label on the wire (RFC 1035 §2.3.4).
pub const MAX_LABEL: usize = 63;

/// Appends `label` as one wire label: a length byte, then the label
/// lower-cased, cut at [`MAX_LABEL`] bytes.
pub fn push_label(out: &mut Vec<u8>, label: &str) {
    let bytes = &label.as_bytes()[..label.len().min(MAX_LABEL)];
    out.push(bytes.len() as u8);
    out.extend(bytes.iter().map(u8::to_ascii_lowercase));
}

/// The wire form of a name given as labels, root label included: empty
/// labels are skipped, the others lower-cased. `None` when a label is longer
/// than [`MAX_LABEL`] or the name longer than [`super::MAX_NAME`].
pub fn from_labels<'a>(labels: impl IntoIterator<Item = &'a str>) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(64);
    for label in labels.into_iter().filter(|l| !l.is_empty()) {
        if label.len() > MAX_LABEL {
            return None;
        }
        push_label(&mut out, label);
    }
    out.push(0);
    (out.len() <= super::MAX_NAME).then_some(out)
}

/// The wire form of a dotted name (`cluster.local`, trailing dot or not); see
/// [`from_labels`].
pub fn from_dotted(name: &str) -> Option<Vec<u8>> {
    from_labels(name.split('.'))
}

/// A fully qualified hickory `Name` from a dotted name; `None` if it is not a
/// valid DNS name.
pub fn fqdn(dotted: &str) -> Option<Name> {
    let mut n = Name::from_ascii(dotted).ok()?;
    n.set_fqdn(true);
    Some(n)
}

/// The reverse-lookup name of an address (`7.1.244.10.in-addr.arpa`, or 32
/// nibbles under `ip6.arpa`), without trailing dot.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut s = String::with_capacity(72);
            for b in v6.octets().iter().rev() {
                s.push(char::from_digit((b & 0xf) as u32, 16).unwrap_or('0'));
                s.push('.');
                s.push(char::from_digit((b >> 4) as u32, 16).unwrap_or('0'));
                s.push('.');
            }
            s.push_str("ip6.arpa");
            s
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_name("10.244.1.7".parse().unwrap()),
            "7.1.244.10.in-addr.arpa"
        );
        assert!(reverse_name("fd00::1".parse().unwrap()).starts_with("1.0.0.0.0.0.0.0"));
        assert!(reverse_name("fd00::1".parse().unwrap()).ends_with("0.0.d.f.ip6.arpa"));
    }
}
