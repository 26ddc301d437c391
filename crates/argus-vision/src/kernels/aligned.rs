//! Growable `f32` buffers whose values start on a cache line.
//!
//! The AVX-512 kernels load and store 64-byte vectors at multiples of 16 values from the start of a plane or
//! a weight strip. From a `Vec<f32>` (16-byte aligned) every such access straddles two cache lines, which costs
//! a second access each; from these buffers none does.

use bytemuck::{Pod, Zeroable};

/// Values per cache line.
pub const LINE: usize = 16;

/// Sixteen values on one cache line.
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
#[repr(C, align(64))]
pub struct Line(pub [f32; LINE]);

/// A growable, cache-line aligned run of `f32` values (its length is a whole number of lines).
#[derive(Debug, Clone, Default)]
pub struct Buffer(Vec<Line>);

impl Buffer {
    /// A buffer holding `values` (then zeros to the end of the last line).
    pub fn from_slice(values: &[f32]) -> Self {
        let mut b = Self::default();
        b.sized(values.len()).copy_from_slice(values);
        b
    }

    /// The first `n` values, growing the buffer (with zeros) when it holds fewer; values already there are kept.
    pub fn sized(&mut self, n: usize) -> &mut [f32] {
        let lines = n.div_ceil(LINE);
        if self.0.len() < lines {
            self.0.resize(lines, Line::default());
        }
        &mut bytemuck::cast_slice_mut(&mut self.0)[..n]
    }

    /// Every value the buffer holds.
    pub fn values(&self) -> &[f32] {
        bytemuck::cast_slice(&self.0)
    }
}

impl std::ops::Deref for Buffer {
    type Target = [f32];

    fn deref(&self) -> &[f32] {
        self.values()
    }
}

impl std::ops::DerefMut for Buffer {
    fn deref_mut(&mut self) -> &mut [f32] {
        bytemuck::cast_slice_mut(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_aligned_and_keep_their_values_as_they_grow() {
        let mut b = Buffer::from_slice(&[1.0, 2.0, 3.0]);
        assert_eq!(b.values().as_ptr() as usize % 64, 0);
        assert_eq!(&b[..4], &[1.0, 2.0, 3.0, 0.0]);
        let grown = b.sized(1000);
        assert_eq!(grown.len(), 1000);
        assert_eq!(&grown[..3], &[1.0, 2.0, 3.0]);
        assert_eq!(b.values().as_ptr() as usize % 64, 0);
        assert_eq!(b.sized(2).len(), 2);
        assert_eq!(b.len(), 1008);
    }
}
