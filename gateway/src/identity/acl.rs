//! The ACL: which topics an authenticated device may publish on.
//!
//! Deny by default. Two rules are built in: a device may publish under its own id,
//! `devices/{device}/#`, and a Sparkplug B edge node under its own edge node id in any group,
//! `spBv1.0/+/+/{device}/#` (its node and device messages; commands it might publish there are
//! refused by the decoder, not stored). Configured rules (`[[auth.acl]]`) add to it or take from it; each names
//! the devices it applies to (a glob over authenticated ids) and lists `allow` and `deny` topic
//! filters. Filters are MQTT filters (`+` one level, `#` the rest) in which `{device}` stands for
//! the publishing device's id; like Mosquitto's `%c` and EMQX's `${clientid}`, it must be a whole
//! level. A `deny` that matches wins over every `allow`.
//!
//! TCP events are checked against the topic they would have over MQTT,
//! `devices/{event's device id}/{readings|position}`, so one ACL governs both protocols.
//! Anonymous connections (allowed on loopback listeners) are not subject to the ACL: they have
//! no identity to check against.

use crate::route::glob_matches;

/// One level of a compiled filter.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Level {
    Literal(String),
    /// `+`
    One,
    /// `#` (always last)
    Rest,
    /// `{device}`
    Device,
}

/// A compiled topic filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    levels: Vec<Level>,
}

impl Filter {
    /// Compiles a filter, or says what is wrong with it.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("a topic filter may not be empty".into());
        }
        let parts: Vec<&str> = text.split('/').collect();
        let mut levels = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            levels.push(match *part {
                "#" if i == parts.len() - 1 => Level::Rest,
                "+" => Level::One,
                "{device}" => Level::Device,
                p if p.contains(['+', '#']) => {
                    return Err(format!(
                        "{text:?}: + and # must be whole levels, and # the last one"
                    ))
                }
                p if p.contains(['{', '}']) => {
                    return Err(format!(
                        "{text:?}: the only placeholder is {{device}}, as a whole level"
                    ))
                }
                p => Level::Literal(p.to_owned()),
            });
        }
        Ok(Self { levels })
    }

    /// Whether `topic`, published by `device`, matches.
    pub fn matches(&self, topic: &str, device: &str) -> bool {
        let mut parts = topic.split('/');
        for level in &self.levels {
            match (level, parts.next()) {
                (Level::Rest, _) => return true,
                (Level::One, Some(_)) => {}
                (Level::Device, Some(p)) if p == device => {}
                (Level::Literal(l), Some(p)) if l == p => {}
                _ => return false,
            }
        }
        parts.next().is_none()
    }
}

/// One `[[auth.acl]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Glob over authenticated device ids.
    pub devices: String,
    pub allow: Vec<Filter>,
    pub deny: Vec<Filter>,
}

/// The compiled ACL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acl {
    rules: Vec<Rule>,
    own: Vec<Filter>,
}

impl Default for Acl {
    fn default() -> Self {
        Self::new(Vec::new())
    }
}

impl Acl {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules,
            own: vec![
                Filter {
                    levels: vec![Level::Literal("devices".into()), Level::Device, Level::Rest],
                },
                Filter {
                    levels: vec![
                        Level::Literal("spBv1.0".into()),
                        Level::One,
                        Level::One,
                        Level::Device,
                        Level::Rest,
                    ],
                },
            ],
        }
    }

    /// Whether `device` may publish on `topic`.
    pub fn may_publish(&self, device: &str, topic: &str) -> bool {
        let applicable = || {
            self.rules
                .iter()
                .filter(|r| glob_matches(&r.devices, device))
        };
        if applicable().any(|r| r.deny.iter().any(|f| f.matches(topic, device))) {
            return false;
        }
        self.own.iter().any(|f| f.matches(topic, device))
            || applicable().any(|r| r.allow.iter().any(|f| f.matches(topic, device)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(devices: &str, allow: &[&str], deny: &[&str]) -> Rule {
        Rule {
            devices: devices.into(),
            allow: allow.iter().map(|f| Filter::parse(f).unwrap()).collect(),
            deny: deny.iter().map(|f| Filter::parse(f).unwrap()).collect(),
        }
    }

    #[test]
    fn a_device_may_publish_under_its_own_id_only_by_default() {
        let acl = Acl::default();
        assert!(acl.may_publish("env-1", "devices/env-1/readings"));
        assert!(acl.may_publish("env-1", "devices/env-1/position/pc"));
        assert!(!acl.may_publish("env-1", "devices/env-2/readings"));
        assert!(!acl.may_publish("env-1", "devices/env-10/readings"));
        assert!(!acl.may_publish("env-1", "other/env-1/readings"));
        assert!(acl.may_publish("Line3", "spBv1.0/Plant1/NDATA/Line3"));
        assert!(acl.may_publish("Line3", "spBv1.0/Plant1/DDATA/Line3/Press7"));
        assert!(!acl.may_publish("Line3", "spBv1.0/Plant1/NDATA/Line4"));
        assert!(!acl.may_publish("Line3", "spBv1.0/Plant1/DDATA/Line4/Line3"));
    }

    #[test]
    fn an_allow_rule_extends_and_a_deny_rule_wins() {
        let acl = Acl::new(vec![
            rule("tracker-*", &["devices/+/position"], &[]),
            rule("*", &[], &["devices/{device}/debug/#"]),
        ]);
        assert!(acl.may_publish("tracker-1", "devices/trailer-9/position"));
        assert!(!acl.may_publish("tracker-1", "devices/trailer-9/readings"));
        assert!(acl.may_publish("tracker-1", "devices/tracker-1/readings"));
        assert!(!acl.may_publish("env-1", "devices/trailer-9/position"));
        assert!(!acl.may_publish("env-1", "devices/env-1/debug/x"));
        assert!(acl.may_publish("env-1", "devices/env-1/readings"));
    }

    #[test]
    fn placeholders_must_be_whole_levels() {
        assert!(Filter::parse("devices/{device}-x/#").is_err());
        assert!(Filter::parse("devices/{client}/#").is_err());
        assert!(Filter::parse("a/#/b").is_err());
        assert!(Filter::parse("a/b+").is_err());
        assert!(Filter::parse("").is_err());
        assert!(Filter::parse("devices/+/{device}/#").is_ok());
    }

    #[test]
    fn filters_match_like_mqtt() {
        let f = Filter::parse("a/+/c/#").unwrap();
        assert!(f.matches("a/b/c", "d"));
        assert!(f.matches("a/b/c/d/e", "d"));
        assert!(!f.matches("a/b", "d"));
        let exact = Filter::parse("a/{device}").unwrap();
        assert!(exact.matches("a/d", "d"));
        assert!(!exact.matches("a/d/e", "d"));
    }
}
