//! A bound on how deep a SQL expression may nest, checked on the tokens
//! before any parser or planner sees the text.
//!
//! DataFusion's parser stops nested parentheses at 50 levels, but parses a
//! chain such as `1 + 1 + ... + 1` in a loop into a tree as deep as the
//! chain is long, and the planner, the optimiser and `Drop` then recurse
//! over that tree: 2,000 terms overflowed a worker thread's stack and
//! aborted the whole process. The scan below bounds the depth of that tree
//! from above: within one pair of parentheses, each binary operator (or
//! `::` cast) of the longest comma-separated run adds a level, and nested
//! parentheses add their own depth plus one.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// Bounds on `POST /v1/query` requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryLimits {
    /// The deepest expression tree a query may build (see the module docs):
    /// the default stays well under what overflowed a 2 MiB stack.
    pub max_sql_expression_depth: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            max_sql_expression_depth: 256,
        }
    }
}

/// An upper bound of the expression depth `sql` would parse into, or
/// `None` if it does not tokenize (the parser then says what is wrong).
pub fn sql_expression_depth(sql: &str) -> Option<usize> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize().ok()?;
    #[derive(Default)]
    struct Level {
        /// Operators since the last comma at this level.
        run: usize,
        /// The longest run at this level so far.
        longest: usize,
        /// The deepest parenthesised group inside.
        inner: usize,
    }
    impl Level {
        fn depth(&self) -> usize {
            self.run.max(self.longest) + self.inner
        }
    }
    let mut stack = vec![Level::default()];
    for token in tokens {
        match token {
            Token::LParen | Token::LBracket => stack.push(Level::default()),
            // A stray closing bracket at the top level closes nothing.
            Token::RParen | Token::RBracket if stack.len() > 1 => {
                let closed = stack.pop().unwrap_or_default();
                if let Some(parent) = stack.last_mut() {
                    parent.inner = parent.inner.max(closed.depth() + 1);
                }
            }
            Token::Comma => {
                if let Some(level) = stack.last_mut() {
                    level.longest = level.longest.max(level.run);
                    level.run = 0;
                }
            }
            t if is_chaining(&t) => {
                if let Some(level) = stack.last_mut() {
                    level.run += 1;
                }
            }
            _ => {}
        }
    }
    // Unclosed groups still count (the parser will refuse them anyway).
    while stack.len() > 1 {
        let closed = stack.pop().unwrap_or_default();
        if let Some(parent) = stack.last_mut() {
            parent.inner = parent.inner.max(closed.depth() + 1);
        }
    }
    stack.last().map(Level::depth)
}

/// Tokens that join two operands into one more tree level.
fn is_chaining(token: &Token) -> bool {
    match token {
        Token::Word(w) => {
            let k = w.value.to_ascii_uppercase();
            w.quote_style.is_none() && matches!(k.as_str(), "AND" | "OR" | "XOR")
        }
        Token::Plus
        | Token::Minus
        | Token::Mul
        | Token::Div
        | Token::Mod
        | Token::StringConcat
        | Token::Eq
        | Token::DoubleEq
        | Token::Neq
        | Token::Lt
        | Token::Gt
        | Token::LtEq
        | Token::GtEq
        | Token::Spaceship
        | Token::Caret
        | Token::Ampersand
        | Token::Pipe
        | Token::ShiftLeft
        | Token::ShiftRight
        | Token::DoubleColon
        | Token::Arrow
        | Token::LongArrow => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_chains_and_groups_not_lists() {
        assert_eq!(sql_expression_depth("SELECT 1"), Some(0));
        assert_eq!(sql_expression_depth("SELECT 1 + 2 + 3"), Some(2));
        // A comma ends a run: 300 short items are shallow.
        let wide = vec!["a + b"; 300].join(", ");
        assert_eq!(
            sql_expression_depth(&format!("SELECT {wide} FROM t")),
            Some(1)
        );
        assert_eq!(sql_expression_depth("SELECT (1 + (2 * 3)) - 4"), Some(5));
        let chain = vec!["1"; 2000].join(" + ");
        assert_eq!(sql_expression_depth(&format!("SELECT {chain}")), Some(1999));
        // Operators inside strings and quoted names are not operators.
        assert_eq!(
            sql_expression_depth("SELECT 'a + b + c', \"x+y\" FROM t WHERE s = 'and or'"),
            Some(1)
        );
        assert_eq!(sql_expression_depth("SELECT 'unclosed"), None);
    }
}
