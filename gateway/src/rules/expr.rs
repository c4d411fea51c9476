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

use tributary_protocol::{Body, Event};

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
    Lat,
    Lon,
    AltM,
    SpeedMps,
    HeadingDeg,
    Hdop,
    Satellites,
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
        (Body::Position(p), Field::Lat) => Value::Num(p.lat),
        (Body::Position(p), Field::Lon) => Value::Num(p.lon),
        (Body::Position(p), Field::AltM) => num(p.alt_m.map(f64::from)),
        (Body::Position(p), Field::SpeedMps) => num(p.speed_mps.map(f64::from)),
        (Body::Position(p), Field::HeadingDeg) => num(p.heading_deg.map(f64::from)),
        (Body::Position(p), Field::Hdop) => num(p.hdop.map(f64::from)),
        (Body::Position(p), Field::Satellites) => num(p.satellites.map(f64::from)),
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

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Num(f64),
    Ident(String),
    Op(&'static str),
    Open,
    Close,
    Comma,
}

fn tokens(text: &str) -> Result<Vec<(usize, Token)>, ExprError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            while i < bytes.len()
                && (bytes[i].is_ascii_digit()
                    || bytes[i] == b'.'
                    || ((bytes[i] == b'e' || bytes[i] == b'E')
                        && bytes
                            .get(i + 1)
                            .is_some_and(|d| d.is_ascii_digit() || *d == b'-' || *d == b'+'))
                    || ((bytes[i] == b'-' || bytes[i] == b'+')
                        && matches!(bytes.get(i.wrapping_sub(1)), Some(b'e' | b'E'))))
            {
                i += 1;
            }
            let s = &text[start..i];
            let n = s.parse::<f64>().map_err(|_| ExprError {
                at: start,
                message: format!("{s:?} is not a number"),
            })?;
            out.push((start, Token::Num(n)));
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.'))
            {
                i += 1;
            }
            out.push((start, Token::Ident(text[start..i].to_owned())));
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let (token, len) = match (two, c) {
            ("<=", _) => (Token::Op("<="), 2),
            (">=", _) => (Token::Op(">="), 2),
            ("==", _) => (Token::Op("=="), 2),
            ("!=", _) => (Token::Op("!="), 2),
            (_, b'<') => (Token::Op("<"), 1),
            (_, b'>') => (Token::Op(">"), 1),
            (_, b'+') => (Token::Op("+"), 1),
            (_, b'-') => (Token::Op("-"), 1),
            (_, b'*') => (Token::Op("*"), 1),
            (_, b'/') => (Token::Op("/"), 1),
            (_, b'(') => (Token::Open, 1),
            (_, b')') => (Token::Close, 1),
            (_, b',') => (Token::Comma, 1),
            _ => {
                let ch = text[i..].chars().next().unwrap_or('?');
                return Err(ExprError {
                    at: i,
                    message: format!("unexpected {ch:?}"),
                });
            }
        };
        out.push((start, token));
        i += len;
    }
    Ok(out)
}

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
}

/// Nesting deeper than this is refused (a config expression never needs it, and it bounds the
/// recursion).
const MAX_DEPTH: usize = 64;

fn parse_typed(text: &str, want: Type) -> Result<Node, ExprError> {
    let mut p = Parser {
        tokens: tokens(text)?,
        pos: 0,
        end: text.len(),
    };
    let node = p.or(0)?;
    if let Some((at, t)) = p.tokens.get(p.pos) {
        return Err(ExprError {
            at: *at,
            message: format!("unexpected {}", describe(t)),
        });
    }
    let got = type_of(&node, 0)?;
    if got != want {
        return Err(ExprError {
            at: 0,
            message: match want {
                Type::Bool => "this is a number; a condition (true or false) is needed".into(),
                Type::Num => "this is a condition; a number is needed".into(),
            },
        });
    }
    Ok(node)
}

fn describe(t: &Token) -> String {
    match t {
        Token::Num(n) => format!("number {n}"),
        Token::Ident(s) => format!("{s:?}"),
        Token::Op(o) => format!("{o:?}"),
        Token::Open => "\"(\"".into(),
        Token::Close => "\")\"".into(),
        Token::Comma => "\",\"".into(),
    }
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(a, _)| *a)
    }

    fn error<T>(&self, message: impl Into<String>) -> Result<T, ExprError> {
        Err(ExprError {
            at: self.at(),
            message: message.into(),
        })
    }

    fn deeper(&self, depth: usize) -> Result<usize, ExprError> {
        if depth >= MAX_DEPTH {
            return self.error("nested too deeply");
        }
        Ok(depth + 1)
    }

    fn keyword(&mut self, word: &str) -> bool {
        if matches!(self.peek(), Some(Token::Ident(s)) if s == word) {
            self.pos += 1;
            return true;
        }
        false
    }

    fn or(&mut self, depth: usize) -> Result<Node, ExprError> {
        let depth = self.deeper(depth)?;
        let mut left = self.and(depth)?;
        while self.keyword("or") {
            left = Node::Or(Box::new(left), Box::new(self.and(depth)?));
        }
        Ok(left)
    }

    fn and(&mut self, depth: usize) -> Result<Node, ExprError> {
        let mut left = self.not(depth)?;
        while self.keyword("and") {
            left = Node::And(Box::new(left), Box::new(self.not(depth)?));
        }
        Ok(left)
    }

    fn not(&mut self, depth: usize) -> Result<Node, ExprError> {
        if self.keyword("not") {
            let depth = self.deeper(depth)?;
            return Ok(Node::Not(Box::new(self.not(depth)?)));
        }
        self.comparison(depth)
    }

    fn comparison(&mut self, depth: usize) -> Result<Node, ExprError> {
        let left = self.sum(depth)?;
        let op = match self.peek() {
            Some(Token::Op("<")) => Cmp::Lt,
            Some(Token::Op("<=")) => Cmp::Le,
            Some(Token::Op(">")) => Cmp::Gt,
            Some(Token::Op(">=")) => Cmp::Ge,
            Some(Token::Op("==")) => Cmp::Eq,
            Some(Token::Op("!=")) => Cmp::Ne,
            _ => return Ok(left),
        };
        self.pos += 1;
        let right = self.sum(depth)?;
        if matches!(
            self.peek(),
            Some(Token::Op("<" | "<=" | ">" | ">=" | "==" | "!="))
        ) {
            return self.error("comparisons do not chain; join them with `and`");
        }
        Ok(Node::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn sum(&mut self, depth: usize) -> Result<Node, ExprError> {
        let mut left = self.product(depth)?;
        loop {
            let op = match self.peek() {
                Some(Token::Op("+")) => Arith::Add,
                Some(Token::Op("-")) => Arith::Sub,
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Node::Arith(op, Box::new(left), Box::new(self.product(depth)?));
        }
    }

    fn product(&mut self, depth: usize) -> Result<Node, ExprError> {
        let mut left = self.unary(depth)?;
        loop {
            let op = match self.peek() {
                Some(Token::Op("*")) => Arith::Mul,
                Some(Token::Op("/")) => Arith::Div,
                _ => return Ok(left),
            };
            self.pos += 1;
            left = Node::Arith(op, Box::new(left), Box::new(self.unary(depth)?));
        }
    }

    fn unary(&mut self, depth: usize) -> Result<Node, ExprError> {
        if matches!(self.peek(), Some(Token::Op("-"))) {
            self.pos += 1;
            let depth = self.deeper(depth)?;
            return Ok(Node::Neg(Box::new(self.unary(depth)?)));
        }
        self.primary(depth)
    }

    fn primary(&mut self, depth: usize) -> Result<Node, ExprError> {
        let Some(token) = self.peek().cloned() else {
            return self.error("the expression ends too soon");
        };
        let at = self.at();
        let here = |message: String| Err(ExprError { at, message });
        self.pos += 1;
        match token {
            Token::Num(n) => Ok(Node::Num(n)),
            Token::Open => {
                let inner = self.or(depth)?;
                if self.peek() != Some(&Token::Close) {
                    return self.error("\")\" expected");
                }
                self.pos += 1;
                Ok(inner)
            }
            Token::Ident(name) if self.peek() == Some(&Token::Open) => {
                self.pos += 1;
                let mut args = vec![self.or(depth)?];
                while self.peek() == Some(&Token::Comma) {
                    self.pos += 1;
                    args.push(self.or(depth)?);
                }
                if self.peek() != Some(&Token::Close) {
                    return self.error("\")\" or \",\" expected");
                }
                self.pos += 1;
                match (name.as_str(), args.len()) {
                    ("abs", 1) => Ok(Node::Abs(Box::new(args.remove(0)))),
                    ("min", _) => Ok(Node::Min(args)),
                    ("max", _) => Ok(Node::Max(args)),
                    ("abs", n) => here(format!("abs takes one argument, not {n}")),
                    (other, _) => here(format!(
                        "unknown function {other:?} (there are abs, min and max)"
                    )),
                }
            }
            Token::Ident(name) => self.named(&name),
            other => here(format!("unexpected {}", describe(&other))),
        }
    }

    fn named(&self, name: &str) -> Result<Node, ExprError> {
        let field = match name {
            "true" => return Ok(Node::Bool(true)),
            "false" => return Ok(Node::Bool(false)),
            "seq" => Field::Seq,
            "time_ms" => Field::TimeMs,
            "lat" => Field::Lat,
            "lon" => Field::Lon,
            "alt_m" => Field::AltM,
            "speed_mps" => Field::SpeedMps,
            "heading_deg" => Field::HeadingDeg,
            "hdop" => Field::Hdop,
            "satellites" => Field::Satellites,
            other => match other.strip_prefix("values.") {
                Some(value) if !value.is_empty() => Field::Value(value.to_owned()),
                _ => {
                    return Err(ExprError {
                        at: self.tokens.get(self.pos - 1).map_or(0, |(a, _)| *a),
                        message: format!(
                            "unknown field {other:?} (fields: values.<name>, seq, time_ms, lat, \
                             lon, alt_m, speed_mps, heading_deg, hdop, satellites)"
                        ),
                    })
                }
            },
        };
        Ok(Node::Field(field))
    }
}

fn type_of(node: &Node, depth: usize) -> Result<Type, ExprError> {
    let err = |message: &str| ExprError {
        at: 0,
        message: message.to_owned(),
    };
    let depth = depth + 1;
    let num = |n: &Node| -> Result<(), ExprError> {
        match type_of(n, depth)? {
            Type::Num => Ok(()),
            Type::Bool => Err(err("a condition is used where a number is needed")),
        }
    };
    let boolean = |n: &Node| -> Result<(), ExprError> {
        match type_of(n, depth)? {
            Type::Bool => Ok(()),
            Type::Num => Err(err(
                "a number is used where a condition is needed (compare it: `x > 0`)",
            )),
        }
    };
    match node {
        Node::Num(_) | Node::Field(_) => Ok(Type::Num),
        Node::Bool(_) => Ok(Type::Bool),
        Node::Neg(a) | Node::Abs(a) => num(a).map(|()| Type::Num),
        Node::Arith(_, a, b) => num(a).and_then(|()| num(b)).map(|()| Type::Num),
        Node::Min(args) | Node::Max(args) => {
            for a in args {
                num(a)?;
            }
            Ok(Type::Num)
        }
        Node::Not(a) => boolean(a).map(|()| Type::Bool),
        Node::And(a, b) | Node::Or(a, b) => {
            boolean(a).and_then(|()| boolean(b)).map(|()| Type::Bool)
        }
        Node::Cmp(op, a, b) => {
            let (ta, tb) = (type_of(a, depth)?, type_of(b, depth)?);
            match (ta, tb, op) {
                (Type::Num, Type::Num, _) => Ok(Type::Bool),
                (Type::Bool, Type::Bool, Cmp::Eq | Cmp::Ne) => Ok(Type::Bool),
                _ => Err(err(
                    "only numbers are ordered; conditions compare with == and != only",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_protocol::Position;

    fn reading(values: &[(&str, f64)]) -> Event {
        crate::rules::test_reading("d", 7, 1_000, values)
    }

    fn holds(text: &str, event: &Event) -> bool {
        Condition::parse(text).unwrap().holds(event)
    }

    #[test]
    fn arithmetic_comparison_and_logic_follow_precedence() {
        let e = reading(&[("t", 31.0), ("h", 40.0)]);
        assert!(holds("values.t > 30 and values.h < 50", &e));
        assert!(holds("values.t - 1 * 2 == 29", &e));
        assert!(holds("(values.t - 1) * 2 == 60", &e));
        assert!(holds("not values.t < 30 or false", &e));
        assert!(holds(
            "abs(-values.t) == 31 and min(values.t, values.h, 35) == 31",
            &e
        ));
        assert!(holds(
            "max(1, 2e1, -3) == 20 and seq == 7 and time_ms >= 1000",
            &e
        ));
        assert!(!holds("values.t > 30 and values.h > 50", &e));
        assert!(holds("(values.t > 30) == true", &e));
    }

    #[test]
    fn a_missing_field_makes_a_condition_not_hold_unless_logic_decides_it() {
        let e = reading(&[("t", 31.0)]);
        assert!(!holds("values.humidity > 0", &e));
        assert!(!holds("not values.humidity > 0", &e));
        assert!(!holds("speed_mps > 1", &e), "a reading has no speed");
        assert!(holds("values.humidity > 0 or values.t > 30", &e));
        assert!(!holds("values.humidity > 0 and values.t > 30", &e));
        assert!(!holds("values.t > 100 and values.humidity > 0", &e));
        assert_eq!(
            Number::parse("values.humidity + 1").unwrap().value(&e),
            None
        );
    }

    #[test]
    fn position_fields_resolve() {
        let e = Event {
            device_id: "truck".into(),
            seq: 1,
            time_ms: 0,
            body: Body::Position(Position {
                lat: 52.5,
                lon: 13.4,
                alt_m: None,
                speed_mps: Some(25.0),
                heading_deg: None,
                hdop: Some(0.9),
                satellites: Some(9),
                fix: tributary_protocol::FixQuality::Gps,
            }),
        };
        assert!(holds(
            "speed_mps * 3.6 > 89 and hdop < 2 and satellites >= 4",
            &e
        ));
        assert!(holds("lat > 52 and lon < 14", &e));
        assert!(!holds("alt_m > -1000", &e));
        assert_eq!(
            Number::parse("speed_mps * 2").unwrap().value(&e),
            Some(50.0)
        );
    }

    #[test]
    fn mistakes_are_refused_with_where_and_why() {
        for (text, at, says) in [
            ("values.t >", 10, "ends too soon"),
            ("values.t > 3 3", 13, "unexpected number 3"),
            ("temperature > 3", 0, "unknown field \"temperature\""),
            ("values.t > 1 < 2", 13, "do not chain"),
            ("sqrt(values.t) > 1", 0, "unknown function \"sqrt\""),
            ("values.t >> 3", 10, "unexpected \">\""),
            ("values.t $ 2", 9, "unexpected '$'"),
            ("(values.t > 1", 13, "\")\" expected"),
        ] {
            let e = Condition::parse(text).unwrap_err();
            assert!(e.message.contains(says), "{text}: {e}");
            assert_eq!(e.at, at, "{text}: {e}");
        }
        for (text, says) in [
            ("values.t + 1", "a number; a condition"),
            ("values.t and true", "a number is used where a condition"),
            ("true > false", "only numbers are ordered"),
            (
                "abs(values.t > 1) > 0",
                "a condition is used where a number",
            ),
        ] {
            let e = Condition::parse(text).unwrap_err();
            assert!(e.message.contains(says), "{text}: {e}");
        }
        assert!(Number::parse("values.t > 1").is_err());
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(Number::parse(&deep)
            .unwrap_err()
            .message
            .contains("nested too deeply"));
    }

    #[test]
    fn nan_and_infinity_never_panic_and_nan_compares_false() {
        let e = reading(&[("z", 0.0)]);
        assert!(holds("1 / values.z > 1000", &e));
        assert!(!holds("values.z / values.z > 0", &e));
        assert!(!holds("values.z / values.z <= 0", &e));
    }
}
