//! `extractive`: query-aware sentence selection. Sentences are ranked by BM25 against the user's
//! question, blended with their paragraph's BM25 (a relevant paragraph's other sentences usually
//! carry the answer, often through pronouns) and a second-hop expansion with the entities of the
//! best sentences (multi-hop questions name only the first hop). The best sentences that fit the
//! token budget are kept, in their original order. Without a question, the document's own
//! top TF-IDF terms stand in for it, which gives a centroid summary. Line-structured text
//! (numbered file reads, logs) is selected by whole lines instead (`lines`).

use std::collections::HashMap;

use super::lines;
use super::truncate::Truncate;
use super::{CompressError, CompressInput, Compressor};
use crate::text::{sentences, terms};

/// Weight of a line's window (`lines::WINDOW` lines) in its score, in line mode.
const LINE_WINDOW_WEIGHT: f64 = 0.5;

#[derive(Debug, Clone)]
pub struct Extractive {
    /// Weight of the paragraph's relevance in a sentence's score.
    pub paragraph_weight: f64,
    /// Weight of second-hop terms taken from the best first-pass sentences.
    pub expansion_weight: f64,
    /// Bonus for a paragraph's first sentence, which usually names its subject.
    pub lead_bonus: f64,
}

impl Default for Extractive {
    fn default() -> Self {
        Self {
            paragraph_weight: 2.5,
            expansion_weight: 0.5,
            lead_bonus: 0.15,
        }
    }
}

pub(super) struct Sentence {
    pub(super) span: std::ops::Range<usize>,
    paragraph: usize,
    is_lead: bool,
    terms: Vec<String>,
    pub(super) tokens: usize,
}

impl Compressor for Extractive {
    fn name(&self) -> &'static str {
        "extractive"
    }

    fn query_aware(&self) -> bool {
        true
    }

    fn compress(&self, input: &CompressInput<'_>) -> Result<String, CompressError> {
        let text = input.text;
        if let Some(shape) = lines::shape(text) {
            return Ok(self.compress_lines(input, shape));
        }
        let sentences = analyse(text, input);
        let total: usize = sentences.iter().map(|s| s.tokens).sum();
        if total <= input.target_tokens {
            return Ok(text.to_string());
        }
        let scores = self.score(&sentences, input.query);
        let kept = select(&sentences, &scores, input.target_tokens);
        if kept.is_empty() {
            // No sentence fits (one huge unpunctuated line): fall back to head+tail.
            return Truncate.compress(input);
        }
        Ok(render(text, &sentences, &kept))
    }
}

pub(super) fn analyse(text: &str, input: &CompressInput<'_>) -> Vec<Sentence> {
    let mut out: Vec<Sentence> = Vec::new();
    let mut paragraph = 0;
    for span in sentences(text) {
        let starts_paragraph = match out.last() {
            None => true,
            Some(prev) => {
                let prev_text = &text[prev.span.clone()];
                let trailing = &prev_text[prev_text.trim_end().len()..];
                trailing.matches('\n').count() >= 2
            }
        };
        if starts_paragraph && !out.is_empty() {
            paragraph += 1;
        }
        let sentence = &text[span.clone()];
        out.push(Sentence {
            paragraph,
            is_lead: starts_paragraph,
            terms: terms(sentence),
            tokens: input.tokenizer.count(sentence),
            span,
        });
    }
    out
}

impl Extractive {
    /// Line-structured text (`lines`): whole lines selected by the same scores, dropped runs
    /// marked.
    fn compress_lines(&self, input: &CompressInput<'_>, shape: lines::Shape) -> String {
        let text = input.text;
        let spans = lines::spans(text);
        let units: Vec<Sentence> = spans
            .iter()
            .enumerate()
            .map(|(i, span)| Sentence {
                paragraph: i / lines::WINDOW,
                is_lead: false,
                terms: terms(&text[span.clone()]),
                tokens: input.tokenizer.count(&text[span.clone()]),
                span: span.clone(),
            })
            .collect();
        let total: usize = units.iter().map(|l| l.tokens).sum();
        if total <= input.target_tokens {
            return text.to_string();
        }
        // A line stands more on its own than a sentence does: its window weighs less.
        let by_line = Self {
            paragraph_weight: LINE_WINDOW_WEIGHT,
            ..self.clone()
        };
        let mut scores = by_line.score(&units, input.query);
        match shape {
            lines::Shape::Log => lines::prioritise_errors(text, &spans, &mut scores),
            lines::Shape::Numbered => lines::keep_frame(text, &spans, &mut scores),
            lines::Shape::Listing => {}
        }
        // Markers cost tokens too: about one per eight kept lines, ~8 tokens each.
        let budget = input.target_tokens.saturating_sub(input.target_tokens / 16);
        let kept = select(&units, &scores, budget);
        lines::render(text, &spans, &kept, shape)
    }

    pub(super) fn score(&self, sentences: &[Sentence], query: &str) -> Vec<f64> {
        let sentence_docs: Vec<&[String]> = sentences.iter().map(|s| s.terms.as_slice()).collect();
        let paragraph_count = sentences.last().map_or(0, |s| s.paragraph + 1);
        let mut paragraph_terms: Vec<Vec<String>> = vec![Vec::new(); paragraph_count];
        for s in sentences {
            paragraph_terms[s.paragraph].extend(s.terms.iter().cloned());
        }
        let paragraph_docs: Vec<&[String]> = paragraph_terms.iter().map(Vec::as_slice).collect();
        let sentence_index = Bm25::new(&sentence_docs);
        let paragraph_index = Bm25::new(&paragraph_docs);

        let mut query_terms: Vec<(String, f64)> =
            dedup(terms(query)).into_iter().map(|t| (t, 1.0)).collect();
        if query_terms.is_empty() {
            query_terms = sentence_index
                .top_terms(8)
                .into_iter()
                .map(|t| (t, 1.0))
                .collect();
        }

        let first = self.blend(sentences, &sentence_index, &paragraph_index, &query_terms);
        // Second hop: entities and rare terms of the best sentences join the query.
        let mut order: Vec<usize> = (0..sentences.len()).collect();
        order.sort_by(|&a, &b| first[b].total_cmp(&first[a]).then(a.cmp(&b)));
        let mut expanded = query_terms.clone();
        for &i in order.iter().take(3) {
            for t in &sentences[i].terms {
                if !expanded.iter().any(|(q, _)| q == t) && sentence_index.idf(t) > 1.0 {
                    expanded.push((t.clone(), self.expansion_weight));
                }
            }
        }
        self.blend(sentences, &sentence_index, &paragraph_index, &expanded)
    }

    fn blend(
        &self,
        sentences: &[Sentence],
        sidx: &Bm25,
        pidx: &Bm25,
        query: &[(String, f64)],
    ) -> Vec<f64> {
        let sent: Vec<f64> = (0..sentences.len()).map(|i| sidx.score(i, query)).collect();
        let para: Vec<f64> = (0..pidx.docs.len()).map(|i| pidx.score(i, query)).collect();
        let max_sent = sent.iter().cloned().fold(0.0, f64::max).max(1e-9);
        let max_para = para.iter().cloned().fold(0.0, f64::max).max(1e-9);
        sentences
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let lead = if s.is_lead { self.lead_bonus } else { 0.0 };
                sent[i] / max_sent + self.paragraph_weight * para[s.paragraph] / max_para + lead
            })
            .collect()
    }
}

fn dedup(mut v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    v.retain(|t| seen.insert(t.clone()));
    v
}

/// Greedy by score; sentences that do not fit are skipped so smaller ones can still fill the budget.
pub(super) fn select(sentences: &[Sentence], scores: &[f64], budget: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..sentences.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut used = 0;
    let mut kept = Vec::new();
    for i in order {
        let cost = sentences[i].tokens;
        if cost == 0 || used + cost > budget {
            continue;
        }
        used += cost;
        kept.push(i);
    }
    kept.sort_unstable();
    kept
}

pub(super) fn render(text: &str, sentences: &[Sentence], kept: &[usize]) -> String {
    let mut out = String::with_capacity(text.len() / 2);
    for (k, &i) in kept.iter().enumerate() {
        let span = &text[sentences[i].span.clone()];
        let body = span.trim_end();
        match kept.get(k + 1) {
            None => out.push_str(body),
            Some(&next) if next == i + 1 => out.push_str(span),
            Some(&next) => {
                out.push_str(body);
                let separator = if sentences[next].paragraph != sentences[i].paragraph {
                    "\n\n"
                } else if span[body.len()..].contains('\n') {
                    "\n"
                } else {
                    " "
                };
                out.push_str(separator);
            }
        }
    }
    out
}

/// Okapi BM25 over a small in-memory collection.
struct Bm25<'a> {
    docs: Vec<HashMap<&'a str, usize>>,
    lengths: Vec<usize>,
    avg_len: f64,
    df: HashMap<&'a str, usize>,
}

impl<'a> Bm25<'a> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;

    fn new(docs: &[&'a [String]]) -> Self {
        let mut df: HashMap<&str, usize> = HashMap::new();
        let mut tfs = Vec::with_capacity(docs.len());
        for doc in docs {
            let mut tf: HashMap<&str, usize> = HashMap::new();
            for t in doc.iter() {
                *tf.entry(t.as_str()).or_default() += 1;
            }
            for t in tf.keys() {
                *df.entry(t).or_default() += 1;
            }
            tfs.push(tf);
        }
        let lengths: Vec<usize> = docs.iter().map(|d| d.len()).collect();
        let avg_len = (lengths.iter().sum::<usize>() as f64 / lengths.len().max(1) as f64).max(1.0);
        Self {
            docs: tfs,
            lengths,
            avg_len,
            df,
        }
    }

    fn idf(&self, term: &str) -> f64 {
        let n = self.docs.len() as f64;
        let df = *self.df.get(term).unwrap_or(&0) as f64;
        (1.0 + (n - df + 0.5) / (df + 0.5)).ln()
    }

    fn score(&self, doc: usize, query: &[(String, f64)]) -> f64 {
        let tf = &self.docs[doc];
        let norm = Self::K1 * (1.0 - Self::B + Self::B * self.lengths[doc] as f64 / self.avg_len);
        query
            .iter()
            .filter_map(|(t, w)| {
                let f = *tf.get(t.as_str())? as f64;
                Some(w * self.idf(t) * f * (Self::K1 + 1.0) / (f + norm))
            })
            .sum()
    }

    /// The collection's most characteristic terms (total tf × idf), for query-less ranking.
    fn top_terms(&self, n: usize) -> Vec<String> {
        let mut weight: HashMap<&str, f64> = HashMap::new();
        for doc in &self.docs {
            for (t, f) in doc {
                *weight.entry(t).or_default() += *f as f64;
            }
        }
        let mut ranked: Vec<(&str, f64)> = weight
            .into_iter()
            .map(|(t, f)| (t, f * self.idf(t)))
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
        ranked
            .into_iter()
            .take(n)
            .map(|(t, _)| t.to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::Tokenizer;

    fn document() -> String {
        let filler =
            "The committee reviewed several unrelated budget items during the long session. ";
        format!(
            "{}\n\nParis is the capital of France. It has a population of about two million.\n\n{}",
            filler.repeat(20),
            filler.repeat(20)
        )
    }

    #[test]
    fn keeps_the_relevant_sentence_within_budget_in_order() {
        let text = document();
        let input = CompressInput {
            text: &text,
            query: "What is the capital of France and its population?",
            target_tokens: 60,
            tokenizer: Tokenizer::O200k,
        };
        let out = Extractive::default().compress(&input).expect("compress");
        assert!(out.contains("Paris is the capital of France."), "{out}");
        assert!(out.contains("population of about two million"), "{out}");
        assert!(
            Tokenizer::O200k.count(&out) <= 62,
            "{}",
            Tokenizer::O200k.count(&out)
        );
        let paris = out.find("Paris").unwrap_or(usize::MAX);
        let million = out.find("million").unwrap_or(0);
        assert!(paris < million, "original order kept");
    }

    #[test]
    fn deterministic_and_works_without_query() {
        let text = document();
        let input = CompressInput {
            text: &text,
            query: "",
            target_tokens: 80,
            tokenizer: Tokenizer::Cl100k,
        };
        let a = Extractive::default().compress(&input).expect("compress");
        let b = Extractive::default().compress(&input).expect("compress");
        assert_eq!(a, b);
        assert!(!a.is_empty() && Tokenizer::Cl100k.count(&a) <= 82);
    }
}
