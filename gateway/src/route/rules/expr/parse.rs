//! Reading an expression: the tokens, a recursive-descent parser with a depth limit, and the
//! type check that runs before any event is seen. Every error names the byte offset where the
//! text went wrong.

use tributary_protocol::PositionField;

use super::{Arith, Cmp, ExprError, Field, Node, Type};

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
        if out.len() == MAX_TOKENS {
            return Err(ExprError {
                at: start,
                message: format!(
                    "too long: more than {MAX_TOKENS} tokens (a chain of terms this long would \
                     overflow the evaluation's stack; split it into several rules)"
                ),
            });
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

/// Tokens an expression may have. Chained terms (`a or b or c …`) build a tree as deep as the
/// chain, which the type check and every evaluation walk recursively: with at most this many
/// tokens and [`MAX_DEPTH`] of nesting, that walk stays a few hundred frames deep, well within the
/// spool writer's stack, so no configuration `check-config` accepts can crash the gateway.
pub const MAX_TOKENS: usize = 512;

struct Parser {
    tokens: Vec<(usize, Token)>,
    pos: usize,
    end: usize,
}

/// Nesting deeper than this is refused (a config expression never needs it, and it bounds the
/// recursion).
const MAX_DEPTH: usize = 64;

pub(super) fn parse_typed(text: &str, want: Type) -> Result<Node, ExprError> {
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
            other => match (
                PositionField::from_name(other),
                other.strip_prefix("values."),
            ) {
                (Some(f), _) => Field::Position(f),
                (None, Some(value)) if !value.is_empty() => Field::Value(value.to_owned()),
                _ => {
                    let position: Vec<&str> = PositionField::ALL.iter().map(|f| f.name()).collect();
                    return Err(ExprError {
                        at: self.tokens.get(self.pos - 1).map_or(0, |(a, _)| *a),
                        message: format!(
                            "unknown field {other:?} (fields: values.<name>, seq, time_ms, {})",
                            position.join(", ")
                        ),
                    });
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
