//! Strings packed into one buffer per view or stored slice, each located by a
//! 6-byte [`StrSpan`]: one heap block for all the names of a service instead
//! of one per name, and entries that hold two spans stay small.

/// Where a string is in a packed buffer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C, packed(2))]
pub struct StrSpan {
    off: u32,
    len: u16,
}

impl StrSpan {
    /// No string (an endpoint without a hostname, say).
    pub const NONE: StrSpan = StrSpan {
        off: 0,
        len: u16::MAX,
    };

    /// Appends `s` to `buf` and returns where it is; [`StrSpan::NONE`] for
    /// `None` and for a string too long for a span (no DNS name is).
    pub fn push(buf: &mut String, s: Option<&str>) -> Self {
        match s {
            Some(s) if s.len() < u16::MAX as usize => {
                let span = StrSpan {
                    off: buf.len() as u32,
                    len: s.len() as u16,
                };
                buf.push_str(s);
                span
            }
            _ => Self::NONE,
        }
    }

    /// Where the string is in its buffer, `None` for [`StrSpan::NONE`].
    fn range(self) -> Option<std::ops::Range<usize>> {
        let start = self.off as usize;
        (self != Self::NONE).then(|| start..start + self.len as usize)
    }

    /// The string in `buf`, `None` for [`StrSpan::NONE`].
    pub fn get(self, buf: &str) -> Option<&str> {
        buf.get(self.range()?)
    }

    /// The span as 6 bytes, for buffers that pack spans among other data.
    pub fn to_bytes(self) -> [u8; 6] {
        let [a, b, c, d] = self.off.to_le_bytes();
        let [e, f] = self.len.to_le_bytes();
        [a, b, c, d, e, f]
    }

    /// The span [`StrSpan::to_bytes`] wrote.
    pub fn from_bytes([a, b, c, d, e, f]: [u8; 6]) -> Self {
        StrSpan {
            off: u32::from_le_bytes([a, b, c, d]),
            len: u16::from_le_bytes([e, f]),
        }
    }

    /// [`StrSpan::get`] in a byte buffer that holds UTF-8 text written by
    /// [`StrSpan::push`] (a span never splits a character).
    pub fn get_utf8(self, buf: &[u8]) -> Option<&str> {
        std::str::from_utf8(buf.get(self.range()?)?).ok()
    }

    /// The string's length in bytes (0 for [`StrSpan::NONE`]).
    pub fn byte_len(self) -> usize {
        self.range().map_or(0, |r| r.len())
    }
}
