//! Shapes and strided layouts. A view (narrow, transpose, permute, broadcast) only changes the
//! layout; the storage is shared. This is what lets a subnet use the front slice of a supernet
//! weight without copying it.

use crate::{Error, Result};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    shape: Vec<usize>,
    strides: Vec<usize>,
    offset: usize,
}

/// Row-major strides of a contiguous tensor of this shape.
pub fn contiguous_strides(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// The element count of `shape`, or an error naming `op` when it does not fit in `usize` (a plain
/// product would wrap, and a shape with a wrapped count of 0 or 2 would pass every length check).
pub fn checked_numel(op: &'static str, shape: &[usize]) -> Result<usize> {
    shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::invalid(op, format!("shape {shape:?} has more elements than a usize can count")))
}

impl Layout {
    pub fn contiguous(shape: &[usize]) -> Self {
        Layout { shape: shape.to_vec(), strides: contiguous_strides(shape), offset: 0 }
    }

    pub fn new(shape: Vec<usize>, strides: Vec<usize>, offset: usize) -> Self {
        Layout { shape, strides, offset }
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn strides(&self) -> &[usize] {
        &self.strides
    }
    pub fn offset(&self) -> usize {
        self.offset
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Row-major contiguous (any offset): the elements are `storage[offset..offset + numel]`.
    pub fn is_contiguous(&self) -> bool {
        let mut expected = 1;
        for (&d, &s) in self.shape.iter().zip(&self.strides).rev() {
            if d != 1 && s != expected {
                return false;
            }
            expected *= d;
        }
        true
    }

    /// The largest storage index this layout touches, plus one (0 for an empty tensor).
    pub fn storage_extent(&self) -> usize {
        if self.numel() == 0 {
            return 0;
        }
        self.offset + self.shape.iter().zip(&self.strides).map(|(&d, &s)| (d - 1) * s).sum::<usize>() + 1
    }

    fn check_dim(&self, op: &'static str, dim: usize) -> Result<()> {
        if dim >= self.rank() {
            return Err(Error::DimOutOfRange { op, dim, rank: self.rank() });
        }
        Ok(())
    }

    /// Elements `start..start + len` along `dim`, as a view.
    pub fn narrow(&self, dim: usize, start: usize, len: usize) -> Result<Self> {
        self.check_dim("narrow", dim)?;
        let size = self.shape[dim];
        // Checked: a wrapping `start + len` would pass the bound.
        if start.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::RangeOutOfBounds { op: "narrow", dim, start, end: start.saturating_add(len), size });
        }
        let mut out = self.clone();
        out.shape[dim] = len;
        if len > 0 {
            out.offset += start * self.strides[dim];
        }
        Ok(out)
    }

    pub fn transpose(&self, a: usize, b: usize) -> Result<Self> {
        self.check_dim("transpose", a)?;
        self.check_dim("transpose", b)?;
        let mut out = self.clone();
        out.shape.swap(a, b);
        out.strides.swap(a, b);
        Ok(out)
    }

    /// `perm[i]` is the input dimension that becomes output dimension `i`.
    pub fn permute(&self, perm: &[usize]) -> Result<Self> {
        let mut seen = vec![false; self.rank()];
        if perm.len() != self.rank() {
            return Err(Error::invalid("permute", format!("permutation {perm:?} for a tensor of rank {}", self.rank())));
        }
        for &p in perm {
            if p >= self.rank() || seen[p] {
                return Err(Error::invalid("permute", format!("{perm:?} is not a permutation of 0..{}", self.rank())));
            }
            seen[p] = true;
        }
        Ok(Layout {
            shape: perm.iter().map(|&p| self.shape[p]).collect(),
            strides: perm.iter().map(|&p| self.strides[p]).collect(),
            offset: self.offset,
        })
    }

    /// Numpy-style broadcast to `shape` (size-1 and missing leading dims get stride 0).
    pub fn broadcast_to(&self, shape: &[usize]) -> Result<Self> {
        let bad = || Error::ShapeMismatch { op: "broadcast_to", lhs: self.shape.clone(), rhs: shape.to_vec() };
        if shape.len() < self.rank() {
            return Err(bad());
        }
        checked_numel("broadcast_to", shape)?;
        let lead = shape.len() - self.rank();
        let mut strides = vec![0; shape.len()];
        for i in 0..self.rank() {
            let (d, t) = (self.shape[i], shape[lead + i]);
            strides[lead + i] = if d == t {
                self.strides[i]
            } else if d == 1 {
                0
            } else {
                return Err(bad());
            };
        }
        Ok(Layout { shape: shape.to_vec(), strides, offset: self.offset })
    }

    /// Storage offsets of every element in row-major order of the view.
    pub fn offsets(&self) -> Vec<usize> {
        let mut out = Vec::with_capacity(self.numel());
        self.for_each_run(|start, stride, len| out.extend((0..len).map(|i| start + i * stride)));
        out
    }

    /// Calls `f(start, stride, len)` for each innermost run of the view, in row-major order.
    /// Copies and reductions loop over the innermost dimension inside `f`, which keeps the
    /// per-element overhead of strided access low.
    pub fn for_each_run(&self, mut f: impl FnMut(usize, usize, usize)) {
        if self.numel() == 0 {
            return;
        }
        if self.rank() == 0 {
            f(self.offset, 1, 1);
            return;
        }
        let r = self.rank();
        let (inner_len, inner_stride) = (self.shape[r - 1], self.strides[r - 1]);
        let mut idx = vec![0usize; r - 1];
        let mut base = self.offset;
        loop {
            f(base, inner_stride, inner_len);
            // Odometer increment over the outer dimensions.
            let mut d = r - 1;
            loop {
                if d == 0 {
                    return;
                }
                d -= 1;
                idx[d] += 1;
                base += self.strides[d];
                if idx[d] < self.shape[d] {
                    break;
                }
                base -= self.strides[d] * self.shape[d];
                idx[d] = 0;
            }
        }
    }
}

/// The broadcast shape of two shapes (numpy rules), or a shape-mismatch error naming `op`.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::ShapeMismatch { op, lhs: a.to_vec(), rhs: b.to_vec() });
        };
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn narrow_transpose_offsets_match_manual_indexing() {
        let l = Layout::contiguous(&[3, 4, 5]);
        let v = l.narrow(1, 1, 2).unwrap().transpose(0, 2).unwrap();
        assert_eq!(v.shape(), &[5, 2, 3]);
        let offs = v.offsets();
        let mut i = 0;
        for a in 0..5 {
            for b in 0..2 {
                for c in 0..3 {
                    assert_eq!(offs[i], c * 20 + (b + 1) * 5 + a);
                    i += 1;
                }
            }
        }
        assert!(!v.is_contiguous());
        assert!(l.narrow(0, 1, 2).unwrap().is_contiguous());
    }

    #[test]
    fn broadcast_rules() {
        assert_eq!(broadcast_shape("t", &[2, 1, 4], &[3, 1]).unwrap(), vec![2, 3, 4]);
        assert!(broadcast_shape("t", &[2, 3], &[4]).is_err());
        let l = Layout::contiguous(&[3, 1]).broadcast_to(&[2, 3, 4]).unwrap();
        assert_eq!(l.strides(), &[0, 1, 0]);
    }

    #[test]
    fn bad_views_are_errors() {
        let l = Layout::contiguous(&[3, 4]);
        assert!(l.narrow(1, 3, 2).is_err());
        assert!(l.narrow(2, 0, 1).is_err());
        assert!(l.permute(&[0, 0]).is_err());
    }
}
