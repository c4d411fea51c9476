//! Rule expressions: the small language of a `filter` rule's `where` (and, later, of other
//! rules' conditions).
//!
//! ```text
//! values.temperature > 30 and abs(values.vibration) >= 2.5
//! speed_mps * 3.6 > 90 or not (hdop < 2)
//! ```
//!
//! - Fields: `values.<name>` (a reading's value by name; names with a `-` cannot be named here,
//!   since `values.a-b` is a subtraction), `seq`, `time_ms`, and a position's `lat`, `lon`,
//!   `alt_m`, `speed_mps`, `heading_deg`, `hdop`, `satellites`.
//! - Numbers (`12`, `-0.5`, `1e3`), `+ - * /`, comparisons `< <= > >= == !=`, `and`, `or`,
//!   `not`, parentheses, `true`, `false`, and the functions `abs(x)`, `min(x, y, ...)`,
//!   `max(x, y, ...)`.
//!
//! Types are checked when the config is read: `values.t and 3` or `1 < 2 < 3` is an error that
//! names the position, never a surprise at run time. A field the event does not have (a reading
//! without that value, a position without `hdop`) is *missing*: arithmetic and comparisons with it
//! are missing too, `false and missing` is false, `true or missing` is true, and a condition
//! holds only when it is true. So `values.temperature > 30` never holds for a reading without a
//! temperature. Evaluation never panics: division by zero gives infinity or NaN as IEEE says, and
//! NaN compares false.

use tributary_protocol::{Body, Event, PositionField};

/// A parsed, type-checked condition.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition(Node);

/// A parsed, type-checked number: a rule's field or value expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Number(Node);

/// Why an expression was refused, with the byte offset where it went wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("at character {at}: {message}")]
pub struct ExprError {
    pub at: usize,
    pub message: String,
}

impl Condition {
    /// Parses `text`, which must be a condition (true or false).
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let node = parse_typed(text, Type::Bool)?;
        Ok(Self(node))
    }

    /// Whether the condition holds for `event` (missing fields make it not hold).
    pub fn holds(&self, event: &Event) -> bool {
        matches!(eval(&self.0, event), Value::Bool(true))
    }

    /// Whether the condition is definitely false for `event` (not merely missing a field).
    pub fn is_false(&self, event: &Event) -> bool {
        matches!(eval(&self.0, event), Value::Bool(false))
    }
}

impl Number {
    /// Parses `text`, which must be a number.
    pub fn parse(text: &str) -> Result<Self, ExprError> {
        let node = parse_typed(text, Type::Num)?;
        Ok(Self(node))
    }

    /// The value for `event`, or `None` when a field it needs is missing.
    pub fn value(&self, event: &Event) -> Option<f64> {
        match eval(&self.0, event) {
            Value::Num(n) => Some(n),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(f64),
    Bool(bool),
    Field(Field),
    Neg(Box<Node>),
    Not(Box<Node>),
    Arith(Arith, Box<Node>, Box<Node>),
    Cmp(Cmp, Box<Node>, Box<Node>),
    And(Box<Node>, Box<Node>),
    Or(Box<Node>, Box<Node>),
    Abs(Box<Node>),
    Min(Vec<Node>),
    Max(Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Field {
    Value(String),
    Seq,
    TimeMs,
    Position(PositionField),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Arith {
    Add,
    Sub,
    Mul,
    Div,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Cmp {
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Type {
    Num,
    Bool,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Value {
    Num(f64),
    Bool(bool),
    Missing,
}

fn field(event: &Event, f: &Field) -> Value {
    let num = |v: Option<f64>| v.map_or(Value::Missing, Value::Num);
    match (&event.body, f) {
        (_, Field::Seq) => Value::Num(event.seq as f64),
        (_, Field::TimeMs) => Value::Num(event.time_ms as f64),
        (Body::Reading(r), Field::Value(name)) => {
            num(r.values.iter().find(|v| &v.name == name).map(|v| v.value))
        }
        (Body::Position(p), Field::Position(f)) => num(f.get(p).map(|v| v.as_f64())),
        _ => Value::Missing,
    }
}

fn eval(node: &Node, event: &Event) -> Value {
    use Value::{Bool, Missing, Num};
    match node {
        Node::Num(n) => Num(*n),
        Node::Bool(b) => Bool(*b),
        Node::Field(f) => field(event, f),
        Node::Neg(a) => match eval(a, event) {
            Num(n) => Num(-n),
            _ => Missing,
        },
        Node::Not(a) => match eval(a, event) {
            Bool(b) => Bool(!b),
            _ => Missing,
        },
        Node::Arith(op, a, b) => match (eval(a, event), eval(b, event)) {
            (Num(x), Num(y)) => Num(match op {
                Arith::Add => x + y,
                Arith::Sub => x - y,
                Arith::Mul => x * y,
                Arith::Div => x / y,
            }),
            _ => Missing,
        },
        Node::Cmp(op, a, b) => match (eval(a, event), eval(b, event)) {
            (Num(x), Num(y)) => Bool(match op {
                Cmp::Lt => x < y,
                Cmp::Le => x <= y,
                Cmp::Gt => x > y,
                Cmp::Ge => x >= y,
                Cmp::Eq => x == y,
                Cmp::Ne => x != y,
            }),
            (Bool(x), Bool(y)) => Bool(match op {
                Cmp::Eq => x == y,
                _ => x != y,
            }),
            _ => Missing,
        },
        Node::And(a, b) => match (eval(a, event), eval(b, event)) {
            (Bool(false), _) | (_, Bool(false)) => Bool(false),
            (Bool(true), Bool(true)) => Bool(true),
            _ => Missing,
        },
        Node::Or(a, b) => match (eval(a, event), eval(b, event)) {
            (Bool(true), _) | (_, Bool(true)) => Bool(true),
            (Bool(false), Bool(false)) => Bool(false),
            _ => Missing,
        },
        Node::Abs(a) => match eval(a, event) {
            Num(n) => Num(n.abs()),
            _ => Missing,
        },
        Node::Min(args) | Node::Max(args) => {
            let mut out: Option<f64> = None;
            for a in args {
                let Num(n) = eval(a, event) else {
                    return Missing;
                };
                out = Some(match (out, node) {
                    (None, _) => n,
                    (Some(m), Node::Min(_)) => m.min(n),
                    (Some(m), _) => m.max(n),
                });
            }
            out.map_or(Missing, Num)
        }
    }
}

// ---- Parsing: tokens, then precedence climbing, then a type check. ----

mod parse;

use parse::parse_typed;

#[cfg(test)]
mod tests;
