//! Hand-built DNS packets for the hostile-input tests, byte by byte, so
//! they can be wrong in ways no DNS library would write.

/// `name` in wire format (uncompressed, root label included).
pub fn wire_name(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for l in name.split('.').filter(|l| !l.is_empty()) {
        out.push(l.len() as u8);
        out.extend_from_slice(l.as_bytes());
    }
    out.push(0);
    out
}

/// The id every [`header`] carries.
pub const RAW_ID: u16 = 0xBEEF;

/// Header (id [`RAW_ID`], RD) with the given section counts.
pub fn header(qd: u16, an: u16, ns: u16, ar: u16) -> Vec<u8> {
    let mut p = RAW_ID.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x01, 0x00]);
    for c in [qd, an, ns, ar] {
        p.extend_from_slice(&c.to_be_bytes());
    }
    p
}

/// A question: name, type, class.
pub fn question(name: &str, qtype: u16, qclass: u16) -> Vec<u8> {
    let mut p = wire_name(name);
    p.extend_from_slice(&qtype.to_be_bytes());
    p.extend_from_slice(&qclass.to_be_bytes());
    p
}

/// An OPT record: root owner, `payload`, extended rcode 0, `version`, no flags.
pub fn opt(payload: u16, version: u8) -> Vec<u8> {
    let mut p = vec![0, 0, 41];
    p.extend_from_slice(&payload.to_be_bytes());
    p.extend_from_slice(&[0, version, 0, 0, 0, 0]);
    p
}
