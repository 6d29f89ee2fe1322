use super::Ctx;
#[derive(Debug, clap::Args)]
pub struct Args {}
#[derive(Debug, clap::Args)]
pub struct ChildArgs {}
pub(crate) fn run(_ctx: &Ctx, _a: Args) -> anyhow::Result<u8> { Ok(0) }
pub(crate) fn child(_ctx: &Ctx, _a: ChildArgs) -> anyhow::Result<u8> { Ok(0) }
