//! Dense products of CUDA tensors: cuBLAS (`cublasGemmStridedBatchedEx`, f32 or bf16 operands,
//! f32 compute) on a device. The emulator has no cuBLAS, so it runs a plain host implementation of
//! the same column-major call: the row-major-to-cuBLAS mapping below (operand swap, transposes,
//! leading dimensions, batch strides) is what the emulator tests exercise.

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};

use super::{copy_contiguous, output, same_gpu, storage, wrap};
use crate::cuda::abi::automoe_dptr;
use crate::cuda::gpu::Gpu;
use crate::tensor::{broadcast_shape, DType, Layout, Tensor};
use crate::{Error, Result};

/// One column-major strided-batched GEMM: C_i = op(A_i) op(B_i), C is m x n, op(A) m x k.
#[derive(Clone, Copy, Debug)]
struct GemmCall {
    trans_a: bool,
    trans_b: bool,
    m: usize,
    n: usize,
    k: usize,
    a: automoe_dptr,
    lda: usize,
    stride_a: usize,
    b: automoe_dptr,
    ldb: usize,
    stride_b: usize,
    c: automoe_dptr,
    ldc: usize,
    stride_c: usize,
    batch: usize,
}

/// How a row-major `[rows, cols]` view of an operand sits in memory for cuBLAS: `col_major_view`
/// says whether reading it column-major with `ld` gives the matrix itself (true) or its transpose.
struct Operand {
    col_major_view: bool,
    ld: usize,
}

fn operand(l: &Layout) -> Option<Operand> {
    let r = l.rank();
    let (rows, cols) = (l.shape()[r - 2], l.shape()[r - 1]);
    let (rs, cs) = (l.strides()[r - 2], l.strides()[r - 1]);
    if (cs == 1 || cols == 1) && (rows == 1 || rs >= cols.max(1)) {
        // Row-major: column-major reading with ld = row stride gives the transpose.
        Some(Operand { col_major_view: false, ld: if rows == 1 { cols.max(1) } else { rs } })
    } else if (rs == 1 || rows == 1) && (cols == 1 || cs >= rows.max(1)) {
        Some(Operand { col_major_view: true, ld: if cols == 1 { rows.max(1) } else { cs } })
    } else {
        None
    }
}

/// Batch offsets of a view broadcast to `batch_shape`, as (first offset, stride) when they form an
/// arithmetic progression (one strided-batched call), or `None`.
fn batch_progression(l: &Layout, batch_shape: &[usize]) -> Result<Option<(usize, usize)>> {
    let r = l.rank();
    let mut shape = batch_shape.to_vec();
    shape.extend_from_slice(&l.shape()[r - 2..]);
    let b = l.broadcast_to(&shape)?;
    let nb = batch_shape.len();
    let batch_layout = Layout::new(batch_shape.to_vec(), b.strides()[..nb].to_vec(), b.offset());
    let offs = batch_layout.offsets();
    if offs.len() <= 1 {
        return Ok(Some((b.offset(), 0)));
    }
    let step = offs[1].wrapping_sub(offs[0]);
    let arithmetic = offs.windows(2).all(|w| w[1].wrapping_sub(w[0]) == step) && offs[1] >= offs[0];
    Ok(arithmetic.then_some((offs[0], step)))
}

/// `a @ b` for `[..., m, k] @ [..., k, n]` with broadcast batch dims; transposed and sliced views
/// are read in place when their inner dimension is unit-stride.
pub fn matmul(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    const OP: &str = "matmul";
    if a.rank() < 2 || b.rank() < 2 {
        return Err(Error::invalid(OP, format!("operands need rank >= 2, got {:?} and {:?}", a.shape(), b.shape())));
    }
    let (ra, rb) = (a.rank(), b.rank());
    let (m, k, k2, n) = (a.shape()[ra - 2], a.shape()[ra - 1], b.shape()[rb - 2], b.shape()[rb - 1]);
    if k != k2 {
        return Err(Error::ShapeMismatch { op: OP, lhs: a.shape().to_vec(), rhs: b.shape().to_vec() });
    }
    let gpu = same_gpu(OP, &[a, b])?;
    let batch_shape = broadcast_shape(OP, &a.shape()[..ra - 2], &b.shape()[..rb - 2])?;
    let batch: usize = batch_shape.iter().product();
    let mut out_shape = batch_shape.clone();
    out_shape.extend_from_slice(&[m, n]);
    let (out, c) = output(&gpu, a.dtype(), &out_shape)?;
    if batch * m * n == 0 {
        return Ok(wrap(out, &out_shape));
    }
    if k == 0 {
        return super::full(&gpu, &out_shape, 0.0, a.dtype());
    }
    // Operands whose inner matrix is not unit-stride in either direction are copied first.
    let fix = |t: &Tensor| -> Result<Tensor> {
        if operand(t.layout()).is_some() {
            Ok(t.clone())
        } else {
            copy_contiguous(t)
        }
    };
    let (mut a, mut b) = (fix(a)?, fix(b)?);
    let (mut pa, mut pb) = (batch_progression(a.layout(), &batch_shape)?, batch_progression(b.layout(), &batch_shape)?);
    // A batch layout no single stride describes (e.g. one operand broadcast over an inner batch
    // dim) is materialised at the full batch shape, which is contiguous and so arithmetic.
    let expand = |t: &Tensor| -> Result<Tensor> {
        let mut full = batch_shape.clone();
        full.extend_from_slice(&t.shape()[t.rank() - 2..]);
        copy_contiguous(&t.broadcast_to(&full)?)
    };
    if pa.is_none() {
        a = expand(&a)?;
        pa = batch_progression(a.layout(), &batch_shape)?;
    }
    if pb.is_none() {
        b = expand(&b)?;
        pb = batch_progression(b.layout(), &batch_shape)?;
    }
    let ((a0, sa), (b0, sb)) =
        (pa.ok_or_else(|| Error::invalid(OP, "batch layout"))?, pb.ok_or_else(|| Error::invalid(OP, "batch layout"))?);
    let (oa, ob) = (
        operand(a.layout()).unwrap_or(Operand { col_major_view: false, ld: k }),
        operand(b.layout()).unwrap_or(Operand { col_major_view: false, ld: n }),
    );
    let elem = a.dtype().size_in_bytes();
    // Row-major C = A B is column-major C^T = B^T A^T: cuBLAS's first operand is B. Read
    // column-major, a row-major B is already B^T (no transpose); a column-major view is B itself.
    let call = GemmCall {
        trans_a: ob.col_major_view,
        trans_b: oa.col_major_view,
        m: n,
        n: m,
        k,
        a: storage(OP, &b)?.addr_at(0) + (b0 * elem) as automoe_dptr,
        lda: ob.ld,
        stride_a: sb,
        b: storage(OP, &a)?.addr_at(0) + (a0 * elem) as automoe_dptr,
        ldb: oa.ld,
        stride_b: sa,
        c,
        ldc: n,
        stride_c: m * n,
        batch,
    };
    run(&gpu, a.dtype(), &call)?;
    Ok(wrap(out, &out_shape))
}

fn run(gpu: &Gpu, dtype: DType, g: &GemmCall) -> Result<()> {
    match gpu {
        Gpu::Emu(_) => {
            // SAFETY: the emulator's buffers are host memory; every address and extent in `g` was
            // derived from live tensors' layouts above.
            unsafe {
                match dtype {
                    DType::F32 => host_gemm::<f32>(g),
                    DType::BF16 => host_gemm::<half::bf16>(g),
                    DType::F64 => return Err(Error::invalid("matmul", "the CUDA kernels have no f64")),
                }
            }
            Ok(())
        }
        Gpu::Device(x) => {
            let blas = x.blas()?;
            let ty = match dtype {
                DType::F32 => cudaDataType::CUDA_R_32F,
                DType::BF16 => cudaDataType::CUDA_R_16BF,
                DType::F64 => return Err(Error::invalid("matmul", "the CUDA kernels have no f64")),
            };
            let op = |t: bool| if t { cublasOperation_t::CUBLAS_OP_T } else { cublasOperation_t::CUBLAS_OP_N };
            let (alpha, beta) = (1.0f32, 0.0f32);
            let int =
                |v: usize| i32::try_from(v).map_err(|_| Error::invalid("matmul", format!("dimension {v} exceeds cuBLAS's 32-bit sizes")));
            // SAFETY: addresses are live device allocations of this device; sizes and strides were
            // derived from the operands' layouts; the handle is bound to this device's stream.
            unsafe {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *blas.handle(),
                    op(g.trans_a),
                    op(g.trans_b),
                    int(g.m)?,
                    int(g.n)?,
                    int(g.k)?,
                    (&alpha) as *const f32 as *const _,
                    g.a as *const _,
                    ty,
                    int(g.lda)?,
                    g.stride_a as i64,
                    g.b as *const _,
                    ty,
                    int(g.ldb)?,
                    g.stride_b as i64,
                    (&beta) as *const f32 as *const _,
                    g.c as *mut _,
                    ty,
                    int(g.ldc)?,
                    g.stride_c as i64,
                    int(g.batch)?,
                    cublasComputeType_t::CUBLAS_COMPUTE_32F,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DFALT,
                )
            }
            .map_err(|e| Error::Cuda(format!("cuBLAS gemm ({} x {} x {}, batch {}): {e}", g.m, g.n, g.k, g.batch)))
        }
    }
}

/// The emulator's stand-in for cuBLAS: the column-major strided-batched GEMM as cuBLAS defines
/// it, f32 accumulation in k order.
///
/// # Safety
/// Every element the call's sizes, leading dimensions and strides address must be live host memory.
unsafe fn host_gemm<T: crate::cuda::moe_ops::KernelFloat>(g: &GemmCall) {
    let (pa, pb, pc) = (g.a as usize as *const T, g.b as usize as *const T, g.c as usize as *mut T);
    for i in 0..g.batch {
        for col in 0..g.n {
            for row in 0..g.m {
                let mut acc = 0f32;
                for p in 0..g.k {
                    // op(A)[row, p] and op(B)[p, col], column-major.
                    let ai = if g.trans_a { p + row * g.lda } else { row + p * g.lda };
                    let bi = if g.trans_b { col + p * g.ldb } else { p + col * g.ldb };
                    // SAFETY: in bounds by this function's contract.
                    acc += unsafe { (*pa.add(i * g.stride_a + ai)).to_f32() * (*pb.add(i * g.stride_b + bi)).to_f32() };
                }
                // SAFETY: as above.
                unsafe { *pc.add(i * g.stride_c + row + col * g.ldc) = T::from_f32(acc) };
            }
        }
    }
}
