//! HotPotQA loader (official distractor-dev fields: `_id, question, answer, supporting_facts,
//! context[[title, [sentences]]]`). A context is rendered as `Title: sentences` paragraphs
//! separated by blank lines, the way a RAG application would pass retrieved passages.

use std::io::BufRead;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct Example {
    #[serde(rename = "_id")]
    pub id: String,
    pub question: String,
    pub answer: String,
    pub supporting_facts: Vec<(String, usize)>,
    pub context: Vec<(String, Vec<String>)>,
}

impl Example {
    pub fn render_context(&self) -> String {
        self.context
            .iter()
            .map(|(title, sentences)| format!("{title}: {}", sentences.concat().trim()))
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// The supporting sentences' text, trimmed.
    pub fn supporting_sentences(&self) -> Vec<String> {
        self.supporting_facts
            .iter()
            .filter_map(|(title, index)| {
                let (_, sentences) = self.context.iter().find(|(t, _)| t == title)?;
                sentences.get(*index).map(|s| s.trim().to_string())
            })
            .filter(|s| !s.is_empty())
            .collect()
    }

    pub fn is_yes_no(&self) -> bool {
        matches!(self.answer.trim().to_lowercase().as_str(), "yes" | "no")
    }
}

pub fn load(path: &Path) -> anyhow::Result<Vec<Example>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let example: Example = serde_json::from_str(&line)
            .with_context(|| format!("{}: line {}", path.display(), n + 1))?;
        out.push(example);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_official_fields_and_renders_paragraphs() {
        let line = r#"{"_id": "x1", "answer": "yes", "question": "Q?", "supporting_facts": [["A", 1]], "context": [["A", ["First.", " Second."]], ["B", ["Other."]]], "type": "comparison", "level": "easy"}"#;
        let ex: Example = serde_json::from_str(line).expect("parse");
        assert_eq!(ex.render_context(), "A: First. Second.\n\nB: Other.");
        assert_eq!(ex.supporting_sentences(), vec!["Second."]);
        assert!(ex.is_yes_no());
    }
}
