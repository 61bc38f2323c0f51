//! Hand-written recursive-descent parser for the EPL subset of issue 5.
//!
//! Precedence follows Esper: in expressions `or` < `and` < `not` <
//! comparisons < `+ - ||` < `* / %` < unary minus; in patterns `->` < `or` <
//! `and` < `every`/`not` < the `where timer:within(..)` guard.

pub mod ast;
mod lexer;

use ast::*;
use lexer::{Tok, Token, tokenize};

use crate::error::{Pos, PqaError, Result};
use crate::value::{Kind, Value};

/// Words that end an expression or clause and so cannot be an implicit alias.
const RESERVED: &[&str] = &[
    "select",
    "from",
    "where",
    "group",
    "by",
    "having",
    "order",
    "output",
    "limit",
    "as",
    "and",
    "or",
    "not",
    "insert",
    "into",
    "pattern",
    "every",
    "on",
    "asc",
    "desc",
    "unidirectional",
    "is",
    "in",
    "between",
    "like",
    "case",
    "when",
    "then",
    "else",
    "end",
    "distinct",
    "events",
    "all",
    "first",
    "last",
    "istream",
    "irstream",
    "rstream",
    "snapshot",
    "after",
];

/// How deep a statement may nest by default (see [`parse_limited`]).
pub const DEFAULT_MAX_DEPTH: usize = 128;

/// Parses one EPL statement (a trailing `;` is allowed), nesting at most
/// [`DEFAULT_MAX_DEPTH`] deep.
pub fn parse(src: &str) -> Result<Statement> {
    parse_limited(src, DEFAULT_MAX_DEPTH)
}

/// Parses one EPL statement that nests at most `max_depth` levels.
///
/// The parser, the compiler and the evaluator all recurse over the tree, so
/// a statement of 200,000 nested parentheses would overflow the stack and
/// abort the whole process. Every level of nesting counts: parentheses,
/// function arguments, `not`/`every`/unary minus, and each operator of a
/// chain such as `a or b or c` (a chain builds a tree as deep as it is
/// long). Deeper statements fail with [`PqaError::Limit`].
pub fn parse_limited(src: &str, max_depth: usize) -> Result<Statement> {
    let mut p = Parser {
        toks: tokenize(src)?,
        i: 0,
        depth: 0,
        max_depth,
    };
    let st = p.statement()?;
    p.eat_sym(";");
    p.expect_eof()?;
    Ok(st)
}

/// A canonical text of the statement, used to hash identical statements to
/// one running instance: whitespace and comments dropped, keywords
/// lowercased, everything else as written.
pub fn normalize(src: &str) -> Result<String> {
    let toks = tokenize(src)?;
    let mut out = String::new();
    for t in toks {
        if !out.is_empty() && t.tok != Tok::Eof {
            out.push(' ');
        }
        match t.tok {
            Tok::Ident(s) => {
                let lower = s.to_ascii_lowercase();
                if RESERVED.contains(&lower.as_str()) || is_keyword_like(&lower) {
                    out.push_str(&lower)
                } else {
                    out.push_str(&s)
                }
            }
            Tok::Int(i) => out.push_str(&i.to_string()),
            Tok::Float(f) => out.push_str(&format!("{f:e}")),
            Tok::Str(s) => out.push_str(&format!("'{}'", s.replace('\'', "''"))),
            Tok::Sym(";") => out.pop().map_or((), |_| ()),
            Tok::Sym(s) => out.push_str(s),
            Tok::Eof => {}
        }
    }
    Ok(out.trim().to_string())
}

fn is_keyword_like(s: &str) -> bool {
    matches!(
        s,
        "win"
            | "std"
            | "time"
            | "length"
            | "time_batch"
            | "length_batch"
            | "keepall"
            | "lastevent"
            | "unique"
            | "timer"
            | "within"
            | "interval"
            | "sec"
            | "msec"
            | "min"
            | "hour"
            | "seconds"
            | "second"
            | "minutes"
            | "minute"
            | "hours"
            | "milliseconds"
            | "millisecond"
            | "msecs"
            | "day"
            | "days"
            | "create"
            | "schema"
            | "null"
            | "true"
            | "false"
    )
}

/// Time-unit words and their length in milliseconds.
fn unit_ms(word: &str) -> Option<f64> {
    Some(match word.to_ascii_lowercase().as_str() {
        "msec" | "msecs" | "millisecond" | "milliseconds" => 1.0,
        "sec" | "secs" | "second" | "seconds" => 1000.0,
        "min" | "mins" | "minute" | "minutes" => 60_000.0,
        "hour" | "hours" => 3_600_000.0,
        "day" | "days" => 86_400_000.0,
        _ => return None,
    })
}

struct Parser {
    toks: Vec<Token>,
    i: usize,
    /// Nesting levels open at the current token.
    depth: usize,
    max_depth: usize,
}

impl Parser {
    /// Opens one level of nesting; the caller restores `depth` when the
    /// construct is done (on errors the parse is abandoned anyway).
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > self.max_depth {
            return Err(PqaError::Limit {
                what: format!("EPL nesting at {}", self.pos()),
                max: self.max_depth,
                setting: "limits.max_epl_depth",
            });
        }
        Ok(())
    }
    fn peek(&self) -> &Token {
        &self.toks[self.i.min(self.toks.len() - 1)]
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].tok
    }
    fn pos(&self) -> Pos {
        self.peek().pos
    }
    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.i < self.toks.len() - 1 {
            self.i += 1;
        }
        t
    }
    fn err<T>(&self, expected: &str) -> Result<T> {
        Err(PqaError::Parse {
            pos: self.pos(),
            expected: expected.to_string(),
            found: self.peek().tok.describe(),
        })
    }
    fn is_kw(&self, kw: &str) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
    fn is_kw_at(&self, n: usize, kw: &str) -> bool {
        matches!(self.peek_at(n), Tok::Ident(s) if s.eq_ignore_ascii_case(kw))
    }
    fn eat_kw(&mut self, kw: &str) -> bool {
        if self.is_kw(kw) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect_kw(&mut self, kw: &str) -> Result<()> {
        if self.eat_kw(kw) {
            Ok(())
        } else {
            self.err(&format!("'{kw}'"))
        }
    }
    fn is_sym(&self, s: &str) -> bool {
        matches!(&self.peek().tok, Tok::Sym(x) if *x == s)
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if self.is_sym(s) {
            self.bump();
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, s: &str) -> Result<()> {
        if self.eat_sym(s) {
            Ok(())
        } else {
            self.err(&format!("'{s}'"))
        }
    }
    fn expect_eof(&self) -> Result<()> {
        if self.peek().tok == Tok::Eof {
            Ok(())
        } else {
            self.err("end of statement (or a clause: where, group by, having, output, order by)")
        }
    }
    fn ident(&mut self, what: &str) -> Result<Ident> {
        match &self.peek().tok {
            Tok::Ident(s) => {
                let id = Ident {
                    name: s.clone(),
                    pos: self.pos(),
                };
                self.bump();
                Ok(id)
            }
            _ => self.err(what),
        }
    }
    /// An identifier that is not a reserved word (implicit aliases).
    fn non_reserved_ident(&self) -> bool {
        matches!(&self.peek().tok, Tok::Ident(s) if !RESERVED.contains(&s.to_ascii_lowercase().as_str()))
    }

    fn statement(&mut self) -> Result<Statement> {
        if self.is_kw("create") {
            self.bump();
            self.expect_kw("schema")?;
            return Ok(Statement {
                insert_into: None,
                insert_stream: StreamSel::IStream,
                body: Body::CreateSchema(self.create_schema()?),
            });
        }
        let mut insert_into = None;
        let mut insert_stream = StreamSel::IStream;
        if self.eat_kw("insert") {
            insert_stream = self.stream_sel();
            self.expect_kw("into")?;
            insert_into = Some(self.ident("a stream name after 'insert into'")?);
        }
        if !self.is_kw("select") {
            return self.err(if insert_into.is_some() {
                "'select'"
            } else {
                "'select', 'insert into' or 'create schema'"
            });
        }
        Ok(Statement {
            insert_into,
            insert_stream,
            body: Body::Select(Box::new(self.select()?)),
        })
    }

    fn create_schema(&mut self) -> Result<CreateSchema> {
        let name = self.ident("a schema name")?;
        self.eat_kw("as");
        self.expect_sym("(")?;
        let mut fields = Vec::new();
        loop {
            let f = self.ident("a field name")?;
            let ty = self.ident("a type (string, int, long, double, float, boolean)")?;
            let kind = match ty.name.to_ascii_lowercase().as_str() {
                "string" | "char" => Kind::String,
                "int" | "integer" | "long" | "double" | "float" | "short" | "byte" | "bigint"
                | "decimal" | "number" => Kind::Number,
                "bool" | "boolean" => Kind::Bool,
                "object" | "map" | "json" => Kind::Json,
                _ => {
                    return Err(PqaError::Parse {
                        pos: ty.pos,
                        expected: "a type (string, int, long, double, float, boolean)".into(),
                        found: format!("'{}'", ty.name),
                    });
                }
            };
            fields.push((f, kind));
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym(")")?;
        Ok(CreateSchema { name, fields })
    }

    fn select(&mut self) -> Result<Select> {
        self.expect_kw("select")?;
        let stream = self.stream_sel();
        let distinct = self.eat_kw("distinct");
        let mut items = Vec::new();
        loop {
            items.push(self.select_item()?);
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_kw("from")?;
        let from = self.from()?;
        let mut s = Select {
            stream,
            distinct,
            items,
            from,
            where_: None,
            group_by: Vec::new(),
            having: None,
            output: None,
            order_by: Vec::new(),
            limit: None,
        };
        if self.eat_kw("where") {
            s.where_ = Some(self.expr()?);
        }
        if self.eat_kw("group") {
            self.expect_kw("by")?;
            loop {
                s.group_by.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.eat_kw("having") {
            s.having = Some(self.expr()?);
        }
        if self.eat_kw("output") {
            s.output = Some(self.output_clause()?);
        }
        if self.eat_kw("order") {
            self.expect_kw("by")?;
            loop {
                let e = self.expr()?;
                let desc = if self.eat_kw("desc") {
                    true
                } else {
                    self.eat_kw("asc");
                    false
                };
                s.order_by.push((e, desc));
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.eat_kw("limit") {
            match self.bump().tok {
                Tok::Int(n) if n >= 0 => s.limit = Some(n as u64),
                _ => {
                    self.i -= 1;
                    return self.err("a row count after 'limit'");
                }
            }
        }
        Ok(s)
    }

    fn stream_sel(&mut self) -> StreamSel {
        if self.eat_kw("istream") {
            StreamSel::IStream
        } else if self.eat_kw("irstream") {
            StreamSel::IRStream
        } else if self.eat_kw("rstream") {
            StreamSel::RStream
        } else {
            StreamSel::IStream
        }
    }

    fn output_clause(&mut self) -> Result<OutputClause> {
        let after = if self.eat_kw("after") {
            Some(self.output_rate("a number after 'output after'")?)
        } else {
            None
        };
        let kind = if self.eat_kw("first") {
            OutputKind::First
        } else if self.eat_kw("last") {
            OutputKind::Last
        } else if self.eat_kw("snapshot") {
            OutputKind::Snapshot
        } else if self.eat_kw("all") {
            OutputKind::All
        } else {
            OutputKind::Default
        };
        let mut clause = OutputClause {
            kind,
            every: None,
            after,
            when: None,
            terminated: false,
            terminated_and: None,
        };
        if self.is_kw("when") && self.is_kw_at(1, "terminated") {
            self.bump();
            self.bump();
            self.when_terminated(&mut clause)?;
            return Ok(clause);
        }
        if kind != OutputKind::Snapshot && self.eat_kw("when") {
            let when = self.expr()?;
            self.no_then_set()?;
            clause.when = Some(Box::new(when));
        } else if self.eat_kw("every") {
            clause.every = Some(self.output_rate("a number after 'output every'")?);
        } else if self.eat_kw("at") {
            clause.every = Some(OutputEvery::At(self.cron()?));
        } else if !(after.is_some() && kind == OutputKind::Default) {
            return self.err("'every', 'at' or 'when'");
        }
        if self.is_kw("and") && self.is_kw_at(1, "when") {
            self.bump();
            self.bump();
            self.expect_kw("terminated")?;
            self.when_terminated(&mut clause)?;
        }
        Ok(clause)
    }

    /// After `when terminated`: `[and <expr>]`, and no `then set`.
    fn when_terminated(&mut self, clause: &mut OutputClause) -> Result<()> {
        clause.terminated = true;
        if self.eat_kw("and") {
            clause.terminated_and = Some(Box::new(self.expr()?));
        }
        self.no_then_set()
    }

    fn no_then_set(&mut self) -> Result<()> {
        if self.is_kw("then") {
            // `then set` assigns variables, which this engine does not have.
            return self.err(
                "the end of the output clause ('then set' needs variables, which are not supported)",
            );
        }
        Ok(())
    }

    /// `N events` or a time period.
    fn output_rate(&mut self, what: &str) -> Result<OutputEvery> {
        let pos = self.pos();
        let n = self.number(what)?;
        if self.is_kw("events") || self.is_kw("event") {
            self.bump();
            if n < 1.0 || n.fract() != 0.0 {
                return Err(PqaError::Parse {
                    pos,
                    expected: "a positive whole number of events".into(),
                    found: n.to_string(),
                });
            }
            return Ok(OutputEvery::Events(n as u64));
        }
        Ok(OutputEvery::Time(self.period_rest(n, pos)?))
    }

    fn number(&mut self, what: &str) -> Result<f64> {
        match self.peek().tok {
            Tok::Int(i) => {
                self.bump();
                Ok(i as f64)
            }
            Tok::Float(f) => {
                self.bump();
                Ok(f)
            }
            _ => self.err(what),
        }
    }

    /// After the first number of a time period: `sec`, or `min 30 sec`...
    fn period_rest(&mut self, first: f64, pos: Pos) -> Result<i64> {
        let mut total = 0.0;
        let mut n = first;
        loop {
            let unit = match &self.peek().tok {
                Tok::Ident(s) => unit_ms(s),
                _ => None,
            };
            let Some(unit) = unit else {
                return self.err("a time unit (msec, sec, min, hour, day, or 'events')");
            };
            self.bump();
            total += n * unit;
            // Another `<number> <unit>` pair continues the period.
            if matches!(self.peek().tok, Tok::Int(_) | Tok::Float(_))
                && matches!(self.peek_at(1), Tok::Ident(s) if unit_ms(s).is_some())
            {
                n = self.number("a number")?;
            } else {
                break;
            }
        }
        if total <= 0.0 {
            return Err(PqaError::Parse {
                pos,
                expected: "a positive time period".into(),
                found: format!("{total} msec"),
            });
        }
        Ok(total.round() as i64)
    }

    fn select_item(&mut self) -> Result<SelectItem> {
        if self.is_sym("*") {
            let p = self.pos();
            self.bump();
            return Ok(SelectItem::Wildcard(p));
        }
        if matches!(self.peek().tok, Tok::Ident(_))
            && matches!(self.peek_at(1), Tok::Sym("."))
            && matches!(self.peek_at(2), Tok::Sym("*"))
        {
            let id = self.ident("a stream alias")?;
            self.bump();
            self.bump();
            return Ok(SelectItem::StreamWildcard(id));
        }
        let expr = self.expr()?;
        let alias = if self.eat_kw("as") {
            Some(self.ident("an alias after 'as'")?)
        } else if self.non_reserved_ident() {
            Some(self.ident("an alias")?)
        } else {
            None
        };
        Ok(SelectItem::Expr { expr, alias })
    }

    fn from(&mut self) -> Result<From> {
        if self.is_kw("pattern") && matches!(self.peek_at(1), Tok::Sym("[")) {
            let pos = self.pos();
            self.bump();
            self.bump();
            let p = self.pattern()?;
            self.expect_sym("]")?;
            // An alias for the pattern stream is allowed and has no use here.
            if self.eat_kw("as") {
                self.ident("an alias")?;
            }
            return Ok(From::Pattern(p, pos));
        }
        let mut streams = vec![self.stream_spec()?];
        loop {
            if self.eat_sym(",") {
                streams.push(self.stream_spec()?);
                continue;
            }
            let pos = self.pos();
            let kind = if self.eat_kw("inner") {
                JoinKind::Inner
            } else if self.eat_kw("left") {
                JoinKind::Left
            } else if self.eat_kw("right") {
                JoinKind::Right
            } else if self.eat_kw("full") {
                JoinKind::Full
            } else if self.is_kw("join") {
                JoinKind::Inner
            } else {
                break;
            };
            if kind != JoinKind::Inner {
                self.eat_kw("outer");
            }
            self.expect_kw("join")?;
            let mut spec = self.stream_spec()?;
            let on = if self.eat_kw("on") {
                Some(self.expr()?)
            } else if kind == JoinKind::Inner {
                None
            } else {
                return self.err("'on' and the join condition after an outer join's stream");
            };
            spec.join = Some(Join { kind, on, pos });
            streams.push(spec);
        }
        Ok(From::Streams(streams))
    }

    fn stream_spec(&mut self) -> Result<StreamSpec> {
        let name = self.ident("a stream name")?;
        let mut filter = None;
        if self.eat_sym("(") {
            if !self.is_sym(")") {
                filter = Some(self.expr()?);
            }
            self.expect_sym(")")?;
        }
        let mut views = Vec::new();
        loop {
            if self.is_sym(".")
                && matches!(self.peek_at(1), Tok::Ident(_))
                && matches!(self.peek_at(2), Tok::Sym(":"))
            {
                self.bump();
                let ns = self.ident("a view namespace (win, std)")?;
                self.expect_sym(":")?;
                let name = self.ident(
                    "a view name (time, length, time_batch, length_batch, keepall, ext_timed, firstlength, firsttime, lastevent, unique, firstunique, groupwin)",
                )?;
                let args = self.view_args()?;
                views.push(View {
                    namespace: ns.name.to_ascii_lowercase(),
                    name,
                    args,
                });
            } else if self.is_sym("#") {
                self.bump();
                let name = self.ident(
                    "a view name (time, length, time_batch, length_batch, keepall, ext_timed, firstlength, firsttime, lastevent, unique, firstunique, groupwin)",
                )?;
                // `#lastevent`, `#keepall`: Esper lets views without
                // parameters drop the parentheses in this spelling.
                let args = if self.is_sym("(") {
                    self.view_args()?
                } else {
                    Vec::new()
                };
                views.push(View {
                    namespace: "#".into(),
                    name,
                    args,
                });
            } else {
                break;
            }
        }
        let alias = if self.eat_kw("as") {
            Some(self.ident("a stream alias after 'as'")?)
        } else if self.non_reserved_ident()
            && !["join", "inner", "left", "right", "full"]
                .iter()
                .any(|w| self.is_kw(w))
        {
            Some(self.ident("a stream alias")?)
        } else {
            None
        };
        let unidirectional = self.eat_kw("unidirectional");
        Ok(StreamSpec {
            name,
            filter,
            views,
            alias,
            unidirectional,
            join: None,
        })
    }

    fn view_args(&mut self) -> Result<Vec<ViewArg>> {
        self.expect_sym("(")?;
        let mut args = Vec::new();
        if self.eat_sym(")") {
            return Ok(args);
        }
        loop {
            args.push(self.view_arg()?);
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym(")")?;
        Ok(args)
    }

    fn view_arg(&mut self) -> Result<ViewArg> {
        let is_num = matches!(self.peek().tok, Tok::Int(_) | Tok::Float(_));
        if is_num && matches!(self.peek_at(1), Tok::Ident(s) if unit_ms(s).is_some()) {
            let pos = self.pos();
            let n = self.number("a number")?;
            return Ok(ViewArg::Period(self.period_rest(n, pos)?, pos));
        }
        Ok(ViewArg::Expr(self.expr()?))
    }

    fn period_arg(&mut self) -> Result<i64> {
        let pos = self.pos();
        let n = self.number("a time period such as '30 sec'")?;
        if matches!(&self.peek().tok, Tok::Ident(s) if unit_ms(s).is_some()) {
            self.period_rest(n, pos)
        } else {
            // A bare number is seconds, as in Esper.
            Ok((n * 1000.0).round() as i64)
        }
    }

    // ---- patterns ----

    fn pattern(&mut self) -> Result<PatternExpr> {
        self.enter()?;
        let mut parts = vec![self.pattern_or()?];
        while self.eat_sym("->") {
            parts.push(self.pattern_or()?);
        }
        self.depth -= 1;
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            PatternExpr::FollowedBy(parts)
        })
    }

    fn pattern_or(&mut self) -> Result<PatternExpr> {
        let mut parts = vec![self.pattern_and()?];
        while self.eat_kw("or") {
            parts.push(self.pattern_and()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            PatternExpr::Or(parts)
        })
    }

    fn pattern_and(&mut self) -> Result<PatternExpr> {
        let mut parts = vec![self.pattern_unary()?];
        while self.eat_kw("and") {
            parts.push(self.pattern_unary()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            PatternExpr::And(parts)
        })
    }

    fn pattern_unary(&mut self) -> Result<PatternExpr> {
        let start = self.depth;
        if self.is_kw("every") && self.peek_at(1) == &Tok::Sym("-") && self.is_kw_at(2, "distinct")
        {
            self.bump();
            self.bump();
            self.bump();
            self.enter()?;
            let (keys, expiry) = self.every_distinct_args()?;
            let inner = self.pattern_unary()?;
            self.depth = start;
            return Ok(PatternExpr::EveryDistinct {
                inner: Box::new(inner),
                keys,
                expiry,
            });
        }
        if self.is_sym("[") {
            self.enter()?;
            let (min, max) = self.repeat_bounds()?;
            let inner = self.pattern_unary_no_until()?;
            let until = if self.eat_kw("until") {
                Some(Box::new(self.pattern_unary()?))
            } else {
                None
            };
            self.depth = start;
            return Ok(PatternExpr::Repeat {
                inner: Box::new(inner),
                min,
                max,
                until,
            });
        }
        let inner = self.pattern_unary_no_until()?;
        if self.eat_kw("until") {
            self.enter()?;
            let until = self.pattern_unary()?;
            self.depth = start;
            return Ok(PatternExpr::Repeat {
                inner: Box::new(inner),
                min: 0,
                max: None,
                until: Some(Box::new(until)),
            });
        }
        Ok(inner)
    }

    /// `[n]`, `[n:m]`, `[:m]`, `[n:]`.
    fn repeat_bounds(&mut self) -> Result<(u32, Option<u32>)> {
        let pos = self.pos();
        self.expect_sym("[")?;
        let int = |p: &mut Parser| -> Result<Option<u32>> {
            match p.peek().tok {
                Tok::Int(n) if (0..=u32::MAX as i64).contains(&n) => {
                    p.bump();
                    Ok(Some(n as u32))
                }
                Tok::Int(_) => p.err("a repeat count between 0 and 4294967295"),
                _ => Ok(None),
            }
        };
        let lo = int(self)?;
        let (min, max) = if self.eat_sym(":") {
            (lo.unwrap_or(0), int(self)?)
        } else {
            match lo {
                Some(n) => (n, Some(n)),
                None => return self.err("a repeat count, such as [3] or [2:5]"),
            }
        };
        self.expect_sym("]")?;
        if max.is_some_and(|m| m == 0 || m < min) {
            return Err(PqaError::Parse {
                pos,
                expected: "an upper bound of at least 1 and not below the lower bound".into(),
                found: format!("[{min}:{}]", max.unwrap_or(0)),
            });
        }
        Ok((min, max))
    }

    /// `every-distinct(a.x, b.y [, 10 sec])`'s arguments.
    fn every_distinct_args(&mut self) -> Result<(Vec<Expr>, Option<i64>)> {
        self.expect_sym("(")?;
        let mut keys = Vec::new();
        let mut expiry = None;
        loop {
            match self.view_arg()? {
                ViewArg::Expr(e) if expiry.is_none() => keys.push(e),
                ViewArg::Period(ms, _) if expiry.is_none() => expiry = Some(ms),
                _ => return self.err("')' (the expiry period comes last)"),
            }
            if !self.eat_sym(",") {
                break;
            }
        }
        self.expect_sym(")")?;
        if keys.is_empty() {
            return self.err("a distinct-value expression before the period");
        }
        Ok((keys, expiry))
    }

    fn pattern_unary_no_until(&mut self) -> Result<PatternExpr> {
        let start = self.depth;
        if self.eat_kw("every") {
            self.enter()?;
            let inner = self.pattern_unary()?;
            self.depth = start;
            return Ok(PatternExpr::Every(Box::new(inner)));
        }
        if self.eat_kw("not") {
            self.enter()?;
            let inner = self.pattern_unary()?;
            self.depth = start;
            return Ok(PatternExpr::Not(Box::new(inner)));
        }
        let mut atom = self.pattern_atom()?;
        while self.is_kw("where") && self.is_kw_at(1, "timer") {
            // Each guard wraps the atom once more.
            self.enter()?;
            self.bump();
            self.bump();
            self.expect_sym(":")?;
            self.expect_kw("within")?;
            self.expect_sym("(")?;
            let ms = self.period_arg()?;
            self.expect_sym(")")?;
            atom = PatternExpr::Within(Box::new(atom), ms);
        }
        self.depth = start;
        Ok(atom)
    }

    fn pattern_atom(&mut self) -> Result<PatternExpr> {
        if self.eat_sym("(") {
            let p = self.pattern()?;
            self.expect_sym(")")?;
            return Ok(p);
        }
        if self.is_kw("timer") && matches!(self.peek_at(1), Tok::Sym(":")) {
            self.bump();
            self.bump();
            if self.eat_kw("at") {
                return Ok(PatternExpr::TimerAt(Box::new(self.cron()?)));
            }
            self.expect_kw("interval")?;
            self.expect_sym("(")?;
            let ms = self.period_arg()?;
            self.expect_sym(")")?;
            return Ok(PatternExpr::Interval(ms));
        }
        let first = self.ident("an event stream (or tag=Stream) in the pattern")?;
        let (tag, stream) = if self.eat_sym("=") {
            (Some(first), self.ident("a stream name after 'tag='")?)
        } else {
            (None, first)
        };
        let mut filter = None;
        if self.eat_sym("(") {
            if !self.is_sym(")") {
                filter = Some(self.expr()?);
            }
            self.expect_sym(")")?;
        }
        Ok(PatternExpr::Filter {
            tag,
            stream,
            filter,
        })
    }

    /// `timer:at(...)`'s (and `output at`'s) parameters, after `at`.
    fn cron(&mut self) -> Result<CronSpec> {
        self.expect_sym("(")?;
        let ranges: [(&str, u32, u32); 6] = [
            ("minutes", 0, 59),
            ("hours", 0, 23),
            ("days of month", 1, 31),
            ("months", 1, 12),
            ("days of week", 0, 6),
            ("seconds", 0, 59),
        ];
        let mut sets = [0u64; 6];
        sets[5] = 1;
        let mut dom_op = None;
        let mut dow_op = None;
        for (i, (what, lo, hi)) in ranges.iter().enumerate() {
            if i == 5 && !self.eat_sym(",") {
                break;
            }
            if i > 0 && i < 5 {
                self.expect_sym(",")?;
            }
            if i == 2 {
                dom_op = self.cron_dom_op()?;
                if dom_op.is_some() {
                    sets[i] = (1..=31).fold(0u64, |m, v| m | 1 << v);
                    continue;
                }
            }
            if i == 4 {
                dow_op = self.cron_dow_op()?;
                if dow_op.is_some() {
                    sets[i] = (0..=6).fold(0u64, |m, v| m | 1 << v);
                    continue;
                }
            }
            sets[i] = self.cron_field(what, *lo, *hi)?;
        }
        if self.is_sym(",") {
            // Esper's seventh parameter is a time zone; the engine's clock is UTC.
            return self.err("')' (a time zone parameter is not supported: schedules are in UTC)");
        }
        self.expect_sym(")")?;
        Ok(CronSpec {
            minutes: sets[0],
            hours: sets[1],
            days_of_month: sets[2],
            months: sets[3],
            days_of_week: sets[4],
            seconds: sets[5],
            day_op: dom_op.or(dow_op),
        })
    }

    /// `last`, `lastweekday`, `weekday` or `N weekday` among days of the month.
    fn cron_dom_op(&mut self) -> Result<Option<CronDay>> {
        if self.is_kw("last") && !matches!(self.peek_at(1), Tok::Sym(":")) {
            self.bump();
            return Ok(Some(CronDay::LastOfMonth));
        }
        if self.eat_kw("lastweekday") {
            return Ok(Some(CronDay::LastWeekday));
        }
        if self.eat_kw("weekday") {
            return Ok(Some(CronDay::NearestWeekday(None)));
        }
        if let Tok::Int(n) = self.peek().tok
            && self.is_kw_at(1, "weekday")
        {
            if !(1..=31).contains(&n) {
                return self.err("a day of month between 1 and 31 before 'weekday'");
            }
            self.bump();
            self.bump();
            return Ok(Some(CronDay::NearestWeekday(Some(n as u8))));
        }
        Ok(None)
    }

    /// `last` or `N last` among days of the week.
    fn cron_dow_op(&mut self) -> Result<Option<CronDay>> {
        if self.eat_kw("last") {
            return Ok(Some(CronDay::LastOfWeek(None)));
        }
        if let Tok::Int(n) = self.peek().tok
            && self.is_kw_at(1, "last")
        {
            if !(0..=6).contains(&n) {
                return self.err("a day of week between 0 and 6 before 'last'");
            }
            self.bump();
            self.bump();
            return Ok(Some(CronDay::LastOfWeek(Some(n as u8))));
        }
        Ok(None)
    }

    /// One schedule field: `*`, `*/n`, `v`, `a:b`, or a list `[v, a:b, ...]`.
    /// `*/n` matches the multiples of n in the field's range, as Esper has
    /// it (days of month `*/2` are 2, 4, ...; months `*/3` are 3, 6, 9, 12).
    fn cron_field(&mut self, what: &str, lo: u32, hi: u32) -> Result<u64> {
        let all = |step: u32| {
            (lo..=hi)
                .filter(|v| v % step == 0)
                .fold(0u64, |m, v| m | 1 << v)
        };
        let value = |p: &mut Parser| -> Result<u32> {
            match p.peek().tok {
                Tok::Int(n) if n >= lo as i64 && n <= hi as i64 => {
                    p.bump();
                    Ok(n as u32)
                }
                _ => p.err(&format!("{what} between {lo} and {hi}")),
            }
        };
        let item = |p: &mut Parser| -> Result<u64> {
            if p.eat_sym("*") {
                if p.eat_sym("/") {
                    let step = match p.peek().tok {
                        Tok::Int(n) if n >= 1 && n <= hi as i64 => n as u32,
                        _ => return p.err(&format!("a step of {what} after '*/'")),
                    };
                    p.bump();
                    return Ok(all(step));
                }
                return Ok(all(1));
            }
            let a = value(p)?;
            if p.eat_sym(":") {
                let b = value(p)?;
                if b < a {
                    return p.err(&format!("a range of {what} from low to high"));
                }
                return Ok((a..=b).fold(0u64, |m, v| m | 1 << v));
            }
            Ok(1 << a)
        };
        if self.eat_sym("[") {
            let mut m = 0;
            loop {
                m |= item(self)?;
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym("]")?;
            return Ok(m);
        }
        item(self)
    }

    // ---- expressions ----

    fn expr(&mut self) -> Result<Expr> {
        let start = self.depth;
        self.enter()?;
        let e = self.or_expr()?;
        self.depth = start;
        Ok(e)
    }

    fn or_expr(&mut self) -> Result<Expr> {
        let start = self.depth;
        let mut l = self.and_expr()?;
        while self.eat_kw("or") {
            // A chain is a left-deep tree: one level per operator.
            self.enter()?;
            let r = self.and_expr()?;
            l = Expr::Binary(BinOp::Or, Box::new(l), Box::new(r));
        }
        self.depth = start;
        Ok(l)
    }

    fn and_expr(&mut self) -> Result<Expr> {
        let start = self.depth;
        let mut l = self.not_expr()?;
        // `output when <expr> and when terminated`: that `and` ends the expression.
        while self.is_kw("and") && !self.is_kw_at(1, "when") {
            self.bump();
            self.enter()?;
            let r = self.not_expr()?;
            l = Expr::Binary(BinOp::And, Box::new(l), Box::new(r));
        }
        self.depth = start;
        Ok(l)
    }

    fn not_expr(&mut self) -> Result<Expr> {
        if self.is_kw("not") {
            let start = self.depth;
            let p = self.pos();
            self.bump();
            self.enter()?;
            let e = self.not_expr()?;
            self.depth = start;
            return Ok(Expr::Unary(UnOp::Not, Box::new(e), p));
        }
        self.cmp_expr()
    }

    fn cmp_expr(&mut self) -> Result<Expr> {
        let l = self.add_expr()?;
        let op = match &self.peek().tok {
            Tok::Sym("=") => Some(BinOp::Eq),
            Tok::Sym("!=") | Tok::Sym("<>") => Some(BinOp::Ne),
            Tok::Sym("<") => Some(BinOp::Lt),
            Tok::Sym("<=") => Some(BinOp::Le),
            Tok::Sym(">") => Some(BinOp::Gt),
            Tok::Sym(">=") => Some(BinOp::Ge),
            _ => None,
        };
        if let Some(op) = op {
            self.bump();
            let r = self.add_expr()?;
            return Ok(Expr::Binary(op, Box::new(l), Box::new(r)));
        }
        if self.eat_kw("is") {
            let neg = self.eat_kw("not");
            self.expect_kw("null")?;
            return Ok(Expr::IsNull(Box::new(l), neg));
        }
        let neg = if self.is_kw("not")
            && (self.is_kw_at(1, "in")
                || self.is_kw_at(1, "between")
                || self.is_kw_at(1, "like")
                || self.is_kw_at(1, "regexp"))
        {
            self.bump();
            true
        } else {
            false
        };
        if self.eat_kw("in") {
            self.expect_sym("(")?;
            let mut list = Vec::new();
            loop {
                list.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
            self.expect_sym(")")?;
            return Ok(Expr::In(Box::new(l), list, neg));
        }
        if self.eat_kw("between") {
            let lo = self.add_expr()?;
            self.expect_kw("and")?;
            let hi = self.add_expr()?;
            return Ok(Expr::Between(Box::new(l), Box::new(lo), Box::new(hi), neg));
        }
        if self.eat_kw("like") {
            let p = self.add_expr()?;
            return Ok(Expr::Like(Box::new(l), Box::new(p), neg));
        }
        if self.eat_kw("regexp") {
            let p = self.add_expr()?;
            return Ok(Expr::Regexp(Box::new(l), Box::new(p), neg));
        }
        if neg {
            return self.err("'in', 'between', 'like' or 'regexp' after 'not'");
        }
        Ok(l)
    }

    fn add_expr(&mut self) -> Result<Expr> {
        let start = self.depth;
        let mut l = self.mul_expr()?;
        loop {
            let op = match &self.peek().tok {
                Tok::Sym("+") => BinOp::Add,
                Tok::Sym("-") => BinOp::Sub,
                Tok::Sym("||") => BinOp::Concat,
                _ => break,
            };
            self.bump();
            self.enter()?;
            let r = self.mul_expr()?;
            l = Expr::Binary(op, Box::new(l), Box::new(r));
        }
        self.depth = start;
        Ok(l)
    }

    fn mul_expr(&mut self) -> Result<Expr> {
        let start = self.depth;
        let mut l = self.unary_expr()?;
        loop {
            let op = match &self.peek().tok {
                Tok::Sym("*") => BinOp::Mul,
                Tok::Sym("/") => BinOp::Div,
                Tok::Sym("%") => BinOp::Mod,
                _ => break,
            };
            self.bump();
            self.enter()?;
            let r = self.unary_expr()?;
            l = Expr::Binary(op, Box::new(l), Box::new(r));
        }
        self.depth = start;
        Ok(l)
    }

    fn unary_expr(&mut self) -> Result<Expr> {
        let start = self.depth;
        if self.is_sym("-") {
            let p = self.pos();
            self.bump();
            self.enter()?;
            let e = self.unary_expr()?;
            self.depth = start;
            return Ok(match e {
                Expr::Lit(Value::Int(i), _) => Expr::Lit(Value::Int(-i), p),
                Expr::Lit(Value::Float(f), _) => Expr::Lit(Value::Float(-f), p),
                e => Expr::Unary(UnOp::Neg, Box::new(e), p),
            });
        }
        if self.eat_sym("+") {
            // No tree node, but one more frame of recursion.
            self.enter()?;
            let e = self.unary_expr()?;
            self.depth = start;
            return Ok(e);
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr> {
        let t = self.peek().clone();
        match t.tok {
            Tok::Int(i) => {
                self.bump();
                Ok(Expr::Lit(Value::Int(i), t.pos))
            }
            Tok::Float(f) => {
                self.bump();
                Ok(Expr::Lit(Value::Float(f), t.pos))
            }
            Tok::Str(s) => {
                self.bump();
                Ok(Expr::Lit(Value::from(s.as_str()), t.pos))
            }
            Tok::Sym("(") => {
                self.bump();
                let e = self.expr()?;
                self.expect_sym(")")?;
                Ok(e)
            }
            Tok::Ident(ref s) => {
                let lower = s.to_ascii_lowercase();
                match lower.as_str() {
                    "true" => {
                        self.bump();
                        return Ok(Expr::Lit(Value::Bool(true), t.pos));
                    }
                    "false" => {
                        self.bump();
                        return Ok(Expr::Lit(Value::Bool(false), t.pos));
                    }
                    "null" => {
                        self.bump();
                        return Ok(Expr::Lit(Value::Null, t.pos));
                    }
                    "case" => return self.case_expr(),
                    _ => {}
                }
                // first(x) / last(x) are aggregates although `first`/`last` are output keywords.
                if RESERVED.contains(&lower.as_str()) && !matches!(self.peek_at(1), Tok::Sym("(")) {
                    return self.err("an expression (a field, number, string or function call)");
                }
                let name = self.ident("a name")?;
                if self.eat_sym("(") {
                    return self.call(name);
                }
                if self.is_sym("[") && matches!(self.peek_at(1), Tok::Int(_)) {
                    self.bump();
                    let Tok::Int(index) = self.bump().tok else {
                        return self.err("an index");
                    };
                    self.expect_sym("]")?;
                    self.expect_sym(".")?;
                    let field = self.ident("a property name after 'tag[i].'")?;
                    return Ok(Expr::Indexed {
                        tag: name,
                        index: index.max(0) as usize,
                        name: field,
                    });
                }
                if self.is_sym(".") && matches!(self.peek_at(1), Tok::Ident(_)) {
                    self.bump();
                    let field = self.ident("a field name after '.'")?;
                    return Ok(Expr::Field {
                        qualifier: Some(name),
                        name: field,
                    });
                }
                Ok(Expr::Field {
                    qualifier: None,
                    name,
                })
            }
            _ => self.err("an expression (a field, number, string or function call)"),
        }
    }

    fn call(&mut self, name: Ident) -> Result<Expr> {
        if self.eat_sym("*") {
            self.expect_sym(")")?;
            return Ok(Expr::Call {
                name,
                distinct: false,
                star: true,
                args: Vec::new(),
            });
        }
        let distinct = self.eat_kw("distinct");
        let mut args = Vec::new();
        if !self.is_sym(")") {
            loop {
                args.push(self.expr()?);
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        self.expect_sym(")")?;
        Ok(Expr::Call {
            name,
            distinct,
            star: false,
            args,
        })
    }

    fn case_expr(&mut self) -> Result<Expr> {
        self.expect_kw("case")?;
        let operand = if self.is_kw("when") {
            None
        } else {
            Some(Box::new(self.expr()?))
        };
        let mut whens = Vec::new();
        while self.eat_kw("when") {
            let w = self.expr()?;
            self.expect_kw("then")?;
            let t = self.expr()?;
            whens.push((w, t));
        }
        if whens.is_empty() {
            return self.err("'when'");
        }
        let else_ = if self.eat_kw("else") {
            Some(Box::new(self.expr()?))
        } else {
            None
        };
        self.expect_kw("end")?;
        Ok(Expr::Case {
            operand,
            whens,
            else_,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_examples_parse() {
        let s = parse("select avg(memutil) as avgMemUtil\nfrom MemUtilEvent.win:time(20 sec)\nwhere avgMemUtil > 70").unwrap();
        let Body::Select(sel) = s.body else {
            panic!("not a select")
        };
        let From::Streams(st) = &sel.from else {
            panic!("not streams")
        };
        assert_eq!(st[0].name.name, "MemUtilEvent");
        assert!(matches!(st[0].views[0].args[0], ViewArg::Period(20_000, _)));
        let s = parse("select\nb.metricName as metricName1, b.metricValue as metricValue1,\nm.metricName as metricName2, m.metricValue as metricValue2\nfrom\nBWUtilization.win:length(1) as b,\nMemoryUtilization.win:length(1) as m\nwhere b.metricValue > 1.40012E9 and m.metricValue > 70").unwrap();
        let Body::Select(sel) = s.body else {
            panic!("not a select")
        };
        assert_eq!(sel.items.len(), 4);
    }

    #[test]
    fn pattern_precedence() {
        let s =
            parse("select * from pattern [every a=A -> b=B(b.x > a.x) where timer:within(30 sec)]")
                .unwrap();
        let Body::Select(sel) = s.body else {
            panic!("not a select")
        };
        let From::Pattern(PatternExpr::FollowedBy(parts), _) = &sel.from else {
            panic!("{:?}", sel.from)
        };
        assert!(matches!(parts[0], PatternExpr::Every(_)));
        assert!(matches!(parts[1], PatternExpr::Within(_, 30_000)));
    }

    #[test]
    fn errors_have_position_and_expectation() {
        let e = parse("select avg(x)\nfrom S.win:time(20 parsecs)").unwrap_err();
        let PqaError::Parse {
            pos,
            expected,
            found,
        } = e
        else {
            panic!("{e}")
        };
        assert_eq!((pos.line, pos.col), (2, 20));
        assert!(
            expected.contains("')'") || expected.contains("time unit"),
            "{expected}"
        );
        assert_eq!(found, "'parsecs'");
        let e = parse("select x S").unwrap_err();
        assert!(e.to_string().contains("'from'"), "{e}");
    }

    #[test]
    fn normalize_ignores_layout_and_keyword_case() {
        let a = normalize("SELECT  avg(x) FROM S.win:time(20 sec) -- c\n").unwrap();
        let b = normalize("select avg(x)\nfrom S.win:time(20 sec);").unwrap();
        assert_eq!(a, b);
        assert_ne!(
            a,
            normalize("select avg(X) from S.win:time(20 sec)").unwrap()
        );
    }

    #[test]
    fn periods_and_output() {
        let s = parse("select * from S#time(1 min 30 sec) output last every 2 seconds").unwrap();
        let Body::Select(sel) = s.body else { panic!() };
        let From::Streams(st) = &sel.from else {
            panic!()
        };
        assert!(matches!(st[0].views[0].args[0], ViewArg::Period(90_000, _)));
        let out = sel.output.unwrap();
        assert_eq!(out.kind, OutputKind::Last);
        assert_eq!(out.every, Some(OutputEvery::Time(2000)));
        assert!(out.after.is_none() && out.when.is_none());
        let s = parse("insert into Hot select x from S output every 5 events").unwrap();
        assert_eq!(s.insert_into.unwrap().name, "Hot");
    }

    fn nested(depth: usize) -> String {
        format!("select {}x{} from S", "(".repeat(depth), ")".repeat(depth))
    }

    fn is_depth_limit(e: &PqaError) -> bool {
        matches!(
            e,
            PqaError::Limit {
                setting: "limits.max_epl_depth",
                ..
            }
        )
    }

    #[test]
    fn nesting_just_over_the_depth_limit_is_refused_with_its_setting() {
        // The select item is one level, each parenthesis one more.
        parse_limited(&nested(9), 10).unwrap();
        let e = parse_limited(&nested(10), 10).unwrap_err();
        assert!(is_depth_limit(&e), "{e}");
        let text = e.to_string();
        assert!(text.contains("limit of 10"), "{text}");
        assert!(text.contains("limits.max_epl_depth"), "{text}");
    }

    #[test]
    fn every_kind_of_nesting_counts_toward_the_depth_limit() {
        let deep = DEFAULT_MAX_DEPTH + 1;
        let chains = [
            format!("select {}x from S", "not ".repeat(deep)),
            format!("select {}x from S", "- ".repeat(deep)),
            format!("select {}x from S", "+ ".repeat(deep)),
            format!(
                "select x from S where {}",
                vec!["a = 1"; deep + 1].join(" or ")
            ),
            format!(
                "select x from S where {}",
                vec!["a"; deep + 1].join(" and ")
            ),
            format!("select {} from S", vec!["1"; deep + 1].join(" + ")),
            format!("select {} from S", vec!["1"; deep + 1].join(" * ")),
            format!("select {}x{} from S", "f(".repeat(deep), ")".repeat(deep)),
            format!("select * from pattern [{}A]", "every ".repeat(deep)),
            format!(
                "select * from pattern [{}A{}]",
                "(".repeat(deep),
                ")".repeat(deep)
            ),
            format!(
                "select * from pattern [A{}]",
                " where timer:within(1 sec)".repeat(deep)
            ),
        ];
        for epl in chains {
            let e = parse(&epl).unwrap_err();
            assert!(is_depth_limit(&e), "{e} for {}", &epl[..60.min(epl.len())]);
        }
        // Long but flat lists are not nesting.
        parse(&format!(
            "select x from S where x in ({})",
            vec!["1"; 1000].join(",")
        ))
        .unwrap();
        parse(&format!(
            "select * from pattern [{}]",
            vec!["A"; 1000].join(" -> ")
        ))
        .unwrap();
    }

    #[test]
    fn two_hundred_thousand_parentheses_fail_without_overflowing_the_stack() {
        // This thread's stack is small on purpose: without the limit the
        // parser recurses 200,000 levels deep and aborts the test binary.
        let epl = nested(200_000);
        let e = std::thread::Builder::new()
            .stack_size(1024 * 1024)
            .spawn(move || parse(&epl).map(|_| ()))
            .unwrap()
            .join()
            .unwrap()
            .unwrap_err();
        assert!(is_depth_limit(&e), "{e}");
    }
}
