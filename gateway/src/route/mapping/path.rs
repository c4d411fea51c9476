//! Paths into a JSON payload and the templates built from them.
//!
//! A path is dot-separated object keys (`BME280.Temperature`); a segment of digits indexes an
//! array (`readings.0.value`). A template is literal text with `{topic.N}` (level N of the MQTT
//! topic, counting from 0) and `{payload.PATH}` (a string or integer field) substituted.

use serde_json::Value;

/// A dotted path, split once at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path {
    text: String,
    segments: Vec<String>,
}

impl Path {
    /// Parses `text`; empty segments (`a..b`, a leading or trailing dot) are refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if text.is_empty() || segments.iter().any(String::is_empty) {
            return Err(format!("{text:?} is not a path (keys joined by dots)"));
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The value at this path, if there is one.
    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.segments.iter().try_fold(root, |node, key| match node {
            Value::Object(map) => map.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// The number at this path (a boolean is 1 or 0), or why not, naming the path.
    pub fn number(&self, root: &Value) -> Result<f64, String> {
        match self.get(root) {
            None => Err(format!("path `{self}` is missing")),
            Some(v) => as_number(v)
                .ok_or_else(|| format!("path `{self}` is {}, not a number", describe(v))),
        }
    }
}

impl std::fmt::Display for Path {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// A number, or a boolean as 1 or 0 (a contact or an occupancy sensor).
pub fn as_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        _ => None,
    }
}

/// What a JSON value is, for an error message.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(s) if s.len() <= 40 => format!("the string {s:?}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Topic(usize),
    Payload(Path),
}

/// A compiled template such as `{topic.1}` or `owntracks-{topic.1}-{topic.2}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_owned()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("{text:?}: a `{{` is not closed"))?
                + open;
            let inner = &rest[open + 1..close];
            pieces.push(if let Some(level) = inner.strip_prefix("topic.") {
                Piece::Topic(level.parse().map_err(|_| {
                    format!("{text:?}: `{{{inner}}}` needs a level number, as in {{topic.1}}")
                })?)
            } else if let Some(path) = inner.strip_prefix("payload.") {
                Piece::Payload(Path::parse(path)?)
            } else {
                return Err(format!(
                    "{text:?}: `{{{inner}}}` is not {{topic.N}} or {{payload.PATH}}"
                ));
            });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("{text:?}: a `}}` without its `{{`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_owned()));
        }
        if pieces.is_empty() {
            return Err("a template may not be empty".into());
        }
        Ok(Self { pieces })
    }

    /// The text for a publish on `topic` with `payload`, or why not.
    pub fn render(&self, topic: &str, payload: &Value) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Topic(n) => out.push_str(
                    topic
                        .split('/')
                        .nth(*n)
                        .ok_or_else(|| format!("topic {topic:?} has no level {n}"))?,
                ),
                Piece::Payload(path) => match path.get(payload) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Number(n)) if n.is_u64() || n.is_i64() => {
                        out.push_str(&n.to_string())
                    }
                    Some(v) => {
                        return Err(format!(
                            "path `{path}` is {}, not a string or an integer",
                            describe(v)
                        ))
                    }
                    None => return Err(format!("path `{path}` is missing")),
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_walk_objects_and_arrays() {
        let v = json!({"a": {"b": [10, {"c": true}]}});
        assert_eq!(Path::parse("a.b.0").unwrap().number(&v), Ok(10.0));
        assert_eq!(Path::parse("a.b.1.c").unwrap().number(&v), Ok(1.0));
        let err = Path::parse("a.x").unwrap().number(&v).unwrap_err();
        assert_eq!(err, "path `a.x` is missing");
        let err = Path::parse("a").unwrap().number(&v).unwrap_err();
        assert_eq!(err, "path `a` is an object, not a number");
        assert!(Path::parse("a..b").is_err());
        assert!(Path::parse("").is_err());
    }

    #[test]
    fn templates_substitute_topic_levels_and_payload_fields() {
        let t = Template::parse("owntracks-{topic.1}-{payload.tid}").unwrap();
        let v = json!({"tid": "JJ"});
        assert_eq!(
            t.render("owntracks/jane/phone", &v).unwrap(),
            "owntracks-jane-JJ"
        );
        assert_eq!(
            t.render("owntracks", &v).unwrap_err(),
            "topic \"owntracks\" has no level 1"
        );
        for bad in ["{topic.x}", "{nope}", "{topic.1", "a}", ""] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
