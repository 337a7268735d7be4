//! Endpoint addresses packed four bytes at a time.
//!
//! `IpAddr` is 17 bytes; almost every endpoint address is IPv4 (4 bytes).
//! The writer's slices and the readers' views each hold every address of
//! every endpoint, so at 100,000 endpoints the difference is ~2.6 MB. An
//! endpoint's addresses are a run of 4-byte words in one array: its IPv4
//! addresses (one word each) and then its IPv6 addresses (four words each),
//! located by a 6-byte [`AddrSpan`]. [`Addrs`] borrows one run back, and
//! writes it as A and AAAA records straight from the packed octets.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::wire::rrset::push_records;
use crate::wire::{RecordWriter, qtype};

/// One 4-byte word of a packed address array: an IPv4 address, or a quarter
/// of an IPv6 one.
pub type AddrWord = [u8; 4];

/// Where one endpoint's addresses are in a packed array. Packed to 6 bytes
/// so that the entries that hold one stay small.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(2))]
pub struct AddrSpan {
    start: u32,
    v4: u8,
    v6: u8,
}

impl AddrSpan {
    /// Appends `ips` to `words` (IPv4 first, each family in the given order;
    /// at most 255 of each family) and returns where they are.
    pub fn push<'a>(
        words: &mut Vec<AddrWord>,
        ips: impl Iterator<Item = &'a IpAddr> + Clone,
    ) -> Self {
        let start = words.len() as u32;
        let mut v4 = 0u8;
        let mut v6 = 0u8;
        for ip in ips.clone() {
            if let IpAddr::V4(a) = ip
                && v4 < u8::MAX
            {
                words.push(a.octets());
                v4 += 1;
            }
        }
        for ip in ips {
            if let IpAddr::V6(a) = ip
                && v6 < u8::MAX
            {
                let o = a.octets();
                words.extend([0, 4, 8, 12].map(|i| [o[i], o[i + 1], o[i + 2], o[i + 3]]));
                v6 += 1;
            }
        }
        Self { start, v4, v6 }
    }

    /// The span as 6 bytes, for buffers that pack spans among other data.
    pub fn to_bytes(self) -> [u8; 6] {
        let [a, b, c, d] = self.start.to_le_bytes();
        [a, b, c, d, self.v4, self.v6]
    }

    /// The span [`AddrSpan::to_bytes`] wrote.
    pub fn from_bytes([a, b, c, d, v4, v6]: [u8; 6]) -> Self {
        AddrSpan {
            start: u32::from_le_bytes([a, b, c, d]),
            v4,
            v6,
        }
    }

    /// Where its IPv4 addresses are in the packed array (one word each).
    pub fn v4_words(self) -> std::ops::Range<usize> {
        let start = self.start as usize;
        start..start + self.v4 as usize
    }

    /// Where its IPv6 addresses are in the packed array (four words each).
    pub fn v6_words(self) -> std::ops::Range<usize> {
        let start = self.v4_words().end;
        start..start + 4 * self.v6 as usize
    }

    /// The addresses this span locates in `words`.
    pub fn get(self, words: &[AddrWord]) -> Addrs<'_> {
        Addrs {
            v4: &words[self.v4_words()],
            v6: &words[self.v6_words()],
        }
    }
}

/// Packed IPv6 addresses (four words each) as 16-byte arrays.
pub fn v6_arrays(words: &[AddrWord]) -> &[[u8; 16]] {
    words.as_flattened().as_chunks::<16>().0
}

/// One endpoint's addresses, borrowed: IPv4 first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addrs<'a> {
    v4: &'a [AddrWord],
    v6: &'a [AddrWord],
}

impl<'a> Addrs<'a> {
    /// The IPv4 addresses.
    pub fn v4(self) -> impl ExactSizeIterator<Item = Ipv4Addr> + Clone + 'a {
        self.v4.iter().map(|w| Ipv4Addr::from(*w))
    }

    /// The IPv6 addresses.
    pub fn v6(self) -> impl ExactSizeIterator<Item = Ipv6Addr> + Clone + 'a {
        self.v6_arrays().iter().map(|o| Ipv6Addr::from(*o))
    }

    /// Only the IPv4 addresses.
    pub fn only_v4(self) -> Self {
        Self {
            v4: self.v4,
            v6: &[],
        }
    }

    /// Only the IPv6 addresses.
    pub fn only_v6(self) -> Self {
        Self {
            v4: &[],
            v6: self.v6,
        }
    }

    /// Every address, IPv4 first.
    pub fn iter(self) -> impl Iterator<Item = IpAddr> + Clone + 'a {
        self.v4().map(IpAddr::V4).chain(self.v6().map(IpAddr::V6))
    }

    /// How many addresses.
    pub fn len(self) -> usize {
        self.v4.len() + self.v6.len() / 4
    }

    /// How many IPv6 addresses.
    pub fn v6_len(self) -> usize {
        self.v6.len() / 4
    }

    /// True when there is none.
    pub fn is_empty(self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The addresses as a vector.
    pub fn to_vec(self) -> Vec<IpAddr> {
        self.iter().collect()
    }

    /// Appends the addresses as A and AAAA records owned by the name at
    /// message offset `owner` (a compression pointer), IPv4 first.
    pub fn write_records(self, out: &mut Vec<u8>, owner: u16, ttl: u32) {
        push_records(out, owner, qtype::A, ttl, self.v4);
        push_records(out, owner, qtype::AAAA, ttl, self.v6_arrays());
    }

    /// The IPv6 addresses as 16-byte arrays (what an AAAA record holds).
    pub fn v6_arrays(self) -> &'a [[u8; 16]] {
        v6_arrays(self.v6)
    }

    /// Bytes [`Addrs::write_records`] appends.
    pub fn records_len(self) -> usize {
        16 * self.v4.len() + 28 * self.v6_len()
    }
}

/// Addresses as records owned by the question name: an endpoint's A or AAAA
/// answer, written per query from the view's packed array.
#[derive(Clone, Copy, Debug)]
pub struct AddrRecords<'a> {
    ips: Addrs<'a>,
    ttl: u32,
}

impl<'a> AddrRecords<'a> {
    /// The records of `ips` with TTL `ttl` (seconds).
    pub fn new(ips: Addrs<'a>, ttl: u32) -> Self {
        Self { ips, ttl }
    }
}

impl RecordWriter for AddrRecords<'_> {
    fn count(&self) -> u16 {
        self.ips.len().min(u16::MAX as usize) as u16
    }

    fn len(&self) -> usize {
        self.ips.records_len()
    }

    fn write(&self, out: &mut Vec<u8>) {
        self.ips.write_records(out, 12, self.ttl);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_each_family_in_order_ipv4_first() {
        let ips: Vec<IpAddr> = ["fd00::1", "10.0.0.2", "2001:db8::ff", "10.0.0.1"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut words = vec![[9, 9, 9, 9]];
        let a = AddrSpan::push(&mut words, ips.iter());
        let b = AddrSpan::push(&mut words, [].iter());
        assert_eq!(words.len(), 1 + 2 + 8);
        assert_eq!(
            a.get(&words).to_vec(),
            [&ips[1], &ips[3], &ips[0], &ips[2]].map(|ip| *ip)
        );
        assert_eq!(a.get(&words).len(), 4);
        assert!(b.get(&words).is_empty());
        assert_eq!(std::mem::size_of::<AddrSpan>(), 6);
    }
}
