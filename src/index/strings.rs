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

    /// The string in `buf`, `None` for [`StrSpan::NONE`].
    pub fn get(self, buf: &str) -> Option<&str> {
        if self == Self::NONE {
            return None;
        }
        let start = self.off as usize;
        buf.get(start..start + self.len as usize)
    }

    /// The string's length in bytes (0 for [`StrSpan::NONE`]).
    pub fn byte_len(self) -> usize {
        if self == Self::NONE {
            0
        } else {
            self.len as usize
        }
    }
}
