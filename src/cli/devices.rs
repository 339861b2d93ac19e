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
        }
        Err(e) => println!("cuda: unavailable ({e})"),
    }
    Ok(())
}
