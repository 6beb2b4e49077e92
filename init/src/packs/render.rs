//! (placeholder until rendering lands)
use super::model::{JobDecl, Rendered};
use super::pack::Pack;

pub struct RenderContext {
    pub datacenters: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct RenderError(String);

pub fn render(pack: &Pack, job: &JobDecl, _ctx: &RenderContext) -> Result<Rendered, RenderError> {
    Err(RenderError(format!("{} {}", pack.name, job.name)))
}
