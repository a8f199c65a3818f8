//! Label and field selectors, parsed and matched the way kube-apiserver does.

use serde_json::{Map, Value};

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
    GreaterThan(String, i64),
    LessThan(String, i64),
}

impl Requirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let get = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        let number = |key: &str| get(key).and_then(|v| v.parse::<i64>().ok());
        match self {
            Self::Equals(k, v) => get(k) == Some(v.as_str()),
            // Like Kubernetes: `!=` and `notin` also match objects without the label.
            Self::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|have| vs.iter().any(|v| v == have)),
            Self::NotIn(k, vs) => get(k).is_none_or(|have| vs.iter().all(|v| v != have)),
            Self::Exists(k) => get(k).is_some(),
            Self::DoesNotExist(k) => get(k).is_none(),
            Self::GreaterThan(k, n) => number(k).is_some_and(|have| have > *n),
            Self::LessThan(k, n) => number(k).is_some_and(|have| have < *n),
        }
    }
}

/// A parsed `labelSelector`: every requirement must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct LabelSelector {
    requirements: Vec<Requirement>,
}

impl LabelSelector {
    /// Parses the selector grammar of `k8s.io/apimachinery/pkg/labels` with its lexer and
    /// parser, and their messages: comma-separated `key`, `!key`, `key=value`, `key==value`,
    /// `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key>1`, `key<1`.
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        Parser::new(input)
            .parse()
            .map(|requirements| Self { requirements })
    }

    pub(crate) fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }
}

/// The tokens of the label selector lexer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    Error,
    End,
    ClosedPar,
    Comma,
    DoesNotExist,
    DoubleEquals,
    Equals,
    GreaterThan,
    Identifier,
    In,
    LessThan,
    NotEquals,
    NotIn,
    OpenPar,
}

fn keyword(s: &str) -> Option<Token> {
    Some(match s {
        ")" => Token::ClosedPar,
        "," => Token::Comma,
        "!" => Token::DoesNotExist,
        "==" => Token::DoubleEquals,
        "=" => Token::Equals,
        ">" => Token::GreaterThan,
        "in" => Token::In,
        "<" => Token::LessThan,
        "!=" => Token::NotEquals,
        "notin" => Token::NotIn,
        "(" => Token::OpenPar,
        _ => return None,
    })
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// The whole input as tokens, as the Go lexer scans it (byte by byte).
fn lex(input: &str) -> Vec<(Token, String)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut out = Vec::new();
    loop {
        while pos < bytes.len() && is_space(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() {
            out.push((Token::End, String::new()));
            return out;
        }
        let start = pos;
        if is_special(bytes[pos]) {
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special(bytes[pos]) {
                pos += 1;
                let text = &input[start..pos];
                if let Some(token) = keyword(text) {
                    last = Some((token, pos));
                } else if last.is_some() {
                    pos -= 1;
                    break;
                }
            }
            match last {
                Some((token, end)) => {
                    pos = end;
                    out.push((token, input[start..end].to_owned()));
                }
                None => out.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &input[start..pos]),
                )),
            }
        } else {
            while pos < bytes.len() && !is_special(bytes[pos]) && !is_space(bytes[pos]) {
                pos += 1;
            }
            let text = String::from_utf8_lossy(&bytes[start..pos]).into_owned();
            match keyword(&text) {
                Some(token) => out.push((token, text)),
                None => out.push((Token::Identifier, text)),
            }
        }
    }
}

/// Where a token is read: in values, `in` and `notin` are plain identifiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    position: usize,
}

/// An operator of a requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    In,
    NotIn,
    Equals,
    NotEquals,
    GreaterThan,
    LessThan,
    Exists,
    DoesNotExist,
}

impl Parser {
    fn new(input: &str) -> Self {
        Self {
            items: lex(input),
            position: 0,
        }
    }

    fn at(&self, index: usize, context: Context) -> (Token, String) {
        let (token, literal) = self
            .items
            .get(index)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        match token {
            Token::In | Token::NotIn if context == Context::Values => (Token::Identifier, literal),
            token => (token, literal),
        }
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.at(self.position, context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let item = self.at(self.position, context);
        self.position += 1;
        item
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut requirements = Vec::new();
        loop {
            let (token, literal) = self.lookahead(Context::Values);
            match token {
                Token::Identifier | Token::DoesNotExist => {
                    let requirement = self
                        .requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    requirements.push(requirement);
                    let (token, literal) = self.consume(Context::Values);
                    match token {
                        Token::End => return Ok(requirements),
                        Token::Comma => {
                            let (next, literal) = self.lookahead(Context::Values);
                            if next != Token::Identifier && next != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{literal}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => {
                            return Err(format!(
                                "found '{literal}', expected: ',' or 'end of string'"
                            ));
                        }
                    }
                }
                Token::End => return Ok(requirements),
                _ => {
                    return Err(format!(
                        "found '{literal}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn requirement(&mut self) -> Result<Requirement, String> {
        let (key, operator) = self.key_and_operator()?;
        let operator = match operator {
            Some(operator) => operator,
            None => self.operator()?,
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.values()?,
            Operator::Exists | Operator::DoesNotExist => Vec::new(),
            _ => self.exact_value()?,
        };
        new_requirement(key, operator, values)
    }

    fn key_and_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut operator = None;
        let (mut token, mut literal) = self.consume(Context::Values);
        if token == Token::DoesNotExist {
            operator = Some(Operator::DoesNotExist);
            (token, literal) = self.consume(Context::Values);
        }
        if token != Token::Identifier {
            return Err(format!("found '{literal}', expected: identifier"));
        }
        let errors = super::validation::qualified_name_errors(&literal);
        if !errors.is_empty() {
            // The parser's field path is nil, which Go prints as `<nil>`.
            return Err(format!(
                "<nil>: Invalid value: {}: {}",
                crate::microtime::quote(&literal),
                errors.join("; ")
            ));
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::End || next == Token::Comma) && operator.is_none() {
            operator = Some(Operator::Exists);
        }
        Ok((literal, operator))
    }

    fn operator(&mut self) -> Result<Operator, String> {
        let (token, literal) = self.consume(Context::KeyAndOperator);
        Ok(match token {
            Token::In => Operator::In,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::NotIn => Operator::NotIn,
            Token::NotEquals => Operator::NotEquals,
            _ => {
                return Err(format!(
                    "found '{literal}', expected: in, notin, =, ==, !=, gt, lt"
                ));
            }
        })
    }

    fn values(&mut self) -> Result<Vec<String>, String> {
        let (token, literal) = self.consume(Context::Values);
        if token != Token::OpenPar {
            return Err(format!("found '{literal}' expected: '('"));
        }
        let (token, literal) = self.lookahead(Context::Values);
        match token {
            Token::Identifier | Token::Comma => {
                let values = self.identifiers()?;
                let (token, _) = self.consume(Context::Values);
                if token != Token::ClosedPar {
                    return Err(format!("found '{literal}', expected: ')'"));
                }
                Ok(values)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!(
                "found '{literal}', expected: ',', ')' or identifier"
            )),
        }
    }

    fn identifiers(&mut self) -> Result<Vec<String>, String> {
        let mut values: Vec<String> = Vec::new();
        let insert = |values: &mut Vec<String>, v: String| {
            if !values.contains(&v) {
                values.push(v);
            }
        };
        loop {
            let (token, literal) = self.consume(Context::Values);
            match token {
                Token::Identifier => {
                    insert(&mut values, literal);
                    let (next, literal) = self.lookahead(Context::Values);
                    match next {
                        Token::Comma => {}
                        Token::ClosedPar => break,
                        _ => return Err(format!("found '{literal}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if values.is_empty() {
                        insert(&mut values, String::new());
                    }
                    let (next, _) = self.lookahead(Context::Values);
                    if next == Token::ClosedPar || next == Token::Comma {
                        insert(&mut values, String::new());
                    }
                    if next == Token::ClosedPar {
                        break;
                    }
                }
                _ => return Err(format!("found '{literal}', expected: ',', or identifier")),
            }
        }
        values.sort();
        Ok(values)
    }

    fn exact_value(&mut self) -> Result<Vec<String>, String> {
        let (token, _) = self.lookahead(Context::Values);
        if token == Token::End || token == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (token, literal) = self.consume(Context::Values);
        if token == Token::Identifier {
            Ok(vec![literal])
        } else {
            Err(format!("found '{literal}', expected: identifier"))
        }
    }
}

/// `NewRequirement`: the checks of the values, with Go's messages (joined as an aggregate).
fn new_requirement(
    key: String,
    operator: Operator,
    values: Vec<String>,
) -> Result<Requirement, String> {
    let mut errors = Vec::new();
    let quote = crate::microtime::quote;
    let integers: Vec<Option<i64>> = values.iter().map(|v| v.parse().ok()).collect();
    if matches!(operator, Operator::GreaterThan | Operator::LessThan) {
        for (i, value) in values.iter().enumerate() {
            if integers[i].is_none() {
                errors.push(format!(
                    "values[{i}]: Invalid value: {}: for 'Gt', 'Lt' operators, the value must be an integer",
                    quote(value)
                ));
            }
        }
    }
    for (i, value) in values.iter().enumerate() {
        let problems = super::validation::label_value_errors(value);
        if !problems.is_empty() {
            errors.push(format!(
                "values[{i}][{key}]: Invalid value: {}: {}",
                quote(value),
                problems.join("; ")
            ));
        }
    }
    match errors.as_slice() {
        [] => {}
        [one] => return Err(one.clone()),
        many => return Err(format!("[{}]", many.join(", "))),
    }
    let one = values.first().cloned().unwrap_or_default();
    let number = integers.first().copied().flatten().unwrap_or_default();
    Ok(match operator {
        Operator::In => Requirement::In(key, values),
        Operator::NotIn => Requirement::NotIn(key, values),
        Operator::Equals => Requirement::Equals(key, one),
        Operator::NotEquals => Requirement::NotEquals(key, one),
        Operator::GreaterThan => Requirement::GreaterThan(key, number),
        Operator::LessThan => Requirement::LessThan(key, number),
        Operator::Exists => Requirement::Exists(key),
        Operator::DoesNotExist => Requirement::DoesNotExist(key),
    })
}

/// A parsed `fieldSelector` over `metadata.name` and `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FieldSelector {
    /// (field, value, equal?)
    terms: Vec<(Field, String, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Name,
    Namespace,
}

impl FieldSelector {
    pub(crate) fn parse(input: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!(
                    "invalid selector: '{input}'; can't understand '{part}'"
                ));
            };
            let field = match field.trim() {
                "metadata.name" => Field::Name,
                "metadata.namespace" => Field::Namespace,
                other => {
                    return Err(format!(
                        "\"{other}\" is not a known field selector: only \"metadata.name\", \
                         \"metadata.namespace\""
                    ));
                }
            };
            terms.push((field, value.trim().to_owned(), equal));
        }
        Ok(Self { terms })
    }

    pub(crate) fn matches(&self, name: &str, namespace: &str) -> bool {
        self.terms.iter().all(|(field, value, equal)| {
            let have = match field {
                Field::Name => name,
                Field::Namespace => namespace,
            };
            (have == value) == *equal
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: &Value) -> Option<&Map<String, Value>> {
        v.as_object()
    }

    #[test]
    fn every_operator() {
        let l = json!({"app": "web", "tier": "front", "lockheed/lock": ""});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(labels(&l));
        assert!(m(""));
        assert!(m("app=web"));
        assert!(m("app==web"));
        assert!(!m("app=db"));
        assert!(m("app!=db"));
        assert!(m("missing!=x"), "!= matches objects without the key");
        assert!(m("app in (web, db)"));
        assert!(!m("app in (db)"));
        assert!(m("app notin (db,cache)"));
        assert!(m("missing notin (db)"));
        assert!(!m("app notin (web)"));
        assert!(m("lockheed/lock"));
        assert!(!m("!lockheed/lock"));
        assert!(m("!missing"));
        assert!(m("app=web,tier in (front,back),!missing"));
        assert!(!m("app=web,tier=back"));
        let n = json!({"n": "5"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(labels(&n));
        assert!(m("n>4") && !m("n>5") && m("n<6") && !m("missing<6"));
    }

    /// The messages kube-apiserver v1.37.2 answered with (tests/differential/sequences).
    #[test]
    fn errors_are_kube_apiservers() {
        let error = |s: &str| LabelSelector::parse(s).unwrap_err();
        assert_eq!(
            error("app in a"),
            "unable to parse requirement: found 'a' expected: '('"
        );
        assert_eq!(
            error("Bad Key=x"),
            "unable to parse requirement: found 'Key', expected: in, notin, =, ==, !=, gt, lt"
        );
        assert_eq!(
            error("app in (demo"),
            "unable to parse requirement: found '', expected: ',' or ')'"
        );
        assert!(error("app==?").starts_with(
            "unable to parse requirement: values[0][app]: Invalid value: \"?\": a valid label must"
        ));
        assert!(error("n>x").contains("for 'Gt', 'Lt' operators, the value must be an integer"));
        assert_eq!(error("a=b,"), "found '', expected: identifier after ','");
    }

    #[test]
    fn no_labels_at_all() {
        let s = LabelSelector::parse("!a,b!=c,d notin (e)").unwrap();
        assert!(s.matches(None));
        assert!(!LabelSelector::parse("a").unwrap().matches(None));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "a b c", "a in b", "a in (b", "a=b,", "a=(b)", "-bad-=x", "a)",
        ] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn field_selectors() {
        let s = FieldSelector::parse("metadata.name=a,metadata.namespace!=kube-system").unwrap();
        assert!(s.matches("a", "default"));
        assert!(!s.matches("a", "kube-system"));
        assert!(!s.matches("b", "default"));
        assert!(
            FieldSelector::parse("metadata.name==a")
                .unwrap()
                .matches("a", "x")
        );
        assert_eq!(
            FieldSelector::parse("spec.x=1").unwrap_err(),
            "\"spec.x\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
        );
    }
}
