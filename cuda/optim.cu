// The optimizer step on the device: Adam(W) over f32 master weights, in place, one thread per
// element, with the global-norm clipping factor folded into the gradient read.
#include "common.cuh"

namespace automoe {
namespace optim {

__device__ void adam(const AdamParams& p) {
    float* w = ptr<float>(p.w);
    const float* g = ptr<const float>(p.g);
    float* m = ptr<float>(p.m);
    float* v = ptr<float>(p.v);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < p.n; i += (long long)gridDim.x * blockDim.x) {
        const float wi = w[i];
        float gi = p.grad_scale * g[i];
        if (!p.decoupled) gi += p.weight_decay * wi;
        const float mi = p.beta1 * m[i] + (1.0f - p.beta1) * gi;
        const float vi = p.beta2 * v[i] + (1.0f - p.beta2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        float nw = wi - p.lr * (mi / p.bc1) / (sqrtf(vi / p.bc2) + p.eps);
        if (p.decoupled) nw -= p.lr * p.weight_decay * wi;
        w[i] = nw;
    }
}

}  // namespace optim
}  // namespace automoe

extern "C" __global__ void adam_f32(AdamParams p) { automoe::optim::adam(p); }
