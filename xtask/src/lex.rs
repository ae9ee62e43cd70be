//! A small Rust lexer for the source rules: identifiers and punctuation with line numbers.
//!
//! Comments, string, char and number literals are skipped, so a rule only ever sees code. That is
//! why xtask itself can mention the patterns it forbids inside strings and comments, and why a
//! message text such as "todo list" never trips a rule.

/// One token of code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An identifier or keyword; raw identifiers are given without their `r#`.
    Ident { text: String, line: usize },
    /// Any other single character of code (`#`, `!`, `[`, ...).
    Punct { ch: char, line: usize },
}

impl Token {
    pub fn line(&self) -> usize {
        match self {
            Self::Ident { line, .. } | Self::Punct { line, .. } => *line,
        }
    }

    #[cfg(test)]
    pub fn is_ident(&self, expected: &str) -> bool {
        matches!(self, Self::Ident { text, .. } if text == expected)
    }

    pub fn is_punct(&self, expected: char) -> bool {
        matches!(self, Self::Punct { ch, .. } if *ch == expected)
    }
}

/// Splits `source` into tokens. Malformed input (an unterminated string or comment) ends the
/// token stream early instead of failing: the compiler reports such files better than we can.
pub fn tokens(source: &str) -> Vec<Token> {
    let mut lexer = Lexer {
        chars: source.chars().collect(),
        at: 0,
        line: 1,
        out: Vec::new(),
    };
    lexer.run();
    lexer.out
}

struct Lexer {
    chars: Vec<char>,
    at: usize,
    line: usize,
    out: Vec<Token>,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.at + ahead).copied()
    }

    fn bump(&mut self) -> Option<char> {
        let ch = self.peek(0)?;
        self.at += 1;
        if ch == '\n' {
            self.line += 1;
        }
        Some(ch)
    }

    fn run(&mut self) {
        while let Some(ch) = self.peek(0) {
            match ch {
                c if c.is_whitespace() => {
                    self.bump();
                }
                '/' if self.peek(1) == Some('/') => self.line_comment(),
                '/' if self.peek(1) == Some('*') => self.block_comment(),
                '"' => {
                    self.bump();
                    self.quoted('"');
                }
                '\'' => self.quote_or_lifetime(),
                c if c.is_ascii_digit() => self.number(),
                c if is_ident_start(c) => self.word(),
                c => {
                    let line = self.line;
                    self.bump();
                    self.out.push(Token::Punct { ch: c, line });
                }
            }
        }
    }

    fn line_comment(&mut self) {
        while let Some(ch) = self.peek(0) {
            if ch == '\n' {
                break;
            }
            self.bump();
        }
    }

    fn block_comment(&mut self) {
        // Block comments nest in Rust.
        let mut depth = 0usize;
        while let Some(ch) = self.bump() {
            if ch == '/' && self.peek(0) == Some('*') {
                self.bump();
                depth += 1;
            } else if ch == '*' && self.peek(0) == Some('/') {
                self.bump();
                depth -= 1;
                if depth == 0 {
                    return;
                }
            }
        }
    }

    /// Skips the rest of a quoted literal whose opening quote is already consumed.
    fn quoted(&mut self, close: char) {
        while let Some(ch) = self.bump() {
            if ch == '\\' {
                self.bump();
            } else if ch == close {
                return;
            }
        }
    }

    /// Skips a raw string whose `r`, hashes and opening quote are already consumed.
    fn raw_string(&mut self, hashes: usize) {
        while let Some(ch) = self.bump() {
            if ch == '"' && (0..hashes).all(|i| self.peek(i) == Some('#')) {
                for _ in 0..hashes {
                    self.bump();
                }
                return;
            }
        }
    }

    fn quote_or_lifetime(&mut self) {
        // `'x'` and `'\n'` are char literals; `'a` (no closing quote right after) is a lifetime
        // or a label, whose name is then lexed as an identifier.
        let is_char = matches!(
            (self.peek(1), self.peek(2)),
            (Some('\\'), _) | (Some(_), Some('\''))
        );
        self.bump();
        if is_char {
            self.quoted('\'');
        } else {
            let line = self.line;
            self.out.push(Token::Punct { ch: '\'', line });
        }
    }

    fn number(&mut self) {
        while let Some(ch) = self.peek(0) {
            if ch.is_alphanumeric() || ch == '_' {
                self.bump();
            } else {
                break;
            }
        }
    }

    fn word(&mut self) {
        let line = self.line;
        let start = self.at;
        while self.peek(0).is_some_and(is_ident_continue) {
            self.bump();
        }
        let text: String = self.chars[start..self.at].iter().collect();
        let prefix = text.as_str();
        match (prefix, self.peek(0)) {
            ("b" | "c" | "r" | "br" | "cr", Some('"')) => {
                self.bump();
                if prefix.contains('r') {
                    self.raw_string(0);
                } else {
                    self.quoted('"');
                }
            }
            ("b", Some('\'')) => {
                self.bump();
                self.quoted('\'');
            }
            ("r" | "br" | "cr", Some('#')) => {
                let hashes = (0..).take_while(|&i| self.peek(i) == Some('#')).count();
                if self.peek(hashes) == Some('"') {
                    for _ in 0..=hashes {
                        self.bump();
                    }
                    self.raw_string(hashes);
                } else if prefix == "r" && hashes == 1 && self.peek(1).is_some_and(is_ident_start) {
                    // A raw identifier: `r#match`.
                    self.bump();
                    let start = self.at;
                    while self.peek(0).is_some_and(is_ident_continue) {
                        self.bump();
                    }
                    let text = self.chars[start..self.at].iter().collect();
                    self.out.push(Token::Ident { text, line });
                } else {
                    self.out.push(Token::Ident { text, line });
                }
            }
            _ => self.out.push(Token::Ident { text, line }),
        }
    }
}

fn is_ident_start(ch: char) -> bool {
    ch == '_' || ch.is_alphabetic()
}

fn is_ident_continue(ch: char) -> bool {
    ch == '_' || ch.is_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::{Token, tokens};

    fn idents(source: &str) -> Vec<String> {
        tokens(source)
            .into_iter()
            .filter_map(|token| match token {
                Token::Ident { text, .. } => Some(text),
                Token::Punct { .. } => None,
            })
            .collect()
    }

    #[test]
    fn comments_and_literals_are_not_code() {
        let source = r####"
            // line Alpha
            /* block /* nested Beta */ still Gamma */
            let s = "string Delta \" Epsilon";
            let r = r#"raw "Zeta" "#;
            let b = br##"raw bytes "# Eta"##;
            let c = 'x'; let e = '\''; let n = b'y';
            let number = 1_000u32;
        "####;
        assert_eq!(
            idents(source),
            [
                "let", "s", "let", "r", "let", "b", "let", "c", "let", "e", "let", "n", "let",
                "number"
            ]
        );
    }

    #[test]
    fn lifetimes_labels_and_raw_identifiers_are_identifiers() {
        assert_eq!(
            idents("fn f<'a>(x: &'a str) { 'outer: loop {} r#match }"),
            ["fn", "f", "a", "x", "a", "str", "outer", "loop", "match"]
        );
    }

    #[test]
    fn tokens_carry_their_line() {
        let lines: Vec<usize> = tokens("a\n/* x\n y */ b\n\"s\n\" c")
            .iter()
            .map(Token::line)
            .collect();
        assert_eq!(lines, [1, 3, 5]);
    }

    #[test]
    fn punctuation_is_kept() {
        let found = tokens("#[test]");
        assert!(found[0].is_punct('#'));
        assert!(found[1].is_punct('['));
        assert!(found[2].is_ident("test"));
        assert!(found[3].is_punct(']'));
    }
}
