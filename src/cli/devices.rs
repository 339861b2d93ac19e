//! `automoe devices`: what this build can run on.

/// Arguments of `automoe devices` (none).
#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args) -> crate::Result<()> {
    println!("cpu: {} threads (rayon)", rayon::current_num_threads());
    println!("emu: the CUDA kernels on the SIMT emulator (always present; slow, for tests)");
    match crate::cuda::device_count() {
        Ok(n) => {
            for i in 0..n {
                match crate::cuda::describe_device(i) {
                    Ok(d) => println!("cuda:{i} ({d})"),
                    Err(e) => println!("cuda:{i} (unusable: {e})"),
                }
            }
            if n > 0 {
                // What a device also needs at run time: NVRTC compiles every kernel at first use,
                // cuBLAS runs the dense products.
                match crate::cuda::nvrtc::version() {
                    Ok((major, minor)) => println!("nvrtc: {major}.{minor}"),
                    Err(e) => println!("nvrtc: unavailable ({e})"),
                }
                // SAFETY: only probes whether the library can be loaded.
                let blas = unsafe { cudarc::cublas::sys::is_culib_present() };
                println!("cublas: {}", if blas { "available" } else { "unavailable (libcublas.so.13 cannot be loaded)" });
            }
        }
        Err(e) => println!("cuda: unavailable ({e})"),
    }
    Ok(())
}
