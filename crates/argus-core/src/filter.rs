//! The `$filter` expression of GetImages / GetImageCount: comparisons of image metadata values joined with
//! `and` / `or`, with parentheses, e.g. `camera eq 'left' and (site eq 'a' or site ne 'b')`.
//! Parsed here into an AST that each metadata store translates into its own query language.

use crate::error::{ApiError, ErrorCode};

/// A parsed metadata filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataFilter {
    /// `key eq 'value'`.
    Eq(String, String),
    /// `key ne 'value'` (also true when the key is absent).
    Ne(String, String),
    /// Both hold.
    And(Box<MetadataFilter>, Box<MetadataFilter>),
    /// Either holds.
    Or(Box<MetadataFilter>, Box<MetadataFilter>),
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str(String),
    Open,
    Close,
}

fn err(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::BadRequest, format!("invalid $filter: {}", msg.into()))
}

fn tokenize(s: &str) -> Result<Vec<Token>, ApiError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            c if c.is_whitespace() => {
                chars.next();
            }
            '(' => {
                chars.next();
                out.push(Token::Open);
            }
            ')' => {
                chars.next();
                out.push(Token::Close);
            }
            '\'' => {
                chars.next();
                let mut v = String::new();
                loop {
                    match chars.next() {
                        // OData escapes a quote by doubling it.
                        Some('\'') if chars.peek() == Some(&'\'') => {
                            chars.next();
                            v.push('\'');
                        }
                        Some('\'') => break,
                        Some(ch) => v.push(ch),
                        None => return Err(err("unterminated string literal")),
                    }
                }
                out.push(Token::Str(v));
            }
            _ => {
                let mut v = String::new();
                while let Some(&ch) = chars.peek() {
                    if ch.is_whitespace() || ch == '(' || ch == ')' || ch == '\'' {
                        break;
                    }
                    v.push(ch);
                    chars.next();
                }
                out.push(Token::Ident(v));
            }
        }
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn peek_keyword(&self, kw: &str) -> bool {
        matches!(self.tokens.get(self.pos), Some(Token::Ident(s)) if s.eq_ignore_ascii_case(kw))
    }

    fn expr(&mut self) -> Result<MetadataFilter, ApiError> {
        let mut left = self.term()?;
        while self.peek_keyword("or") {
            self.pos += 1;
            let right = self.term()?;
            left = MetadataFilter::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn term(&mut self) -> Result<MetadataFilter, ApiError> {
        let mut left = self.factor()?;
        while self.peek_keyword("and") {
            self.pos += 1;
            let right = self.factor()?;
            left = MetadataFilter::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn factor(&mut self) -> Result<MetadataFilter, ApiError> {
        match self.tokens.get(self.pos).cloned() {
            Some(Token::Open) => {
                self.pos += 1;
                let e = self.expr()?;
                if self.tokens.get(self.pos) != Some(&Token::Close) {
                    return Err(err("missing ')'"));
                }
                self.pos += 1;
                Ok(e)
            }
            Some(Token::Ident(key)) => {
                self.pos += 1;
                let op = match self.tokens.get(self.pos) {
                    Some(Token::Ident(op)) => op.to_ascii_lowercase(),
                    _ => return Err(err(format!("expected 'eq' or 'ne' after '{key}'"))),
                };
                self.pos += 1;
                let value = match self.tokens.get(self.pos) {
                    Some(Token::Str(v)) => v.clone(),
                    _ => return Err(err(format!("expected a quoted value after '{key} {op}'"))),
                };
                self.pos += 1;
                match op.as_str() {
                    "eq" => Ok(MetadataFilter::Eq(key, value)),
                    "ne" => Ok(MetadataFilter::Ne(key, value)),
                    other => Err(err(format!("unsupported operator '{other}' (use eq or ne)"))),
                }
            }
            Some(Token::Str(_)) => Err(err("expected a metadata key, found a string")),
            Some(Token::Close) => Err(err("unexpected ')'")),
            None => Err(err("unexpected end of expression")),
        }
    }
}

/// Parses a `$filter` expression.
pub fn parse_filter(s: &str) -> Result<MetadataFilter, ApiError> {
    let tokens = tokenize(s)?;
    let mut p = Parser { tokens, pos: 0 };
    let e = p.expr()?;
    if p.pos != p.tokens.len() {
        return Err(err("unexpected trailing input"));
    }
    Ok(e)
}

/// Evaluates a filter against one image's metadata (for views held outside the store).
pub fn matches(f: &MetadataFilter, metadata: &crate::model::Metadata) -> bool {
    match f {
        MetadataFilter::Eq(k, v) => metadata.get(k) == Some(v),
        MetadataFilter::Ne(k, v) => metadata.get(k) != Some(v),
        MetadataFilter::And(a, b) => matches(a, metadata) && matches(b, metadata),
        MetadataFilter::Or(a, b) => matches(a, metadata) || matches(b, metadata),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MetadataFilter::*;

    #[test]
    fn parses_precedence_and_parentheses() {
        let f = parse_filter("a eq 'x' or b ne 'it''s' and (c eq 'z')").expect("parse");
        assert_eq!(
            f,
            Or(
                Box::new(Eq("a".into(), "x".into())),
                Box::new(And(Box::new(Ne("b".into(), "it's".into())), Box::new(Eq("c".into(), "z".into()))))
            )
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "a eq", "a gt 'x'", "a eq 'x' and", "(a eq 'x'", "a eq 'x')", "'x' eq a", "a eq 'open"] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
