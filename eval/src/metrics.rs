//! Answer metrics with SQuAD's normalisation (lower-case, no punctuation, no articles, single
//! spaces), shared by every benchmark.

/// SQuAD `normalize_answer`.
pub fn normalize(text: &str) -> String {
    let lowered = text.to_lowercase();
    let no_punct: String = lowered
        .chars()
        .map(|c| if c.is_ascii_punctuation() { ' ' } else { c })
        .collect();
    no_punct
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether the gold answer appears in the text after normalisation (word-aligned).
pub fn contains_answer(text: &str, answer: &str) -> bool {
    let answer = normalize(answer);
    if answer.is_empty() {
        return false;
    }
    let haystack = format!(" {} ", normalize(text));
    haystack.contains(&format!(" {answer} "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn squad_normalisation() {
        assert_eq!(normalize("The  Eiffel Tower!"), "eiffel tower");
        assert_eq!(normalize("An apple, a day."), "apple day");
    }

    #[test]
    fn answer_containment_is_word_aligned() {
        assert!(contains_answer("It opened in 1889, in Paris.", "1889"));
        assert!(contains_answer(
            "Built by the Eiffel company",
            "Eiffel Company"
        ));
        assert!(!contains_answer("It opened in 18890.", "1889"));
        assert!(!contains_answer("anything", ""));
    }
}
