//! Text segmentation shared by the compressors, their policy and the equivalence gates: fenced
//! code blocks, paragraphs, sentences and search terms. Byte spans into the original text, so
//! nothing is re-encoded. Top level so that neither user depends on the other.

use std::ops::Range;

/// A span of a text, either prose or a fenced code block (fence lines included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub span: Range<usize>,
    pub is_code: bool,
}

/// Splits text into prose and fenced code blocks (``` or ~~~). An unclosed fence runs to the end.
pub fn split_code_fences(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut prose_start = 0;
    let mut fence: Option<(usize, &str)> = None;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        let marker = if trimmed.starts_with("```") {
            Some("```")
        } else if trimmed.starts_with("~~~") {
            Some("~~~")
        } else {
            None
        };
        match (fence, marker) {
            (None, Some(m)) => {
                if offset > prose_start {
                    blocks.push(Block {
                        span: prose_start..offset,
                        is_code: false,
                    });
                }
                fence = Some((offset, m));
            }
            (Some((start, open)), Some(m)) if m == open && trimmed.trim_end() == open => {
                let end = offset + line.len();
                blocks.push(Block {
                    span: start..end,
                    is_code: true,
                });
                fence = None;
                prose_start = end;
            }
            _ => {}
        }
        offset += line.len();
    }
    match fence {
        Some((start, _)) => blocks.push(Block {
            span: start..text.len(),
            is_code: true,
        }),
        None if text.len() > prose_start => blocks.push(Block {
            span: prose_start..text.len(),
            is_code: false,
        }),
        None => {}
    }
    blocks
}

/// Byte offset where the final paragraph (after the last blank line) starts, ignoring trailing
/// whitespace. Returns 0 when the text is a single paragraph.
pub fn final_paragraph_start(text: &str) -> usize {
    let body = text.trim_end();
    let mut search_end = body.len();
    while let Some(pos) = body[..search_end].rfind('\n') {
        let before = body[..pos].trim_end_matches([' ', '\t', '\r']);
        if before.ends_with('\n') {
            return pos + 1;
        }
        if body[pos + 1..].trim().is_empty() {
            search_end = pos;
            continue;
        }
        search_end = pos;
        if search_end == 0 {
            break;
        }
    }
    0
}

/// Sentence spans: ends at `.`, `!`, `?` (plus closing quotes/brackets) followed by whitespace,
/// and at every line break. Abbreviations (`Dr.`, `e.g.`, initials) and decimals do not end one.
pub fn sentences(text: &str) -> Vec<Range<usize>> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let boundary = if b == b'\n' {
            Some(i + 1)
        } else if matches!(b, b'.' | b'!' | b'?') {
            let mut end = i + 1;
            while end < bytes.len() && matches!(bytes[end], b'"' | b'\'' | b')' | b']') {
                end += 1;
            }
            let followed_by_space = end >= bytes.len() || bytes[end].is_ascii_whitespace();
            if followed_by_space && !(b == b'.' && is_abbreviation(&text[start..i])) {
                Some(end)
            } else {
                None
            }
        } else {
            None
        };
        if let Some(end) = boundary {
            // Attach the following horizontal whitespace so spans tile the text.
            let mut next = end;
            while next < bytes.len() && matches!(bytes[next], b' ' | b'\t') {
                next += 1;
            }
            if text[start..end].trim().is_empty() {
                if let Some(last) = spans.last_mut() {
                    let last: &mut Range<usize> = last;
                    last.end = next;
                } else {
                    spans.push(start..next);
                }
            } else {
                spans.push(start..next);
            }
            start = next;
            i = next;
            continue;
        }
        i += 1;
    }
    if start < text.len() {
        if text[start..].trim().is_empty() {
            if let Some(last) = spans.last_mut() {
                last.end = text.len();
                return spans;
            }
        }
        spans.push(start..text.len());
    }
    spans
}

fn is_abbreviation(before_dot: &str) -> bool {
    let word = before_dot
        .rsplit(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("");
    if word.is_empty() {
        return false;
    }
    // Single initials ("J. R. R. Tolkien") and dotted forms ("e.g", "U.S").
    if word.chars().count() == 1 && word.chars().all(|c| c.is_alphabetic()) {
        return true;
    }
    if word.contains('.') && word.len() <= 6 {
        return true;
    }
    const ABBREVIATIONS: &[&str] = &[
        "mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "vs", "etc", "inc", "ltd", "co", "corp",
        "no", "vol", "fig", "al", "approx", "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep",
        "sept", "oct", "nov", "dec", "mt", "ft", "gen", "col", "lt", "sgt", "rev", "gov", "sen",
    ];
    let lower = word.to_ascii_lowercase();
    ABBREVIATIONS.contains(&lower.as_str())
}

const STOPWORDS: &[&str] = &[
    "a", "an", "the", "and", "or", "but", "if", "of", "at", "by", "for", "with", "about", "to",
    "from", "in", "on", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had",
    "do", "does", "did", "what", "which", "who", "whom", "whose", "when", "where", "why", "how",
    "this", "that", "these", "those", "it", "its", "as", "than", "then", "so", "such", "not", "no",
    "can", "could", "would", "should", "will", "shall", "may", "might", "must", "there", "their",
    "they", "them", "he", "she", "his", "her", "him", "we", "our", "you", "your", "i", "me", "my",
    "also", "into", "over", "under", "between", "both", "each", "same", "other", "any", "all",
    "more", "most", "some", "only", "own", "very", "s", "t", "just", "out", "up", "one",
];

/// Lower-cased search terms with stopwords removed and a light plural stem.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| w.to_lowercase())
        .filter(|w| !STOPWORDS.contains(&w.as_str()))
        .map(|w| stem(&w))
        .collect()
}

fn stem(word: &str) -> String {
    if word.len() > 4 && word.ends_with("ies") {
        return format!("{}y", &word[..word.len() - 3]);
    }
    if word.len() > 3 && word.ends_with('s') && !word.ends_with("ss") && !word.ends_with("us") {
        return word[..word.len() - 1].to_string();
    }
    word.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces<'a>(text: &'a str, spans: &[Range<usize>]) -> Vec<&'a str> {
        spans.iter().map(|s| &text[s.clone()]).collect()
    }

    #[test]
    fn sentences_tile_the_text_and_respect_abbreviations() {
        let text = "Dr. Smith met J. R. Tolkien in the U.S. in 1950. It cost 3.5 dollars!\nNext line? Yes.";
        let spans = sentences(text);
        assert_eq!(
            pieces(text, &spans),
            vec![
                "Dr. Smith met J. R. Tolkien in the U.S. in 1950. ",
                "It cost 3.5 dollars!\n",
                "Next line? ",
                "Yes."
            ]
        );
        let joined: String = pieces(text, &spans).concat();
        assert_eq!(joined, text);
    }

    #[test]
    fn code_fences_are_separate_blocks() {
        let text = "Intro text.\n```rust\nfn main() {}\n```\nOutro.\n~~~\nunclosed";
        let blocks = split_code_fences(text);
        let kinds: Vec<(bool, &str)> = blocks
            .iter()
            .map(|b| (b.is_code, &text[b.span.clone()]))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (false, "Intro text.\n"),
                (true, "```rust\nfn main() {}\n```\n"),
                (false, "Outro.\n"),
                (true, "~~~\nunclosed"),
            ]
        );
    }

    #[test]
    fn final_paragraph_is_found() {
        let text = "Document line one.\nline two.\n\n  \nWhat is the answer?\n";
        assert_eq!(
            &text[final_paragraph_start(text)..],
            "What is the answer?\n"
        );
        assert_eq!(final_paragraph_start("single paragraph\nstill same"), 0);
    }

    #[test]
    fn terms_drop_stopwords_and_stem() {
        assert_eq!(
            terms("What are the Cities of France?"),
            vec!["city", "france"]
        );
    }
}
