//! `automoe train-supernet`: the weight-sharing supernet of a search space, one uniformly sampled
//! subnet per update; the result is the supernet checkpoint in `--out/checkpoint`.

use super::train::{print_summary, CommonArgs};
use crate::train::mt::Mode;
use crate::Result;

/// Arguments of `automoe train-supernet`.
#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    #[command(flatten)]
    pub common: CommonArgs,
}

pub fn run(args: Args) -> Result<()> {
    let space = args.common.space()?;
    let spec = args.common.spec(Mode::Supernet { space })?;
    let summary = args.common.execute(&spec)?;
    print_summary(&summary, args.common.quiet);
    Ok(())
}
