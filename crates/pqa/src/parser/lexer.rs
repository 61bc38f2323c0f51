//! Tokenizer for EPL.

use crate::error::{Pos, PqaError, Result};

/// Token kinds.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Tok {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Sym(&'static str),
    Eof,
}

impl Tok {
    pub(crate) fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("'{s}'"),
            Tok::Int(i) => format!("number {i}"),
            Tok::Float(f) => format!("number {f}"),
            Tok::Str(s) => format!("string '{s}'"),
            Tok::Sym(s) => format!("'{s}'"),
            Tok::Eof => "end of statement".to_string(),
        }
    }
}

/// A token and where it starts.
#[derive(Debug, Clone)]
pub(crate) struct Token {
    pub(crate) tok: Tok,
    pub(crate) pos: Pos,
}

const SYMS: &[&str] = &[
    "->", "<=", ">=", "!=", "<>", "||", "(", ")", "[", "]", ",", ".", "*", "+", "-", "/", "%", "=",
    "<", ">", ":", "#", ";",
];

pub(crate) fn tokenize(src: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line, mut col) = (0usize, 1u32, 1u32);
    let advance = |chars: &[char], i: &mut usize, line: &mut u32, col: &mut u32| {
        let c = chars[*i];
        *i += 1;
        if c == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let pos = Pos { line, col };
        if c.is_whitespace() {
            advance(&chars, &mut i, &mut line, &mut col);
            continue;
        }
        // Comments: `// ...` and `-- ...` to end of line, `/* ... */`.
        if (c == '/' && chars.get(i + 1) == Some(&'/'))
            || (c == '-' && chars.get(i + 1) == Some(&'-'))
        {
            while i < chars.len() && chars[i] != '\n' {
                advance(&chars, &mut i, &mut line, &mut col);
            }
            continue;
        }
        if c == '/' && chars.get(i + 1) == Some(&'*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                advance(&chars, &mut i, &mut line, &mut col);
            }
            if i >= chars.len() {
                return Err(PqaError::Parse {
                    pos,
                    expected: "end of comment '*/'".into(),
                    found: "end of statement".into(),
                });
            }
            advance(&chars, &mut i, &mut line, &mut col);
            advance(&chars, &mut i, &mut line, &mut col);
            continue;
        }
        if c.is_alphabetic() || c == '_' || c == '$' {
            let start = i;
            while i < chars.len()
                && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '$')
            {
                advance(&chars, &mut i, &mut line, &mut col);
            }
            out.push(Token {
                tok: Tok::Ident(chars[start..i].iter().collect()),
                pos,
            });
            continue;
        }
        if c == '`' {
            // Escaped identifier, e.g. a field named like a keyword.
            advance(&chars, &mut i, &mut line, &mut col);
            let start = i;
            while i < chars.len() && chars[i] != '`' {
                advance(&chars, &mut i, &mut line, &mut col);
            }
            if i >= chars.len() {
                return Err(PqaError::Parse {
                    pos,
                    expected: "closing '`'".into(),
                    found: "end of statement".into(),
                });
            }
            let s: String = chars[start..i].iter().collect();
            advance(&chars, &mut i, &mut line, &mut col);
            out.push(Token {
                tok: Tok::Ident(s),
                pos,
            });
            continue;
        }
        if c.is_ascii_digit() || (c == '.' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let start = i;
            let mut float = false;
            while i < chars.len() && chars[i].is_ascii_digit() {
                advance(&chars, &mut i, &mut line, &mut col);
            }
            if i < chars.len()
                && chars[i] == '.'
                && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())
            {
                float = true;
                advance(&chars, &mut i, &mut line, &mut col);
                while i < chars.len() && chars[i].is_ascii_digit() {
                    advance(&chars, &mut i, &mut line, &mut col);
                }
            }
            if i < chars.len() && (chars[i] == 'e' || chars[i] == 'E') {
                let mut j = i + 1;
                if j < chars.len() && (chars[j] == '+' || chars[j] == '-') {
                    j += 1;
                }
                if j < chars.len() && chars[j].is_ascii_digit() {
                    float = true;
                    while i < j {
                        advance(&chars, &mut i, &mut line, &mut col);
                    }
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        advance(&chars, &mut i, &mut line, &mut col);
                    }
                }
            }
            let text: String = chars[start..i].iter().collect();
            // Java-style suffixes (1L, 2.0d) are accepted and ignored.
            if i < chars.len()
                && matches!(chars[i], 'L' | 'l' | 'd' | 'D' | 'f' | 'F')
                && !chars.get(i + 1).is_some_and(|c| c.is_alphanumeric())
            {
                if matches!(chars[i], 'd' | 'D' | 'f' | 'F') {
                    float = true;
                }
                advance(&chars, &mut i, &mut line, &mut col);
            }
            let tok = if float {
                Tok::Float(text.parse().map_err(|_| PqaError::Parse {
                    pos,
                    expected: "a number".into(),
                    found: text.clone(),
                })?)
            } else {
                match text.parse::<i64>() {
                    Ok(v) => Tok::Int(v),
                    Err(_) => Tok::Float(text.parse().map_err(|_| PqaError::Parse {
                        pos,
                        expected: "a number".into(),
                        found: text.clone(),
                    })?),
                }
            };
            out.push(Token { tok, pos });
            continue;
        }
        if c == '\'' || c == '"' {
            let quote = c;
            advance(&chars, &mut i, &mut line, &mut col);
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => {
                        return Err(PqaError::Parse {
                            pos,
                            expected: format!("closing {quote}"),
                            found: "end of statement".into(),
                        });
                    }
                    Some(&ch) if ch == quote => {
                        advance(&chars, &mut i, &mut line, &mut col);
                        // A doubled quote is an escaped quote.
                        if chars.get(i) == Some(&quote) {
                            s.push(quote);
                            advance(&chars, &mut i, &mut line, &mut col);
                        } else {
                            break;
                        }
                    }
                    Some(&'\\') if chars.get(i + 1).is_some() => {
                        advance(&chars, &mut i, &mut line, &mut col);
                        let e = chars[i];
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                        advance(&chars, &mut i, &mut line, &mut col);
                    }
                    Some(&ch) => {
                        s.push(ch);
                        advance(&chars, &mut i, &mut line, &mut col);
                    }
                }
            }
            out.push(Token {
                tok: Tok::Str(s),
                pos,
            });
            continue;
        }
        let rest: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = SYMS.iter().find(|s| rest.starts_with(**s));
        match sym {
            Some(s) => {
                for _ in s.chars() {
                    advance(&chars, &mut i, &mut line, &mut col);
                }
                out.push(Token {
                    tok: Tok::Sym(s),
                    pos,
                });
            }
            None => {
                return Err(PqaError::Parse {
                    pos,
                    expected: "a name, number, string or operator".into(),
                    found: format!("'{c}'"),
                });
            }
        }
    }
    out.push(Token {
        tok: Tok::Eof,
        pos: Pos { line, col },
    });
    Ok(out)
}
