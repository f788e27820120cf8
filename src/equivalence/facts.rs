//! Gate 2, fact coverage: the atomic facts of the reference answer — numbers and dates, quoted
//! strings and code spans, named entities (runs of capitalised words), and key phrases (content
//! words) — and the share of them the other answer also states. Deterministic and free, so it
//! runs on every sample; it catches the failure the embedding gate is blind to, a changed number.

use crate::text::terms;
use async_trait::async_trait;

use super::gates::{Case, Gate, GateFinding};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FactKind {
    Number,
    Quoted,
    Entity,
    KeyPhrase,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub kind: FactKind,
    /// Normalised form, as matched.
    pub text: String,
}

/// Key phrases beyond this many add noise, not signal: long answers share many words.
const MAX_KEY_PHRASES: usize = 12;

fn normalise(text: &str) -> String {
    text.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '.' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .map(|w| w.trim_matches('.'))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

fn number_form(word: &str) -> Option<String> {
    let core = word.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    core.chars()
        .any(|c| c.is_ascii_digit())
        .then(|| core.replace(',', "").to_lowercase())
}

/// Everything the reference answer asserts that a faithful answer must repeat.
pub fn extract(answer: &str) -> Vec<Fact> {
    let mut facts: Vec<Fact> = Vec::new();
    let mut push = |kind: FactKind, text: String| {
        if !text.is_empty() && !facts.iter().any(|f| f.text == text) {
            facts.push(Fact { kind, text });
        }
    };
    for word in answer.split_whitespace() {
        if let Some(n) = number_form(word) {
            push(FactKind::Number, n);
        }
    }
    for quote in ['"', '`'] {
        for (i, part) in answer.split(quote).enumerate() {
            if i % 2 == 1 && part.len() <= 200 {
                push(FactKind::Quoted, normalise(part));
            }
        }
    }
    let words: Vec<&str> = answer.split_whitespace().collect();
    let mut run: Vec<&str> = Vec::new();
    let mut sentence_start = true;
    for word in &words {
        let clean = word.trim_matches(|c: char| !c.is_alphanumeric());
        let capitalised = clean.chars().next().is_some_and(char::is_uppercase);
        let is_stop = terms(clean).is_empty();
        if capitalised && !(sentence_start && is_stop) && number_form(word).is_none() {
            run.push(clean);
        } else if !run.is_empty() {
            push(FactKind::Entity, normalise(&run.join(" ")));
            run.clear();
        }
        sentence_start = word.ends_with(['.', '!', '?', ':']);
        if sentence_start && !run.is_empty() {
            push(FactKind::Entity, normalise(&run.join(" ")));
            run.clear();
        }
    }
    if !run.is_empty() {
        push(FactKind::Entity, normalise(&run.join(" ")));
    }
    let mut key = 0;
    for term in terms(answer) {
        if key >= MAX_KEY_PHRASES {
            break;
        }
        if term.len() >= 5 && number_form(&term).is_none() {
            key += 1;
            push(FactKind::KeyPhrase, term);
        }
    }
    facts
}

/// Share of the reference's facts found in the candidate (1.0 when the reference has none), and
/// the facts missing.
pub fn coverage(reference: &str, candidate: &str) -> (f32, Vec<Fact>) {
    let facts = extract(reference);
    if facts.is_empty() {
        return (1.0, Vec::new());
    }
    let haystack = format!(" {} ", normalise(&candidate.replace(',', "")));
    let missing: Vec<Fact> = facts
        .iter()
        .filter(|f| {
            let needle = match f.kind {
                // Key phrases match on a stem, so "compressed" covers "compression".
                FactKind::KeyPhrase => f.text.chars().take(6).collect::<String>(),
                _ => f.text.clone(),
            };
            let found = match f.kind {
                FactKind::KeyPhrase => haystack.contains(&format!(" {needle}")),
                _ => haystack.contains(&format!(" {needle} ")),
            };
            !found
        })
        .cloned()
        .collect();
    let found = facts.len() - missing.len();
    (found as f32 / facts.len() as f32, missing)
}

/// The fact-coverage gate (`facts`): runs on every sample, free and deterministic.
pub struct FactsGate;

#[async_trait]
impl Gate for FactsGate {
    fn name(&self) -> &'static str {
        "facts"
    }

    async fn check(&self, case: &Case<'_>) -> GateFinding {
        let reference = case.reference.text.trim();
        let (share, missing) = coverage(reference, case.candidate.text.trim());
        GateFinding {
            score: Some(share),
            missing_facts: missing.into_iter().map(|f| f.text).collect(),
            ..GateFinding::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extracts_numbers_entities_and_quotes() {
        let facts = extract("The Eiffel Tower opened on 31 March 1889 and cost 7,799,401 francs. Call `tower_height()`.");
        let texts: Vec<&str> = facts.iter().map(|f| f.text.as_str()).collect();
        assert!(texts.contains(&"1889"));
        assert!(texts.contains(&"7799401"));
        assert!(texts.contains(&"eiffel tower"));
        assert!(texts.contains(&"tower height"));
        assert!(!texts.contains(&"the"));
    }

    #[test]
    fn a_changed_number_is_missing() {
        let reference = "Revenue grew 12% to $4.2 billion in 2023.";
        let (same, _) = coverage(
            reference,
            "In 2023 revenue grew 12%, reaching $4.2 billion.",
        );
        assert_eq!(same, 1.0);
        let (changed, missing) = coverage(reference, "Revenue grew 15% to $4.2 billion in 2023.");
        assert!(changed < 1.0);
        assert!(missing.iter().any(|f| f.text == "12"));
    }

    #[test]
    fn empty_reference_covers_trivially() {
        assert_eq!(coverage("", "anything").0, 1.0);
        assert!(coverage("Paris is the capital of France.", "I don't know.").0 < 0.55);
    }
}
