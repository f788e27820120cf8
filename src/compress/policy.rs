//! Message-selection policy: which parts of a chat request may be compressed, and what the
//! question is. Rules, in order:
//! - only text (string `content` or `{"type":"text"}` parts) of the configured roles is touched;
//!   images, audio, files, tool-call arguments and every other field are left as they are;
//! - every text block (a string `content`, one `{"type":"text"}` part, one Anthropic `system`
//!   block) is its own unit: one with fewer than `min_tokens` tokens is left whole, whatever its
//!   neighbours hold (a short header block beside a long prompt stays byte for byte);
//! - the last user turn's question is never compressed and is the query for query-aware
//!   compressors: a short last user message is the question; in a long one, the final paragraph
//!   (or, lacking paragraphs, the final line or sentence) is the question and stays verbatim;
//! - no user question is ever removed, in any turn: a compressed user block keeps its final
//!   paragraph and every sentence ending in `?` verbatim, so the history still says what was
//!   asked (a document and its question often travel in one user message);
//! - tool results keep their structure: a JSON result is left whole (it must stay JSON), the tag
//!   lines of an XML-like wrapper are kept (so it stays balanced), and numbered file reads and
//!   logs are cut by whole lines (`compress::lines`, inside `extractive`);
//! - fenced code blocks stay intact unless the compressor handles code.

use serde_json::Value;

pub use super::blocks::Piece;
use super::blocks::{pieces_of, question_start, Block};
use super::settings::Role;
use super::Tokenizer;

/// A text slot of one message that has something to compress.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanTarget {
    pub message: usize,
    /// Index in the `content` array, or `None` when `content` is a string.
    pub part: Option<usize>,
    pub pieces: Vec<Piece>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    pub query: String,
    pub targets: Vec<PlanTarget>,
    /// Tokens of all message text in the request, compressible or not.
    pub tokens_before: usize,
}

pub fn role_of(message: &Value) -> Option<Role> {
    match message.get("role")?.as_str()? {
        "system" => Some(Role::System),
        "developer" => Some(Role::Developer),
        "user" => Some(Role::User),
        "assistant" => Some(Role::Assistant),
        "tool" | "function" => Some(Role::Tool),
        _ => None,
    }
}

/// The user's question: the index of the latest user message with text. The one definition,
/// for compression (the query, kept verbatim) and for shadowing (the judge's view). User turns
/// without text are skipped: in agent loops (Claude Code) the last user turn often carries only
/// `tool_result` blocks, and the question is the turn that started the loop.
pub fn question_turn(messages: &[Value]) -> Option<usize> {
    messages.iter().rposition(|m| {
        role_of(m) == Some(Role::User) && text_slots(m).iter().any(|(_, t)| !t.trim().is_empty())
    })
}

/// The text of the user's question turn ([`question_turn`]), its text parts joined by newlines.
pub fn question_text(messages: &[Value]) -> String {
    question_turn(messages)
        .map(|i| {
            text_slots(&messages[i])
                .into_iter()
                .map(|(_, t)| t)
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The text slots of a message: `(part index, text)`.
pub fn text_slots(message: &Value) -> Vec<(Option<usize>, &str)> {
    match message.get("content") {
        Some(Value::String(s)) => vec![(None, s.as_str())],
        Some(Value::Array(parts)) => parts
            .iter()
            .enumerate()
            .filter(|(_, p)| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|(i, p)| Some((Some(i), p.get("text")?.as_str()?)))
            .collect(),
        _ => Vec::new(),
    }
}

pub fn plan(
    messages: &[Value],
    roles: &[Role],
    min_tokens: usize,
    handles_code: bool,
    tokenizer: Tokenizer,
) -> Plan {
    let last_user = question_turn(messages);
    let mut out = Plan::default();
    for (index, message) in messages.iter().enumerate() {
        let slots = text_slots(message);
        let counts: Vec<usize> = slots.iter().map(|(_, t)| tokenizer.count(t)).collect();
        let total: usize = counts.iter().sum();
        out.tokens_before += total;
        let is_last_user = Some(index) == last_user;
        if is_last_user && (total < min_tokens || total == 0) {
            out.query = slots.iter().map(|(_, t)| *t).collect::<Vec<_>>().join("\n");
        }
        let Some(role) = role_of(message) else {
            continue;
        };
        let last_slot = slots.len().saturating_sub(1);
        for (slot_index, ((part, text), tokens)) in slots.iter().zip(&counts).enumerate() {
            let is_question_slot = is_last_user && slot_index == last_slot;
            let long_enough = *tokens >= min_tokens && *tokens > 0;
            // The question of a long last user turn is its final part; that part's own length
            // decides whether the rest of it is compressed.
            if is_question_slot && total >= min_tokens && total > 0 {
                let (_, question) = text.split_at(question_start(text));
                out.query = question.trim().to_string();
            }
            if !roles.contains(&role) || !long_enough {
                continue;
            }
            let kind = match role {
                // The question of the last turn is kept whole, however long.
                Role::User if is_question_slot => Block::Question,
                Role::User => Block::User,
                Role::System | Role::Developer => Block::Instructions,
                _ => Block::Reference,
            };
            let pieces = pieces_of(text, kind, handles_code);
            if pieces
                .iter()
                .any(|p| p.compress && !p.text.trim().is_empty())
            {
                out.targets.push(PlanTarget {
                    message: index,
                    part: *part,
                    pieces,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DEFAULT_ROLES: &[Role] = &[Role::System, Role::Developer, Role::User, Role::Tool];

    fn long(word: &str) -> String {
        format!("{word} sentence number one. ").repeat(30)
    }

    #[test]
    fn an_agent_loop_is_compressed_against_the_user_turn_that_started_it() {
        use crate::compress::{CompressInput, Compressor, Extractive};
        let mut document: Vec<String> = (0..40)
            .map(|i| format!("Filler fact number {i} concerns the weather in town {i}. "))
            .collect();
        document.insert(23, "The Louvre museum is in Paris. ".to_string());
        let document = document.concat();
        // The Anthropic view of a Claude Code loop: the last user turn returns a tool result only.
        let messages = vec![
            json!({"role": "user", "content": "Where is the Louvre museum?"}),
            json!({"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "search", "input": {}}]}),
            json!({"role": "tool", "content": document}),
            json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "see above"}]}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        assert_eq!(p.query, "Where is the Louvre museum?");
        assert_eq!(question_text(&messages), "Where is the Louvre museum?");
        let target = p
            .targets
            .iter()
            .find(|t| t.message == 2)
            .expect("tool result planned");
        let text: String = target.pieces.iter().map(|p| p.text.as_str()).collect();
        let out = Extractive::default()
            .compress(&CompressInput {
                text: &text,
                query: &p.query,
                target_tokens: 40,
                tokenizer: Tokenizer::O200k,
            })
            .expect("compresses");
        assert!(out.contains("The Louvre museum is in Paris."), "{out}");
    }

    #[test]
    fn separate_question_message_is_the_query_and_untouched() {
        let messages = vec![
            json!({"role": "system", "content": format!("Intro.\n\n{}", long("System"))}),
            json!({"role": "user", "content": long("Document")}),
            json!({"role": "assistant", "content": long("Answer")}),
            json!({"role": "user", "content": "Which document?"}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        assert_eq!(p.query, "Which document?");
        let touched: Vec<usize> = p.targets.iter().map(|t| t.message).collect();
        assert_eq!(
            touched,
            vec![0, 1],
            "assistant and the question are not touched"
        );
    }

    #[test]
    fn question_at_end_of_long_message_is_kept_verbatim() {
        let text = format!("{}\n\nWhat does the document say?", long("Document"));
        let messages = vec![json!({"role": "user", "content": text})];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        assert_eq!(p.query, "What does the document say?");
        let pieces = &p.targets[0].pieces;
        let last = pieces.last().expect("pieces");
        assert_eq!(last.text, "What does the document say?");
        assert!(!last.compress);
        assert!(pieces[0].compress);
    }

    #[test]
    fn short_messages_images_tool_calls_and_code_are_left_alone() {
        let code = "```python\nprint('hi')\n```\n";
        let messages = vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": format!("{}\n{}{}", long("Doc"), code, long("More"))}
            ]}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": long("arg")}}
            ]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": long("Result")}),
            json!({"role": "user", "content": "And?"}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::Cl100k);
        let touched: Vec<(usize, Option<usize>)> =
            p.targets.iter().map(|t| (t.message, t.part)).collect();
        assert_eq!(touched, vec![(1, Some(1)), (3, None)]);
        let code_piece = p.targets[0]
            .pieces
            .iter()
            .find(|piece| piece.text == code)
            .expect("code block is its own piece");
        assert!(!code_piece.compress);
        let with_code = plan(&messages, DEFAULT_ROLES, 50, true, Tokenizer::Cl100k);
        let code_piece = with_code.targets[0].pieces.iter().find(|p| p.text == code);
        assert!(code_piece.is_some_and(|p| p.compress));
    }

    #[test]
    fn single_paragraph_question_falls_back_to_last_line_then_sentence() {
        assert_eq!(question_start("line one\nline two?"), 9);
        let text = "First sentence here. Second one. Is it the third?";
        assert_eq!(&text[question_start(text)..], "Is it the third?");
    }

    #[test]
    fn a_short_block_beside_a_long_one_is_left_whole() {
        // Claude Code's system: a short billing header block, then the long prompt.
        let header = "x-anthropic-billing-header: cc_version=2.1; cc_entrypoint=sdk-cli;";
        let messages = vec![
            json!({"role": "system", "content": [
                {"type": "text", "text": header},
                {"type": "text", "text": format!("Intro.\n\n{}", long("prompt"))}]}),
            json!({"role": "user", "content": "Hi?"}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        let parts: Vec<Option<usize>> = p.targets.iter().map(|t| t.part).collect();
        assert_eq!(parts, vec![Some(1)], "only the long block is planned");
    }

    #[test]
    fn earlier_questions_and_final_paragraphs_of_user_blocks_are_kept() {
        let first = format!(
            "{}What year was the bridge reinforced? {}\n\nPlease answer briefly.",
            long("filler"),
            long("more")
        );
        let messages = vec![
            json!({"role": "user", "content": first.clone()}),
            json!({"role": "assistant", "content": "In 1987."}),
            json!({"role": "user", "content": "Thanks. And the museum?"}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        assert_eq!(p.query, "Thanks. And the museum?");
        let target = p.targets.iter().find(|t| t.message == 0).expect("planned");
        let kept: Vec<&str> = target
            .pieces
            .iter()
            .filter(|p| !p.compress)
            .map(|p| p.text.trim())
            .collect();
        assert!(
            kept.contains(&"What year was the bridge reinforced?"),
            "{kept:?}"
        );
        assert!(kept.contains(&"Please answer briefly."), "{kept:?}");
        // The pieces tile the block.
        let joined: String = target.pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, first);
    }

    #[test]
    fn instructions_stay_whole_and_reference_material_is_compressed() {
        let reference: String = (0..30)
            .map(|i| format!("The archive holds ledger number {i} from the harbour office. "))
            .collect();
        let system = format!(
            "You are an interactive agent that helps users with software engineering tasks. \
             Answer from the reference.\n\n# Tone\n- Be concise.\n1. Cite the ledger.\n\
             Never invent numbers.\n\n<reference>\n{reference}\n</reference>\n"
        );
        let messages = vec![
            json!({"role": "system", "content": system.clone()}),
            json!({"role": "user", "content": "Which ledger?"}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        let target = &p.targets[0];
        let kept: String = target
            .pieces
            .iter()
            .filter(|p| !p.compress)
            .map(|p| p.text.as_str())
            .collect();
        for instruction in [
            "You are an interactive agent that helps users with software engineering tasks.",
            "Answer from the reference.",
            "# Tone",
            "- Be concise.",
            "1. Cite the ledger.",
            "Never invent numbers.",
            "<reference>",
            "</reference>",
        ] {
            assert!(
                kept.contains(instruction),
                "{instruction:?} not kept: {kept}"
            );
        }
        let compressible: usize = target
            .pieces
            .iter()
            .filter(|p| p.compress)
            .map(|p| p.text.len())
            .sum();
        assert!(
            compressible >= reference.len() - 2,
            "{compressible} of {}",
            reference.len()
        );
        let joined: String = target.pieces.iter().map(|p| p.text.as_str()).collect();
        assert_eq!(joined, system);
        // A title generator's prompt is all instruction.
        assert!(super::super::blocks::is_instruction(
            "You output ONLY a thread title."
        ));
        assert!(!super::super::blocks::is_instruction(
            "The harbour office opened in 1887."
        ));
    }

    #[test]
    fn json_tool_results_stay_whole_and_wrapper_tags_stay() {
        let json_result = serde_json::to_string(&json!({"items": (0..60)
            .map(|i| json!({"id": i, "note": format!("entry {i} of the listing.")}))
            .collect::<Vec<_>>()}))
        .expect("json");
        let wrapped = format!("<content>\n{}\n</content>\n", long("Result"));
        let messages = vec![
            json!({"role": "tool", "content": json_result}),
            json!({"role": "tool", "content": wrapped}),
            json!({"role": "user", "content": "Which entry?"}),
        ];
        let p = plan(&messages, DEFAULT_ROLES, 50, false, Tokenizer::O200k);
        let touched: Vec<usize> = p.targets.iter().map(|t| t.message).collect();
        assert_eq!(touched, vec![1], "the JSON result is not compressed");
        let kept: String = p.targets[0]
            .pieces
            .iter()
            .filter(|p| !p.compress)
            .map(|p| p.text.as_str())
            .collect();
        assert!(
            kept.contains("<content>") && kept.contains("</content>"),
            "{kept}"
        );
    }
}
