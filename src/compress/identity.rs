//! `identity`: returns its input. The control arm for evaluation and shadow comparisons.

use super::{CompressError, CompressInput, Compressor};

pub struct Identity;

impl Compressor for Identity {
    fn name(&self) -> &'static str {
        "identity"
    }

    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError> {
        Ok(input.text.to_string())
    }
}
