//! Gate 3, the LLM judge: a fixed rubric asks a configured model whether the candidate answer
//! conveys what the reference does, as JSON `{"verdict", "score", "missing_facts"}`. A reply that
//! is not that JSON is a failed gate, never a middle score: a judge that cannot follow the rubric
//! is no evidence of equivalence.

use serde::Deserialize;
use std::sync::Arc;

use async_trait::async_trait;

use super::gates::{Case, Gate, GateFinding};
use super::JudgeClient;

pub const JUDGE_SYSTEM_PROMPT: &str = "You compare two answers to the same request. Answer A is \
the reference. Decide whether answer B would serve the user as well as answer A: the same facts, \
numbers, names, conclusions and, for code, the same behaviour. Wording, order and formatting may \
differ. Reply with JSON only, no prose: {\"verdict\": \"equivalent\" or \"different\", \"score\": \
a number from 0 to 1, \"missing_facts\": [facts of A that B lacks or contradicts]}";

pub fn judge_user_prompt(request: &str, reference: &str, candidate: &str) -> String {
    format!("Request:\n{request}\n\nAnswer A (reference):\n{reference}\n\nAnswer B:\n{candidate}")
}

#[derive(Debug, Clone, PartialEq)]
pub struct JudgeVerdict {
    pub equivalent: bool,
    pub score: f32,
    pub missing_facts: Vec<String>,
}

#[derive(Deserialize)]
struct RawVerdict {
    verdict: String,
    score: f64,
    #[serde(default)]
    missing_facts: Vec<String>,
}

/// Reads the judge's reply; the JSON may be wrapped in a code fence or surrounded by prose.
pub fn parse_verdict(reply: &str) -> Result<JudgeVerdict, String> {
    let start = reply
        .find('{')
        .ok_or("no JSON object in the judge's reply")?;
    let end = reply
        .rfind('}')
        .ok_or("no JSON object in the judge's reply")?;
    if end < start {
        return Err("no JSON object in the judge's reply".into());
    }
    let raw: RawVerdict =
        serde_json::from_str(&reply[start..=end]).map_err(|e| format!("judge reply: {e}"))?;
    let equivalent = match raw.verdict.trim().to_ascii_lowercase().as_str() {
        "equivalent" => true,
        "different" => false,
        other => {
            return Err(format!(
                "judge verdict `{other}` is not equivalent/different"
            ))
        }
    };
    if !(0.0..=1.0).contains(&raw.score) {
        return Err(format!("judge score {} is outside 0..1", raw.score));
    }
    Ok(JudgeVerdict {
        equivalent,
        score: raw.score as f32,
        missing_facts: raw.missing_facts,
    })
}

/// The LLM-judge gate (`judge`), when `shadow.judge_model` is configured. Its call is paid for
/// whether or not the reply follows the rubric.
pub struct JudgeGate(pub Arc<dyn JudgeClient>);

#[async_trait]
impl Gate for JudgeGate {
    fn name(&self) -> &'static str {
        "judge"
    }

    async fn check(&self, case: &Case<'_>) -> GateFinding {
        let user = judge_user_prompt(
            case.request,
            case.reference.text.trim(),
            case.candidate.text.trim(),
        );
        let reply = self.0.ask(JUDGE_SYSTEM_PROMPT, &user).await;
        let model_tokens = reply
            .as_ref()
            .ok()
            .map(|r| (r.prompt_tokens, r.completion_tokens));
        match reply.and_then(|r| parse_verdict(&r.text)) {
            Ok(v) => GateFinding {
                // A "different" verdict fails whatever score came with it.
                score: Some(if v.equivalent {
                    v.score
                } else {
                    v.score.min(0.0)
                }),
                missing_facts: v.missing_facts,
                model_tokens,
                error: None,
            },
            Err(e) => GateFinding {
                error: Some(e),
                model_tokens,
                ..GateFinding::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fenced_json() {
        let v = parse_verdict(
            "```json\n{\"verdict\":\"equivalent\",\"score\":0.9,\"missing_facts\":[]}\n```",
        )
        .expect("parses");
        assert!(v.equivalent);
        assert!((v.score - 0.9).abs() < 1e-6);
    }

    #[test]
    fn malformed_replies_are_errors_not_scores() {
        assert!(parse_verdict("They look the same to me.").is_err());
        assert!(parse_verdict("{\"verdict\":\"maybe\",\"score\":0.5}").is_err());
        assert!(parse_verdict("{\"verdict\":\"different\",\"score\":7}").is_err());
        let v =
            parse_verdict("{\"verdict\":\"different\",\"score\":0.2,\"missing_facts\":[\"1889\"]}")
                .expect("parses");
        assert_eq!(v.missing_facts, vec!["1889"]);
    }
}
