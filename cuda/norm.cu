// Layer normalisation over the last dimension d of [rows, d], forward and backward, as
// src/cpu/norm.rs: mean and biased variance per row, rstd = 1 / sqrt(var + eps),
// y = (x - mean) * rstd * gamma + beta.
// fwd and bwd: one warp per row (grid-strided over rows), any d >= 1; each lane walks the columns
// lane, lane + 32, ... in order and a fixed xor butterfly combines the lanes. dparams: one thread per
// column, looping over the rows in order. No atomics: the same inputs give the same bits every run.
#include "common.cuh"

namespace automoe {
namespace norm {

__device__ __forceinline__ int warps_per_grid() { return (int)(gridDim.x * (blockDim.x >> 5)); }
__device__ __forceinline__ int first_warp() { return (int)(blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5)); }

template <class T>
__device__ __forceinline__ void fwd(const LayerNormParams& p) {
    const T* x = ptr<const T>(p.x);          // [rows, d]
    const T* gamma = ptr<const T>(p.gamma);  // [d]
    const T* beta = ptr<const T>(p.beta);    // [d]
    T* y = ptr<T>(p.y);                      // [rows, d]
    float* mean = ptr<float>(p.mean);        // [rows]
    float* rstd = ptr<float>(p.rstd);        // [rows]
    const int d = p.d;
    const int lane = (int)lane_id();
    if (d <= 0) return;
    // The loop bound is the same for every lane of a warp, so the shuffles stay convergent.
    for (int r = first_warp(); r < p.rows; r += warps_per_grid()) {
        const size_t row = (size_t)r * (size_t)d;
        float s = 0.0f;
        for (int j = lane; j < d; j += 32) s += to_f32(x[row + j]);
        const float mu = warp_sum(s) / (float)d;
        float v = 0.0f;
        for (int j = lane; j < d; j += 32) {
            const float c = to_f32(x[row + j]) - mu;
            v += c * c;
        }
        const float var = warp_sum(v) / (float)d;
        const float rs = 1.0f / sqrtf(var + p.eps);
        for (int j = lane; j < d; j += 32) {
            const float xhat = (to_f32(x[row + j]) - mu) * rs;
            y[row + j] = from_f32<T>(xhat * to_f32(gamma[j]) + to_f32(beta[j]));
        }
        if (lane == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
    }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * gamma.
template <class T>
__device__ __forceinline__ void bwd(const LayerNormParams& p) {
    const T* x = ptr<const T>(p.x);            // [rows, d]
    const T* gamma = ptr<const T>(p.gamma);    // [d]
    const float* mean = ptr<const float>(p.mean);  // [rows]
    const float* rstd = ptr<const float>(p.rstd);  // [rows]
    const T* dy = ptr<const T>(p.dy);          // [rows, d]
    T* dx = ptr<T>(p.dx);                      // [rows, d]
    const int d = p.d;
    const int lane = (int)lane_id();
    if (d <= 0) return;
    for (int r = first_warp(); r < p.rows; r += warps_per_grid()) {
        const size_t row = (size_t)r * (size_t)d;
        const float mu = mean[r];
        const float rs = rstd[r];
        float sg = 0.0f;
        float sgx = 0.0f;
        for (int j = lane; j < d; j += 32) {
            const float xhat = (to_f32(x[row + j]) - mu) * rs;
            const float g = to_f32(dy[row + j]) * to_f32(gamma[j]);
            sg += g;
            sgx += g * xhat;
        }
        const float mg = warp_sum(sg) / (float)d;
        const float mgx = warp_sum(sgx) / (float)d;
        for (int j = lane; j < d; j += 32) {
            const float xhat = (to_f32(x[row + j]) - mu) * rs;
            const float g = to_f32(dy[row + j]) * to_f32(gamma[j]);
            dx[row + j] = from_f32<T>(rs * (g - mg - xhat * mgx));
        }
    }
}

// dgamma[j] = sum_r dy[r, j] * xhat[r, j], dbeta[j] = sum_r dy[r, j]: one thread per column
// (grid-strided), rows in order. Neighbouring threads read neighbouring columns (coalesced).
template <class T>
__device__ __forceinline__ void dparams(const LayerNormParams& p) {
    const T* x = ptr<const T>(p.x);                // [rows, d]
    const float* mean = ptr<const float>(p.mean);  // [rows]
    const float* rstd = ptr<const float>(p.rstd);  // [rows]
    const T* dy = ptr<const T>(p.dy);              // [rows, d]
    T* dgamma = ptr<T>(p.dgamma);                  // [d]
    T* dbeta = ptr<T>(p.dbeta);                    // [d]
    const int d = p.d;
    const int stride = (int)(gridDim.x * blockDim.x);
    for (int j = (int)(blockIdx.x * blockDim.x + threadIdx.x); j < d; j += stride) {
        float dg = 0.0f;
        float db = 0.0f;
        for (int r = 0; r < p.rows; ++r) {
            const size_t i = (size_t)r * (size_t)d + (size_t)j;
            const float g = to_f32(dy[i]);
            dg += g * ((to_f32(x[i]) - mean[r]) * rstd[r]);
            db += g;
        }
        dgamma[j] = from_f32<T>(dg);
        dbeta[j] = from_f32<T>(db);
    }
}

}  // namespace norm
}  // namespace automoe

extern "C" __global__ void layer_norm_fwd_f32(LayerNormParams p) { automoe::norm::fwd<float>(p); }
extern "C" __global__ void layer_norm_fwd_bf16(LayerNormParams p) { automoe::norm::fwd<__nv_bfloat16>(p); }
extern "C" __global__ void layer_norm_bwd_f32(LayerNormParams p) { automoe::norm::bwd<float>(p); }
extern "C" __global__ void layer_norm_bwd_bf16(LayerNormParams p) { automoe::norm::bwd<__nv_bfloat16>(p); }
extern "C" __global__ void layer_norm_dparams_f32(LayerNormParams p) { automoe::norm::dparams<float>(p); }
extern "C" __global__ void layer_norm_dparams_bf16(LayerNormParams p) { automoe::norm::dparams<__nv_bfloat16>(p); }
