//! `rewrite`: a small model (in-process or on an inference server) rewrites the text shorter
//! (the seed project's method): the model's chat template, a fixed instruction naming the question and a word budget, greedy decoding
//! (deterministic, so the cache and provider prompt caches stay stable), and optionally a GGUF
//! LoRA adapter trained for the task. Guards: empty output, output over the budget or not
//! shorter than the input, or output that drops a number the text and the question share, is
//! rejected — then the configured fallback compressor runs instead (e.g. `extractive`), and
//! without one the request fails open. Generation runs at tens of tokens per second on CPU, so
//! this compressor belongs in background mode there, inline only on a GPU.

use std::sync::Arc;
use std::time::Duration;

use super::registry::{build_plain, ModelParts};
use super::{CompressError, CompressInput, Compressor};
use crate::llm::{ChatTurn, ModelBackend};

pub struct Rewrite {
    model: Arc<dyn ModelBackend>,
    pub timeout: Duration,
    fallback: Option<Arc<dyn Compressor>>,
}

/// The model's tokens run longer than o200k's; allow this many model tokens per target token.
const MODEL_TOKENS_PER_TARGET: f64 = 1.4;
/// Output may exceed the target by this share before it counts as over budget.
const BUDGET_SLACK: f64 = 1.15;

const INSTRUCTION: &str = "You compress documents for another AI model. Rewrite the user's \
text as briefly as possible while keeping every fact needed to answer the question below: \
names, numbers, dates, identifiers and code stay exactly as written. Drop everything else. \
Output only the compressed text, no preamble.";

/// The chat turns the model rewrites from: the instruction with the question and a word budget
/// (from `target_tokens`, o200k), then the text. `condenser-train` lays out its `rewrite`
/// training examples with this function, so an adapter sees at serving time what it learned on.
pub fn prompt(query: &str, text: &str, target_tokens: usize) -> [ChatTurn; 2] {
    let words = (target_tokens as f64 * 0.75).max(8.0) as usize;
    let system = format!(
        "{INSTRUCTION}\n\nQuestion: {}\nLength: at most {words} words.",
        query.trim()
    );
    [ChatTurn::new("system", system), ChatTurn::new("user", text)]
}

/// The registry's builder (`[compressors.rewrite]`, with its optional `fallback`).
pub fn build(parts: &ModelParts<'_>) -> Result<Arc<dyn Compressor>, String> {
    let fallback = parts.settings.fallback.and_then(build_plain);
    Ok(Arc::new(Rewrite::new(
        parts.model.backend(),
        parts.deadline(),
        fallback,
    )))
}

impl Rewrite {
    pub fn new(
        model: Arc<dyn ModelBackend>,
        timeout: Duration,
        fallback: Option<Arc<dyn Compressor>>,
    ) -> Self {
        Self {
            model,
            timeout,
            fallback,
        }
    }

    /// The model's rewrite, or why it cannot be used.
    fn generate(&self, input: &CompressInput<'_>) -> Result<String, String> {
        let max_tokens = (input.target_tokens as f64 * MODEL_TOKENS_PER_TARGET).ceil() as usize;
        let turns = prompt(input.query, input.text, input.target_tokens);
        let out = self
            .model
            .generate(&turns, max_tokens.max(16), self.timeout)
            .map_err(|e| e.to_string())?;
        let text = out.text.trim().to_string();
        if text.is_empty() {
            return Err("empty rewrite".into());
        }
        let tokens = input.tokenizer.count(&text);
        let budget = (input.target_tokens as f64 * BUDGET_SLACK).ceil() as usize;
        if tokens > budget || tokens >= input.tokenizer.count(input.text) {
            return Err(format!(
                "rewrite has {tokens} tokens; the budget is {}",
                input.target_tokens
            ));
        }
        if let Some(number) = lost_number(input.text, input.query, &text) {
            return Err(format!(
                "rewrite dropped `{number}`, which the question asks about"
            ));
        }
        Ok(text)
    }
}

/// A number that appears in both the text and the question but not in the rewrite.
fn lost_number<'a>(text: &str, query: &'a str, rewrite: &str) -> Option<&'a str> {
    query
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '.')
        .map(|w| w.trim_matches('.'))
        .filter(|w| w.chars().any(|c| c.is_ascii_digit()))
        .find(|n| text.contains(n) && !rewrite.contains(n))
}

impl Compressor for Rewrite {
    fn name(&self) -> &'static str {
        "rewrite"
    }

    fn handles_code(&self) -> bool {
        false
    }

    fn query_aware(&self) -> bool {
        true
    }

    fn blocking(&self) -> bool {
        true
    }

    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError> {
        match self.generate(input) {
            Ok(text) => Ok(text),
            Err(reason) => match &self.fallback {
                Some(fallback) => {
                    tracing::debug!(%reason, fallback = fallback.name(), "rewrite rejected; using the fallback");
                    fallback.compress(input)
                }
                None => Err(CompressError::Failed {
                    compressor: "rewrite",
                    reason,
                }),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::lost_number;

    #[test]
    fn a_number_the_question_needs_must_survive() {
        let text = "The budget for 2024 was 4.2 million; in 2023 it was 3.9 million.";
        assert_eq!(
            lost_number(text, "What was the budget in 2024?", "Budget: 4.2M."),
            Some("2024")
        );
        assert_eq!(
            lost_number(text, "What was the budget in 2024?", "2024: 4.2M."),
            None
        );
        assert_eq!(lost_number(text, "What was the budget?", "4.2M."), None);
    }
}
