//! The EPL syntax tree produced by the parser.

use crate::error::Pos;
use crate::value::{Kind, Value};

/// A name with the place it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Ident {
    /// The name as written.
    pub name: String,
    /// Where.
    pub pos: Pos,
}

/// One EPL statement.
#[derive(Debug, Clone)]
pub struct Statement {
    /// `insert into Other select ...`: results become events of `Other`.
    pub insert_into: Option<Ident>,
    /// Which rows `insert [istream|irstream|rstream] into` routes.
    pub insert_stream: StreamSel,
    /// What the statement is.
    pub body: Body,
}

/// Statement kinds.
#[derive(Debug, Clone)]
pub enum Body {
    /// A continuous query.
    Select(Box<Select>),
    /// `create schema Name (field type, ...)`.
    CreateSchema(CreateSchema),
}

/// `create schema`.
#[derive(Debug, Clone)]
pub struct CreateSchema {
    /// The stream name.
    pub name: Ident,
    /// Declared fields.
    pub fields: Vec<(Ident, Kind)>,
}

/// `select ... from ...`.
#[derive(Debug, Clone)]
pub struct Select {
    /// `select [istream|irstream|rstream]`: what listeners receive.
    pub stream: StreamSel,
    /// `select distinct`.
    pub distinct: bool,
    /// The select list.
    pub items: Vec<SelectItem>,
    /// Streams or a pattern.
    pub from: From,
    /// `where`.
    pub where_: Option<Expr>,
    /// `group by`.
    pub group_by: Vec<Expr>,
    /// `having`.
    pub having: Option<Expr>,
    /// `output ... every ...`.
    pub output: Option<OutputClause>,
    /// `order by expr [asc|desc]`.
    pub order_by: Vec<(Expr, bool)>,
    /// `limit n`.
    pub limit: Option<u64>,
}

/// Esper's stream selector: the insert stream (rows entering), the remove
/// stream (rows leaving) or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamSel {
    /// `istream` (the default): rows entering.
    #[default]
    IStream,
    /// `rstream`: rows leaving, delivered in place of the insert stream.
    RStream,
    /// `irstream`: both.
    IRStream,
}

impl StreamSel {
    /// Whether the remove stream is wanted.
    pub fn has_remove(self) -> bool {
        self != StreamSel::IStream
    }
}

/// One select-list entry.
#[derive(Debug, Clone)]
pub enum SelectItem {
    /// `*`.
    Wildcard(Pos),
    /// `alias.*`.
    StreamWildcard(Ident),
    /// `expr [as alias]`.
    Expr {
        /// The expression.
        expr: Expr,
        /// Its alias.
        alias: Option<Ident>,
    },
}

/// The from clause.
#[derive(Debug, Clone)]
pub enum From {
    /// One or more (joined) streams.
    Streams(Vec<StreamSpec>),
    /// `pattern [ ... ]`.
    Pattern(PatternExpr, Pos),
}

/// `Stream(filter).win:time(20 sec) as s`.
#[derive(Debug, Clone)]
pub struct StreamSpec {
    /// Stream name.
    pub name: Ident,
    /// Filter applied before the window.
    pub filter: Option<Expr>,
    /// Views (windows), in order.
    pub views: Vec<View>,
    /// `as alias`.
    pub alias: Option<Ident>,
    /// `unidirectional`: only this stream's events trigger the join.
    pub unidirectional: bool,
    /// How this stream joins the ones before it, when written with `join`.
    pub join: Option<Join>,
}

/// `[inner|left outer|right outer|full outer] join Stream ... on expr`.
#[derive(Debug, Clone)]
pub struct Join {
    /// Which side's events are kept without a match.
    pub kind: JoinKind,
    /// The `on` condition (optional for an inner join).
    pub on: Option<Expr>,
    /// Where the join keyword is.
    pub pos: Pos,
}

/// The kinds of join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    /// Only matching pairs.
    Inner,
    /// Also the left stream's events without a match.
    Left,
    /// Also the right stream's events without a match.
    Right,
    /// Also either side's events without a match.
    Full,
}

/// A data-window view such as `win:time(20 sec)` or `#length(5)`.
#[derive(Debug, Clone)]
pub struct View {
    /// `win`, `std`, or `#` for the newer spelling.
    pub namespace: String,
    /// View name.
    pub name: Ident,
    /// Parameters.
    pub args: Vec<ViewArg>,
}

/// A view parameter.
#[derive(Debug, Clone)]
pub enum ViewArg {
    /// A time period in milliseconds.
    Period(i64, Pos),
    /// Any other expression (a count, a field name).
    Expr(Expr),
}

/// `output [after ...] [all|first|last|snapshot] every N events|<time period>`,
/// `... at (<crontab>)`, `... when <trigger expression>` or `... when
/// terminated [and <expr>]`, optionally followed by `and when terminated
/// [and <expr>]`.
#[derive(Debug, Clone)]
pub struct OutputClause {
    /// Which of the buffered rows are output.
    pub kind: OutputKind,
    /// When; `None` for a bare `output after ...` and for `output when`.
    pub every: Option<OutputEvery>,
    /// `output after <period> | N events`: nothing is output before.
    pub after: Option<OutputEvery>,
    /// `output when <expr>`: output whenever the expression, over the
    /// built-in properties (`count_insert`, ...), is true after an update.
    pub when: Option<Box<Expr>>,
    /// `output when terminated` or `... and when terminated`: output when
    /// the statement's context partition ends.
    pub terminated: bool,
    /// `when terminated and <expr>`: output at termination only if the
    /// expression holds.
    pub terminated_and: Option<Box<Expr>>,
}

/// Which rows an output clause releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputKind {
    /// No keyword: every row of the interval, in order.
    Default,
    /// `all`: as the default, except that a grouped statement outputs one
    /// row per group (the last), also for groups not updated.
    All,
    /// `first`: the first row (per group when grouped), at once.
    First,
    /// `last`: the last row of the interval (per group when grouped).
    Last,
    /// `snapshot`: the statement's whole current result.
    Snapshot,
}

/// The output rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OutputEvery {
    /// Every N events.
    Events(u64),
    /// Every so many milliseconds.
    Time(i64),
    /// `at (minutes, hours, days of month, months, days of week [, seconds])`:
    /// whenever the crontab-like schedule matches.
    At(CronSpec),
}

/// Binary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BinOp {
    /// `or`
    Or,
    /// `and`
    And,
    /// `=`
    Eq,
    /// `!=` / `<>`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
    /// `%`
    Mod,
    /// `||`
    Concat,
}

/// Unary operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnOp {
    /// `not`
    Not,
    /// `-`
    Neg,
}

/// Expressions.
#[derive(Debug, Clone)]
pub enum Expr {
    /// A literal.
    Lit(Value, Pos),
    /// `name` or `qualifier.name`.
    Field {
        /// Stream alias, stream name or pattern tag.
        qualifier: Option<Ident>,
        /// Field name.
        name: Ident,
    },
    /// Unary operation.
    Unary(UnOp, Box<Expr>, Pos),
    /// Binary operation.
    Binary(BinOp, Box<Expr>, Box<Expr>),
    /// Function or aggregate call.
    Call {
        /// Function name.
        name: Ident,
        /// `count(distinct x)`.
        distinct: bool,
        /// `count(*)`.
        star: bool,
        /// Arguments.
        args: Vec<Expr>,
    },
    /// `x is [not] null`.
    IsNull(Box<Expr>, bool),
    /// `x [not] in (a, b)`.
    In(Box<Expr>, Vec<Expr>, bool),
    /// `x [not] between a and b`.
    Between(Box<Expr>, Box<Expr>, Box<Expr>, bool),
    /// `x [not] like 'a%'`.
    Like(Box<Expr>, Box<Expr>, bool),
    /// `x [not] regexp 'pattern'`: the whole string matches (as Java's `String.matches`).
    Regexp(Box<Expr>, Box<Expr>, bool),
    /// `tag[i].name`: a property of the i-th event a repeated pattern tag collected.
    Indexed {
        /// The tag.
        tag: Ident,
        /// Which of its events, 0 the first.
        index: usize,
        /// The property.
        name: Ident,
    },
    /// `case [operand] when .. then .. [else ..] end`.
    Case {
        /// Simple-case operand.
        operand: Option<Box<Expr>>,
        /// `when` / `then` pairs.
        whens: Vec<(Expr, Expr)>,
        /// `else`.
        else_: Option<Box<Expr>>,
    },
}

impl Expr {
    /// Where the expression starts.
    pub fn pos(&self) -> Pos {
        match self {
            Expr::Lit(_, p) | Expr::Unary(_, _, p) => *p,
            Expr::Field { qualifier, name } => qualifier.as_ref().map_or(name.pos, |q| q.pos),
            Expr::Indexed { tag, .. } => tag.pos,
            Expr::Binary(_, l, _) => l.pos(),
            Expr::Call { name, .. } => name.pos,
            Expr::IsNull(e, _)
            | Expr::In(e, _, _)
            | Expr::Between(e, ..)
            | Expr::Like(e, ..)
            | Expr::Regexp(e, ..) => e.pos(),
            Expr::Case { whens, .. } => whens.first().map(|w| w.0.pos()).unwrap_or_default(),
        }
    }

    /// Calls `f` on this expression and every sub-expression.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Lit(..) | Expr::Field { .. } | Expr::Indexed { .. } => {}
            Expr::Unary(_, e, _) | Expr::IsNull(e, _) => e.walk(f),
            Expr::Binary(_, l, r) | Expr::Like(l, r, _) | Expr::Regexp(l, r, _) => {
                l.walk(f);
                r.walk(f);
            }
            Expr::Call { args, .. } => args.iter().for_each(|a| a.walk(f)),
            Expr::In(e, list, _) => {
                e.walk(f);
                list.iter().for_each(|a| a.walk(f));
            }
            Expr::Between(a, b, c, _) => {
                a.walk(f);
                b.walk(f);
                c.walk(f);
            }
            Expr::Case {
                operand,
                whens,
                else_,
            } => {
                if let Some(o) = operand {
                    o.walk(f);
                }
                for (w, t) in whens {
                    w.walk(f);
                    t.walk(f);
                }
                if let Some(e) = else_ {
                    e.walk(f);
                }
            }
        }
    }
}

/// Pattern expressions (`pattern [ ... ]`).
#[derive(Debug, Clone)]
pub enum PatternExpr {
    /// `tag=Stream(filter)`.
    Filter {
        /// The tag the matching event is bound to.
        tag: Option<Ident>,
        /// Stream name.
        stream: Ident,
        /// Filter, may refer to earlier tags.
        filter: Option<Expr>,
    },
    /// `a -> b -> c`.
    FollowedBy(Vec<PatternExpr>),
    /// `a or b`.
    Or(Vec<PatternExpr>),
    /// `a and b`.
    And(Vec<PatternExpr>),
    /// `every a`.
    Every(Box<PatternExpr>),
    /// `not a`.
    Not(Box<PatternExpr>),
    /// `a where timer:within(period)`.
    Within(Box<PatternExpr>, i64),
    /// `timer:interval(period)`.
    Interval(i64),
    /// `every-distinct(a.x, ... [, period]) sub`: as `every`, but a match
    /// whose distinct values were seen (within the period) is dropped.
    EveryDistinct {
        /// The sub-expression.
        inner: Box<PatternExpr>,
        /// The distinct-value expressions.
        keys: Vec<Expr>,
        /// How long a seen value is remembered; forever when `None`.
        expiry: Option<i64>,
    },
    /// `timer:at(minutes, hours, days of month, months, days of week [, seconds])`.
    TimerAt(Box<CronSpec>),
    /// `[n] a`, `[n:m] a`, `a until b`, `[n:m] a until b`.
    Repeat {
        /// The repeated sub-expression; its tags collect every match.
        inner: Box<PatternExpr>,
        /// At least this many matches before `until` may end it.
        min: u32,
        /// At most this many: the expression turns true on the last.
        max: Option<u32>,
        /// Ends the repetition.
        until: Option<Box<PatternExpr>>,
    },
}

/// A crontab-like schedule: for each unit the set of values that match
/// (bit `v` set when `v` matches).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CronSpec {
    /// Minutes 0-59.
    pub minutes: u64,
    /// Hours 0-23.
    pub hours: u64,
    /// Days of the month 1-31.
    pub days_of_month: u64,
    /// Months 1-12.
    pub months: u64,
    /// Days of the week, 0 (Sunday) to 6.
    pub days_of_week: u64,
    /// Seconds 0-59 (0 only, when not given).
    pub seconds: u64,
    /// A special day (`last`, `lastweekday`, `N weekday` among days of the
    /// month, `last` / `N last` among days of the week): when set, it alone
    /// decides the day, as in Esper (a days-of-month operator wins).
    pub day_op: Option<CronDay>,
}

/// Esper's special crontab days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronDay {
    /// `last` among days of the month: the month's last day.
    LastOfMonth,
    /// `lastweekday`: the month's last Monday to Friday.
    LastWeekday,
    /// `N weekday`: the Monday to Friday nearest day N, within its month;
    /// `weekday` alone: any Monday to Friday.
    NearestWeekday(Option<u8>),
    /// `last` among days of the week: Saturday; `N last`: the month's last
    /// day of week N (0 is Sunday).
    LastOfWeek(Option<u8>),
}

impl std::fmt::Display for Expr {
    /// Canonical text: used as the column name of an unaliased select item
    /// and to recognise a group-by expression repeated in the select list.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expr::Lit(v, _) => match v {
                Value::Null => write!(f, "null"),
                Value::Bool(b) => write!(f, "{b}"),
                Value::Int(i) => write!(f, "{i}"),
                Value::Float(x) => write!(f, "{x}"),
                Value::Str(s) => write!(f, "'{}'", s.replace('\'', "''")),
                Value::Json(j) => write!(f, "{j}"),
            },
            Expr::Field {
                qualifier: Some(q),
                name,
            } => write!(f, "{}.{}", q.name, name.name),
            Expr::Field {
                qualifier: None,
                name,
            } => write!(f, "{}", name.name),
            Expr::Indexed { tag, index, name } => {
                write!(f, "{}[{index}].{}", tag.name, name.name)
            }
            Expr::Unary(UnOp::Not, e, _) => write!(f, "not {e}"),
            Expr::Unary(UnOp::Neg, e, _) => write!(f, "-{e}"),
            Expr::Binary(op, l, r) => {
                let s = match op {
                    BinOp::Or => "or",
                    BinOp::And => "and",
                    BinOp::Eq => "=",
                    BinOp::Ne => "!=",
                    BinOp::Lt => "<",
                    BinOp::Le => "<=",
                    BinOp::Gt => ">",
                    BinOp::Ge => ">=",
                    BinOp::Add => "+",
                    BinOp::Sub => "-",
                    BinOp::Mul => "*",
                    BinOp::Div => "/",
                    BinOp::Mod => "%",
                    BinOp::Concat => "||",
                };
                let paren = |e: &Expr| matches!(e, Expr::Binary(..));
                let (lp, rp) = (paren(l), paren(r));
                if lp {
                    write!(f, "({l})")?
                } else {
                    write!(f, "{l}")?
                }
                write!(f, " {s} ")?;
                if rp {
                    write!(f, "({r})")
                } else {
                    write!(f, "{r}")
                }
            }
            Expr::Call {
                name,
                distinct,
                star,
                args,
            } => {
                write!(f, "{}(", name.name.to_ascii_lowercase())?;
                if *star {
                    write!(f, "*")?;
                }
                if *distinct {
                    write!(f, "distinct ")?;
                }
                for (i, a) in args.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{a}")?;
                }
                write!(f, ")")
            }
            Expr::IsNull(e, neg) => write!(f, "{e} is {}null", if *neg { "not " } else { "" }),
            Expr::In(e, list, neg) => {
                write!(f, "{e} {}in (", if *neg { "not " } else { "" })?;
                for (i, a) in list.iter().enumerate() {
                    if i > 0 {
                        write!(f, ", ")?;
                    }
                    write!(f, "{a}")?;
                }
                write!(f, ")")
            }
            Expr::Between(e, lo, hi, neg) => {
                write!(
                    f,
                    "{e} {}between {lo} and {hi}",
                    if *neg { "not " } else { "" }
                )
            }
            Expr::Like(e, p, neg) => write!(f, "{e} {}like {p}", if *neg { "not " } else { "" }),
            Expr::Regexp(e, p, neg) => {
                write!(f, "{e} {}regexp {p}", if *neg { "not " } else { "" })
            }
            Expr::Case {
                operand,
                whens,
                else_,
            } => {
                write!(f, "case")?;
                if let Some(o) = operand {
                    write!(f, " {o}")?;
                }
                for (w, t) in whens {
                    write!(f, " when {w} then {t}")?;
                }
                if let Some(e) = else_ {
                    write!(f, " else {e}")?;
                }
                write!(f, " end")
            }
        }
    }
}
