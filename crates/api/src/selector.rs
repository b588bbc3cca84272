//! Label and field selectors, parsed from the query-string syntax kubectl sends
//! (`labelSelector=app=web,tier in (a,b)`, `fieldSelector=metadata.name=x`), with upstream's
//! grammar, validation and error messages (apimachinery `labels/selector.go`,
//! `fields/selector.go`).

// `ApiError` is the crate's one error type, returned as is by every function here.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as metav1;

use crate::error::ApiError;
use crate::resources::validation::{
    DNS1123_SUBDOMAIN_MSG, is_dns1123_subdomain, is_label_value, is_qualified_name,
};

// ---------------------------------------------------------------------------------------------
// Label selectors
// ---------------------------------------------------------------------------------------------

/// A label selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value`
    Equals,
    /// `key==value`
    DoubleEquals,
    /// `key!=value`
    NotEquals,
    /// `key in (a,b)`
    In,
    /// `key notin (a,b)`
    NotIn,
    /// `key`
    Exists,
    /// `!key`
    DoesNotExist,
    /// `key>1` (integer comparison)
    GreaterThan,
    /// `key<1` (integer comparison)
    LessThan,
}

impl Operator {
    /// Upstream's name of the operator (as in `selection.Operator`).
    pub fn as_str(self) -> &'static str {
        match self {
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => "gt",
            Operator::LessThan => "lt",
        }
    }
}

/// One requirement of a label selector: a key, an operator and (for most operators) values.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Requirement {
    key: String,
    operator: Operator,
    values: Vec<String>,
}

/// The operators upstream lists when an operator is missing or unknown.
const BINARY_OPERATORS: &str = "in, notin, =, ==, !=, gt, lt";

/// A field error rendered like upstream's `field.Error` (`path: Invalid value: "v": detail`).
fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {}: {detail}", go_quote(value))
}

fn invalid_list(path: &str, values: &[String], detail: &str) -> String {
    let list: Vec<String> = values.iter().map(|v| go_quote(v)).collect();
    format!(
        "{path}: Invalid value: []string{{{}}}: {detail}",
        list.join(", ")
    )
}

fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// Aggregates errors the way upstream's `utilerrors.Aggregate` prints them.
fn aggregate(errs: Vec<String>) -> Option<String> {
    match errs.len() {
        0 => None,
        1 => errs.into_iter().next(),
        _ => Some(format!("[{}]", errs.join(", "))),
    }
}

const QUALIFIED_NAME_FMT: &str = "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]'";

fn name_part_errors(name: &str) -> Vec<String> {
    let mut errs = vec![];
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
        return errs;
    }
    if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !(name.chars().all(ok_char)
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric()))
    {
        errs.push(format!(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is {QUALIFIED_NAME_FMT})"
        ));
    }
    errs
}

/// Upstream's messages for an invalid qualified name (label key).
fn qualified_name_errors(key: &str) -> Vec<String> {
    if is_qualified_name(key) {
        return vec![];
    }
    let parts: Vec<&str> = key.split('/').collect();
    match parts.as_slice() {
        [name] => name_part_errors(name),
        [prefix, name] => {
            let mut errs = vec![];
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else if !is_dns1123_subdomain(prefix) {
                errs.push(format!("prefix part {DNS1123_SUBDOMAIN_MSG}"));
            }
            errs.extend(name_part_errors(name));
            errs
        }
        _ => vec![format!(
            "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is {QUALIFIED_NAME_FMT}) with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        )],
    }
}

fn label_value_errors(value: &str) -> Vec<String> {
    if is_label_value(value) {
        return vec![];
    }
    let mut errs = vec![];
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if !(value.chars().all(ok_char)
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric()))
    {
        errs.push("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string());
    }
    errs
}

fn validate_label_key(key: &str, path: &str) -> Option<String> {
    let errs = qualified_name_errors(key);
    (!errs.is_empty()).then(|| invalid(path, key, &errs.join("; ")))
}

impl Requirement {
    /// A validated requirement, as upstream's `NewRequirement`: the key must be a qualified name,
    /// values must be label values, and the number of values must fit the operator.
    pub fn new(
        key: impl Into<String>,
        operator: Operator,
        values: Vec<String>,
    ) -> Result<Self, ApiError> {
        let key = key.into();
        let mut errs = vec![];
        if let Some(e) = validate_label_key(&key, "key") {
            errs.push(e);
        }
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                errs.push(invalid_list(
                    "values",
                    &values,
                    "for 'in', 'notin' operators, values set can't be empty",
                ));
            }
            Operator::Equals | Operator::DoubleEquals | Operator::NotEquals
                if values.len() != 1 =>
            {
                errs.push(invalid_list(
                    "values",
                    &values,
                    "exact-match compatibility requires one single value",
                ));
            }
            Operator::Exists | Operator::DoesNotExist if !values.is_empty() => {
                errs.push(invalid_list(
                    "values",
                    &values,
                    "values set must be empty for exists and does not exist",
                ));
            }
            Operator::GreaterThan | Operator::LessThan => {
                if values.len() != 1 {
                    errs.push(invalid_list(
                        "values",
                        &values,
                        "for 'Gt', 'Lt' operators, exactly one value is required",
                    ));
                }
                for (i, v) in values.iter().enumerate() {
                    if v.parse::<i64>().is_err() {
                        errs.push(invalid(
                            &format!("values[{i}]"),
                            v,
                            "for 'Gt', 'Lt' operators, the value must be an integer",
                        ));
                    }
                }
            }
            _ => {}
        }
        for (i, v) in values.iter().enumerate() {
            let value_errs = label_value_errors(v);
            if !value_errs.is_empty() {
                errs.push(invalid(
                    &format!("values[{i}][{key}]"),
                    v,
                    &value_errs.join("; "),
                ));
            }
        }
        match aggregate(errs) {
            Some(msg) => Err(ApiError::bad_request(msg)),
            None => Ok(Self {
                key,
                operator,
                values,
            }),
        }
    }

    /// The label key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The operator.
    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// The values (empty for `Exists` / `DoesNotExist`).
    pub fn values(&self) -> &[String] {
        &self.values
    }

    fn has_value(&self, v: &str) -> bool {
        self.values.iter().any(|x| x == v)
    }

    /// Whether the labels satisfy this requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In | Operator::Equals | Operator::DoubleEquals => {
                value.is_some_and(|v| self.has_value(v))
            }
            Operator::NotIn | Operator::NotEquals => value.is_none_or(|v| !self.has_value(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
            Operator::GreaterThan | Operator::LessThan => {
                let (Some(Ok(have)), [want]) =
                    (value.map(|v| v.parse::<i64>()), self.values.as_slice())
                else {
                    return false;
                };
                let Ok(want) = want.parse::<i64>() else {
                    return false;
                };
                if self.operator == Operator::GreaterThan {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.operator == Operator::DoesNotExist {
            f.write_str("!")?;
        }
        f.write_str(&self.key)?;
        let op = match self.operator {
            Operator::Exists | Operator::DoesNotExist => return Ok(()),
            Operator::Equals => "=",
            Operator::DoubleEquals => "==",
            Operator::NotEquals => "!=",
            Operator::In => " in ",
            Operator::NotIn => " notin ",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        };
        f.write_str(op)?;
        let set = matches!(self.operator, Operator::In | Operator::NotIn);
        if set {
            f.write_str("(")?;
        }
        let mut values: Vec<&str> = self.values.iter().map(String::as_str).collect();
        values.sort_unstable();
        f.write_str(&values.join(","))?;
        if set {
            f.write_str(")")?;
        }
        Ok(())
    }
}

/// A label selector: requirements that must all hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector {
    requirements: Vec<Requirement>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

fn is_whitespace(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

fn is_special(b: u8) -> bool {
    matches!(b, b'=' | b'!' | b'(' | b')' | b',' | b'>' | b'<')
}

/// Splits a selector into tokens as upstream's lexer does.
fn lex(input: &str) -> Vec<(Token, String)> {
    let bytes = input.as_bytes();
    let mut pos = 0;
    let mut out = vec![];
    loop {
        while pos < bytes.len() && is_whitespace(bytes[pos]) {
            pos += 1;
        }
        if pos >= bytes.len() || bytes[pos] == 0 {
            out.push((Token::End, String::new()));
            return out;
        }
        if is_special(bytes[pos]) {
            // Longest run of special symbols that still forms a known token.
            let start = pos;
            let mut last: Option<(Token, usize)> = None;
            while pos < bytes.len() && is_special(bytes[pos]) {
                let candidate = &input[start..=pos];
                match keyword(candidate) {
                    Some(t) => last = Some((t, pos + 1)),
                    None if last.is_some() => break,
                    None => {}
                }
                pos += 1;
            }
            match last {
                Some((t, end)) => {
                    out.push((t, input[start..end].to_string()));
                    pos = end;
                }
                None => out.push((
                    Token::Error,
                    format!("error expected: keyword found '{}'", &input[start..pos]),
                )),
            }
        } else {
            let start = pos;
            while pos < bytes.len()
                && !is_whitespace(bytes[pos])
                && !is_special(bytes[pos])
                && bytes[pos] != 0
            {
                pos += 1;
            }
            let word = &input[start..pos];
            out.push((keyword(word).unwrap_or(Token::Identifier), word.to_string()));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Context {
    KeyAndOperator,
    Values,
}

struct Parser {
    items: Vec<(Token, String)>,
    pos: usize,
}

impl Parser {
    fn at(&self, context: Context) -> (Token, String) {
        let (tok, lit) = self
            .items
            .get(self.pos)
            .cloned()
            .unwrap_or((Token::End, String::new()));
        // In a values context, `in` and `notin` are plain identifiers.
        let tok = match (context, tok) {
            (Context::Values, Token::In | Token::NotIn) => Token::Identifier,
            _ => tok,
        };
        (tok, lit)
    }

    fn lookahead(&self, context: Context) -> (Token, String) {
        self.at(context)
    }

    fn consume(&mut self, context: Context) -> (Token, String) {
        let r = self.at(context);
        if self.pos < self.items.len() {
            self.pos += 1;
        }
        r
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, String> {
        let mut reqs = vec![];
        loop {
            let (tok, lit) = self.lookahead(Context::Values);
            match tok {
                Token::Identifier | Token::DoesNotExist => {
                    let r = self
                        .parse_requirement()
                        .map_err(|e| format!("unable to parse requirement: {e}"))?;
                    reqs.push(r);
                    let (t, l) = self.consume(Context::Values);
                    match t {
                        Token::End => return Ok(reqs),
                        Token::Comma => {
                            let (t2, l2) = self.lookahead(Context::Values);
                            if t2 != Token::Identifier && t2 != Token::DoesNotExist {
                                return Err(format!(
                                    "found '{l2}', expected: identifier after ','"
                                ));
                            }
                        }
                        _ => return Err(format!("found '{l}', expected: ',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(reqs),
                _ => {
                    return Err(format!(
                        "found '{lit}', expected: !, identifier, or 'end of string'"
                    ));
                }
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, String> {
        let (key, op) = self.parse_key_and_infer_operator()?;
        if let Some(op) = op {
            return Requirement::new(key, op, vec![]).map_err(|e| e.message);
        }
        let op = self.parse_operator()?;
        let values = match op {
            Operator::In | Operator::NotIn => self.parse_values()?,
            _ => self.parse_exact_value()?,
        };
        Requirement::new(key, op, values).map_err(|e| e.message)
    }

    fn parse_key_and_infer_operator(&mut self) -> Result<(String, Option<Operator>), String> {
        let mut op = None;
        let (mut tok, mut lit) = self.consume(Context::Values);
        if tok == Token::DoesNotExist {
            op = Some(Operator::DoesNotExist);
            (tok, lit) = self.consume(Context::Values);
        }
        if tok != Token::Identifier {
            return Err(format!("found '{lit}', expected: identifier"));
        }
        if let Some(e) = validate_label_key(&lit, "key") {
            return Err(e);
        }
        let (next, _) = self.lookahead(Context::Values);
        if (next == Token::End || next == Token::Comma) && op.is_none() {
            op = Some(Operator::Exists);
        }
        Ok((lit, op))
    }

    fn parse_operator(&mut self) -> Result<Operator, String> {
        let (tok, lit) = self.consume(Context::KeyAndOperator);
        Ok(match tok {
            Token::DoesNotExist => Operator::DoesNotExist,
            Token::DoubleEquals => Operator::DoubleEquals,
            Token::Equals => Operator::Equals,
            Token::GreaterThan => Operator::GreaterThan,
            Token::LessThan => Operator::LessThan,
            Token::In => Operator::In,
            Token::NotEquals => Operator::NotEquals,
            Token::NotIn => Operator::NotIn,
            _ => return Err(format!("found '{lit}', expected: {BINARY_OPERATORS}")),
        })
    }

    fn parse_values(&mut self) -> Result<Vec<String>, String> {
        let (tok, lit) = self.consume(Context::Values);
        if tok != Token::OpenPar {
            return Err(format!("found '{lit}' expected: '('"));
        }
        let (tok, lit) = self.lookahead(Context::Values);
        match tok {
            Token::Identifier | Token::Comma => {
                let set = self.parse_identifiers_list()?;
                let (tok, _) = self.consume(Context::Values);
                if tok != Token::ClosedPar {
                    return Err(format!("found '{lit}', expected: ')'"));
                }
                Ok(set)
            }
            Token::ClosedPar => {
                self.consume(Context::Values);
                Ok(vec![String::new()])
            }
            _ => Err(format!("found '{lit}', expected: ',', ')' or identifier")),
        }
    }

    /// A sorted set of identifiers (`a,b`, with empty strings for `(,` and `,,` and `,)`).
    fn parse_identifiers_list(&mut self) -> Result<Vec<String>, String> {
        let mut set = std::collections::BTreeSet::new();
        loop {
            let (tok, lit) = self.consume(Context::Values);
            match tok {
                Token::Identifier => {
                    set.insert(lit);
                    let (t2, l2) = self.lookahead(Context::Values);
                    match t2 {
                        Token::Comma => continue,
                        Token::ClosedPar => return Ok(set.into_iter().collect()),
                        _ => return Err(format!("found '{l2}', expected: ',' or ')'")),
                    }
                }
                Token::Comma => {
                    if set.is_empty() {
                        set.insert(String::new());
                    }
                    let (t2, _) = self.lookahead(Context::Values);
                    if t2 == Token::ClosedPar {
                        set.insert(String::new());
                        return Ok(set.into_iter().collect());
                    }
                    if t2 == Token::Comma {
                        self.consume(Context::Values);
                        set.insert(String::new());
                    }
                }
                _ => return Err(format!("found '{lit}', expected: ',', or identifier")),
            }
        }
    }

    fn parse_exact_value(&mut self) -> Result<Vec<String>, String> {
        let (tok, _) = self.lookahead(Context::Values);
        if tok == Token::End || tok == Token::Comma {
            return Ok(vec![String::new()]);
        }
        let (tok, lit) = self.consume(Context::Values);
        if tok == Token::Identifier {
            return Ok(vec![lit]);
        }
        Err(format!("found '{lit}', expected: identifier"))
    }
}

impl LabelSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses the query-string syntax (`a=b,c!=d,e in (x,y),f notin (z),g,!h,i>1`).
    /// Errors are 400 BadRequest with upstream's messages.
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut parser = Parser {
            items: lex(selector),
            pos: 0,
        };
        let mut requirements = parser.parse().map_err(ApiError::bad_request)?;
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Builds a selector from a `metav1.LabelSelector` (matchLabels and matchExpressions).
    /// An empty selector matches everything.
    pub fn from_k8s(selector: &metav1::LabelSelector) -> Result<Self, ApiError> {
        let mut requirements = vec![];
        for (k, v) in selector.match_labels.iter().flatten() {
            requirements.push(Requirement::new(
                k.clone(),
                Operator::Equals,
                vec![v.clone()],
            )?);
        }
        for expr in selector.match_expressions.iter().flatten() {
            let op = match expr.operator.as_str() {
                "In" => Operator::In,
                "NotIn" => Operator::NotIn,
                "Exists" => Operator::Exists,
                "DoesNotExist" => Operator::DoesNotExist,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "{} is not a valid label selector operator",
                        go_quote(other)
                    )));
                }
            };
            requirements.push(Requirement::new(
                expr.key.clone(),
                op,
                expr.values.clone().unwrap_or_default(),
            )?);
        }
        requirements.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Self { requirements })
    }

    /// Builds an equality selector from a set of labels (like upstream's `SelectorFromSet`,
    /// with validation).
    pub fn from_set(labels: &BTreeMap<String, String>) -> Result<Self, ApiError> {
        let mut requirements = vec![];
        for (k, v) in labels {
            requirements.push(Requirement::new(
                k.clone(),
                Operator::Equals,
                vec![v.clone()],
            )?);
        }
        Ok(Self { requirements })
    }

    /// Whether the selector has no requirements (and so matches everything).
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The requirements, sorted by key.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether the labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether an object with these (optional) labels matches.
    pub fn matches_opt(&self, labels: Option<&BTreeMap<String, String>>) -> bool {
        match labels {
            Some(l) => self.matches(l),
            None => self.matches(&BTreeMap::new()),
        }
    }

    /// The single value the selector requires for `key` (`key=v`, `key==v` or `key in (v)`).
    pub fn requires_exact_match(&self, key: &str) -> Option<&str> {
        let r = self.requirements.iter().find(|r| r.key == key)?;
        match (r.operator, r.values.as_slice()) {
            (Operator::Equals | Operator::DoubleEquals | Operator::In, [v]) => Some(v),
            _ => None,
        }
    }
}

impl fmt::Display for LabelSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.requirements.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl FromStr for LabelSelector {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

// ---------------------------------------------------------------------------------------------
// Field selectors
// ---------------------------------------------------------------------------------------------

/// A field selector operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldOperator {
    /// `field=value` or `field==value`
    Equals,
    /// `field!=value`
    NotEquals,
}

/// One term of a field selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldTerm {
    /// The field label, e.g. `metadata.name`.
    pub field: String,
    /// The operator.
    pub operator: FieldOperator,
    /// The (unescaped) value.
    pub value: String,
}

impl FieldTerm {
    fn holds(&self, actual: &str) -> bool {
        match self.operator {
            FieldOperator::Equals => actual == self.value,
            FieldOperator::NotEquals => actual != self.value,
        }
    }
}

impl fmt::Display for FieldTerm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.operator {
            FieldOperator::Equals => "=",
            FieldOperator::NotEquals => "!=",
        };
        write!(f, "{}{op}{}", self.field, escape_field_value(&self.value))
    }
}

/// A field selector: terms that must all hold. The empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector {
    terms: Vec<FieldTerm>,
}

/// Escapes `\`, `,` and `=` in a field selector value, as upstream's `EscapeValue`.
pub fn escape_field_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '\\' | ',' | '=') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Reverses [`escape_field_value`]; unescaped `,` or `=` and unknown escapes are errors.
pub fn unescape_field_value(s: &str) -> Result<String, ApiError> {
    let mut out = String::with_capacity(s.len());
    let mut in_slash = false;
    for c in s.chars() {
        if in_slash {
            if !matches!(c, '\\' | ',' | '=') {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: invalid escape sequence: \\{c}"
                )));
            }
            out.push(c);
            in_slash = false;
            continue;
        }
        match c {
            '\\' => in_slash = true,
            ',' | '=' => {
                return Err(ApiError::bad_request(format!(
                    "invalid field selector: unescaped character in value: {}",
                    u32::from(c)
                )));
            }
            _ => out.push(c),
        }
    }
    if in_slash {
        return Err(ApiError::bad_request(
            "invalid field selector: invalid escape sequence: \\",
        ));
    }
    Ok(out)
}

/// Splits on commas that are not escaped by a backslash (the backslash is kept).
fn split_terms(s: &str) -> Vec<&str> {
    if s.is_empty() {
        return vec![];
    }
    let mut terms = vec![];
    let mut start = 0;
    let mut in_slash = false;
    for (i, c) in s.char_indices() {
        if in_slash {
            in_slash = false;
        } else if c == '\\' {
            in_slash = true;
        } else if c == ',' {
            terms.push(&s[start..i]);
            start = i + 1;
        }
    }
    terms.push(&s[start..]);
    terms
}

/// Splits a term at the first operator (`!=`, `==`, `=`); the left side has no escaping.
fn split_term(term: &str) -> Option<(&str, FieldOperator, &str)> {
    for (i, _) in term.char_indices() {
        let rest = &term[i..];
        for (op, kind) in [
            ("!=", FieldOperator::NotEquals),
            ("==", FieldOperator::Equals),
            ("=", FieldOperator::Equals),
        ] {
            if let Some(rhs) = rest.strip_prefix(op) {
                return Some((&term[..i], kind, rhs));
            }
        }
    }
    None
}

impl FieldSelector {
    /// The selector that matches everything.
    pub fn everything() -> Self {
        Self::default()
    }

    /// Parses `a=b,c==d,e!=f` (values may escape `\`, `,` and `=` with a backslash).
    pub fn parse(selector: &str) -> Result<Self, ApiError> {
        let mut parts = split_terms(selector);
        parts.sort_unstable();
        let mut terms = vec![];
        for part in parts {
            if part.is_empty() {
                continue;
            }
            let Some((lhs, operator, rhs)) = split_term(part) else {
                return Err(ApiError::bad_request(format!(
                    "invalid selector: '{selector}'; can't understand '{part}'"
                )));
            };
            terms.push(FieldTerm {
                field: lhs.to_string(),
                operator,
                value: unescape_field_value(rhs)?,
            });
        }
        Ok(Self { terms })
    }

    /// A selector requiring `field=value` for each pair.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let terms = pairs
            .into_iter()
            .map(|(f, v)| FieldTerm {
                field: f.to_string(),
                operator: FieldOperator::Equals,
                value: v.to_string(),
            })
            .collect();
        Self { terms }
    }

    /// Whether the selector has no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The terms, in the order upstream sorts them.
    pub fn terms(&self) -> &[FieldTerm] {
        &self.terms
    }

    /// Checks that every field label is supported (before any object is looked at), so an
    /// unsupported label fails even when nothing would be listed: 400 `field label not
    /// supported: <label>`.
    pub fn validate(&self, supported: impl Fn(&str) -> bool) -> Result<(), ApiError> {
        match self.terms.iter().find(|t| !supported(&t.field)) {
            Some(t) => Err(unsupported_field(&t.field)),
            None => Ok(()),
        }
    }

    /// Whether an object matches; `value_of` gives the object's value for a field label, or
    /// None if the resource does not support that label (400 `field label not supported`).
    pub fn matches(&self, value_of: impl Fn(&str) -> Option<String>) -> Result<bool, ApiError> {
        let mut all = true;
        for t in &self.terms {
            let actual = value_of(&t.field).ok_or_else(|| unsupported_field(&t.field))?;
            all &= t.holds(&actual);
        }
        Ok(all)
    }

    /// The value the selector requires `field` to have exactly (`field=v` / `field==v`), e.g.
    /// `metadata.name=x` gives `Some("x")` for `metadata.name`.
    pub fn requires_exact_match(&self, field: &str) -> Option<&str> {
        self.terms
            .iter()
            .find(|t| t.field == field && t.operator == FieldOperator::Equals)
            .map(|t| t.value.as_str())
    }
}

/// 400 `field label not supported: <label>`.
pub fn unsupported_field(label: &str) -> ApiError {
    ApiError::bad_request(format!("field label not supported: {label}"))
}

impl fmt::Display for FieldSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, t) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{t}")?;
        }
        Ok(())
    }
}

impl FromStr for FieldSelector {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn parses_valid_selectors() {
        // From upstream's TestSelectorParse.
        let ok = [
            "",
            "x=a,y=b,z=c",
            "x = a, y = b",
            "x!=a,y=b",
            "x=",
            "x= ",
            "x=,z= ",
            "!x",
            "x>1",
            "x>1,z<5",
            "x in (a)",
            "x in (a,b)",
            "x notin (a)",
            "x in (,a)",
            "x in (a,)",
            "x in ()",
            "x in (in)",
            "x in (notin)",
            "x, y",
            "a.b.c/d-e_f",
            "example.com/app in (web,api),!example.com/old",
        ];
        for s in ok {
            let parsed = LabelSelector::parse(s);
            assert!(parsed.is_ok(), "{s}: {parsed:?}");
        }
    }

    #[test]
    fn rejects_invalid_selectors() {
        // From upstream's TestSelectorParse error cases.
        let bad = [
            "x=a||y=b",
            "x==a==b",
            "!x=a",
            "x<a",
            "x in ((a)",
            "x in (a b)",
            "x in a",
            "x notin",
            "x=a,,y=b",
            "x y",
            "(x)",
            ",x",
            "x=a b",
            "x=a,",
            "x>1,z<5,",
            "x,,y",
            "a b=c",
            "-a=b",
            "a=-b",
            "a=b c",
            "x>",
            "x>1.5",
            "=x",
            "x=(",
            "example.com/a/b=c",
            "Example.Com/a=b",
        ];
        for s in bad {
            let e = LabelSelector::parse(s).expect_err(s);
            assert_eq!(e.code, 400, "{s}");
        }
    }

    #[test]
    fn error_messages_read_like_upstream() {
        let e = LabelSelector::parse("x in a").unwrap_err();
        assert_eq!(
            e.message,
            "unable to parse requirement: found 'a' expected: '('"
        );
        let e = LabelSelector::parse("x y").unwrap_err();
        assert_eq!(
            e.message,
            "unable to parse requirement: found 'y', expected: in, notin, =, ==, !=, gt, lt"
        );
        let e = LabelSelector::parse(",x").unwrap_err();
        assert_eq!(
            e.message,
            "found ',', expected: !, identifier, or 'end of string'"
        );
        let e = LabelSelector::parse("x,,y").unwrap_err();
        assert_eq!(e.message, "found ',', expected: identifier after ','");
        let e = LabelSelector::parse("a b=c").unwrap_err();
        assert_eq!(
            e.message,
            "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
        );
        let e = LabelSelector::parse("x=a b").unwrap_err();
        assert_eq!(e.message, "found 'b', expected: ',' or 'end of string'");
        let e = LabelSelector::parse("x=a,").unwrap_err();
        assert_eq!(e.message, "found '', expected: identifier after ','");
        let e = LabelSelector::parse("x>z").unwrap_err();
        assert_eq!(
            e.message,
            "unable to parse requirement: values[0]: Invalid value: \"z\": for 'Gt', 'Lt' operators, the value must be an integer"
        );
        let e = LabelSelector::parse("-a=b").unwrap_err();
        assert!(
            e.message.starts_with(
                "unable to parse requirement: key: Invalid value: \"-a\": name part must consist of"
            ),
            "{}",
            e.message
        );
        let e = LabelSelector::parse("a=-b").unwrap_err();
        assert!(
            e.message.starts_with("unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be"),
            "{}",
            e.message
        );
        let e = LabelSelector::parse("x ~ y").unwrap_err();
        assert_eq!(
            e.message,
            "unable to parse requirement: found '~', expected: in, notin, =, ==, !=, gt, lt"
        );
    }

    #[test]
    fn round_trips_to_string() {
        // From upstream's TestSelectorParse string cases (requirements are sorted by key).
        let cases = [
            ("x=a,y=b,z=c", "x=a,y=b,z=c"),
            ("x = a, y = b", "x=a,y=b"),
            ("x!=a,y=b", "x!=a,y=b"),
            ("x=,z= ", "x=,z="),
            ("x= ", "x="),
            ("!x", "!x"),
            ("x>1", "x>1"),
            ("x>1,z<5", "x>1,z<5"),
            ("x in (b,a)", "x in (a,b)"),
            ("x notin (b, a, a)", "x notin (a,b)"),
            ("x in (,a)", "x in (,a)"),
            ("x in ()", "x in ()"),
            ("z,!y,x==1", "x==1,!y,z"),
            ("", ""),
        ];
        for (input, want) in cases {
            let s = LabelSelector::parse(input).unwrap();
            assert_eq!(s.to_string(), want, "{input}");
            // The printed form parses back to the same selector.
            assert_eq!(LabelSelector::parse(&s.to_string()).unwrap(), s, "{input}");
        }
    }

    #[test]
    fn matches_like_upstream() {
        // From upstream's TestSelectorMatches / TestEverything.
        let yes = [
            ("", vec![("x", "y")]),
            ("x=y", vec![("x", "y")]),
            ("x=y,z=w", vec![("x", "y"), ("z", "w")]),
            ("x!=y,z!=w", vec![("x", "z"), ("z", "a")]),
            ("notin=in", vec![("notin", "in")]),
            ("x", vec![("x", "z")]),
            ("!x", vec![("y", "z")]),
            ("x>1", vec![("x", "2")]),
            ("x<1", vec![("x", "0")]),
            ("x in (a,b)", vec![("x", "b")]),
            ("x notin (a,b)", vec![("x", "c")]),
            ("x notin (a,b)", vec![]),
            ("x!=y", vec![]),
            ("x=", vec![("x", "")]),
        ];
        for (sel, l) in yes {
            assert!(
                LabelSelector::parse(sel).unwrap().matches(&labels(&l)),
                "{sel} should match {l:?}"
            );
        }
        let no = [
            ("x=z", vec![]),
            ("x=y", vec![("x", "z")]),
            ("x=y,z=w", vec![("x", "w"), ("z", "w")]),
            ("x!=y,z!=w", vec![("x", "z"), ("z", "w")]),
            ("x", vec![("y", "z")]),
            ("!x", vec![("x", "z")]),
            ("x>1", vec![("x", "0")]),
            ("x>1", vec![("x", "a")]),
            ("x>1", vec![]),
            ("x<1", vec![("x", "1")]),
            ("x in (a,b)", vec![("x", "c")]),
            ("x in (a,b)", vec![]),
            ("x notin (a,b)", vec![("x", "a")]),
        ];
        for (sel, l) in no {
            assert!(
                !LabelSelector::parse(sel).unwrap().matches(&labels(&l)),
                "{sel} should not match {l:?}"
            );
        }
    }

    #[test]
    fn from_k8s_selector() {
        let sel = metav1::LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                metav1::LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["fe".into(), "be".into()]),
                },
                metav1::LabelSelectorRequirement {
                    key: "old".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
                metav1::LabelSelectorRequirement {
                    key: "env".into(),
                    operator: "Exists".into(),
                    values: None,
                },
                metav1::LabelSelectorRequirement {
                    key: "zone".into(),
                    operator: "NotIn".into(),
                    values: Some(vec!["a".into()]),
                },
            ]),
        };
        let s = LabelSelector::from_k8s(&sel).unwrap();
        assert_eq!(
            s.to_string(),
            "app=web,env,!old,tier in (be,fe),zone notin (a)"
        );
        assert!(s.matches(&labels(&[("app", "web"), ("tier", "fe"), ("env", "x")])));
        assert!(!s.matches(&labels(&[("app", "web"), ("tier", "fe")])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "fe"),
            ("env", "x"),
            ("old", "1")
        ])));
        assert!(!s.matches(&labels(&[
            ("app", "web"),
            ("tier", "fe"),
            ("env", "x"),
            ("zone", "a")
        ])));

        let empty = LabelSelector::from_k8s(&metav1::LabelSelector::default()).unwrap();
        assert!(empty.is_empty());
        assert!(empty.matches(&labels(&[("any", "thing")])));

        let bad_op = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Gt".into(),
                values: Some(vec!["1".into()]),
            }]),
            ..Default::default()
        };
        assert_eq!(
            LabelSelector::from_k8s(&bad_op).unwrap_err().message,
            "\"Gt\" is not a valid label selector operator"
        );
        let no_values = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "In".into(),
                values: None,
            }]),
            ..Default::default()
        };
        assert!(
            LabelSelector::from_k8s(&no_values)
                .unwrap_err()
                .message
                .contains("values set can't be empty")
        );
        let exists_with_values = metav1::LabelSelector {
            match_expressions: Some(vec![metav1::LabelSelectorRequirement {
                key: "a".into(),
                operator: "Exists".into(),
                values: Some(vec!["x".into()]),
            }]),
            ..Default::default()
        };
        assert!(LabelSelector::from_k8s(&exists_with_values).is_err());
        let bad_key = metav1::LabelSelector {
            match_labels: Some(labels(&[("a b", "c")])),
            ..Default::default()
        };
        assert!(LabelSelector::from_k8s(&bad_key).is_err());
    }

    #[test]
    fn label_requires_exact_match() {
        let s = LabelSelector::parse("a=1,b in (2),c in (3,4),d!=5").unwrap();
        assert_eq!(s.requires_exact_match("a"), Some("1"));
        assert_eq!(s.requires_exact_match("b"), Some("2"));
        assert_eq!(s.requires_exact_match("c"), None);
        assert_eq!(s.requires_exact_match("d"), None);
        assert_eq!(s.requires_exact_match("e"), None);
    }

    #[test]
    fn long_keys_and_values_are_checked() {
        let long = "a".repeat(64);
        assert!(LabelSelector::parse(&format!("{long}=x")).is_err());
        assert!(LabelSelector::parse(&format!("x={long}")).is_err());
        assert!(LabelSelector::parse(&format!("{}=x", "a".repeat(63))).is_ok());
        assert!(LabelSelector::parse("k=\u{e9}").is_err());
        assert!(LabelSelector::parse("x=a\0y").is_ok());
    }

    #[test]
    fn field_selector_parses_and_prints() {
        // From upstream's TestSelectorParse / TestEscapeValue in fields.
        let cases = [
            ("", ""),
            ("a=b", "a=b"),
            ("a==b", "a=b"),
            ("a!=b", "a!=b"),
            ("b=c,a=b", "a=b,b=c"),
            ("a=b\\,c", "a=b\\,c"),
            ("a=b\\=c", "a=b\\=c"),
            ("a=b\\\\", "a=b\\\\"),
            ("a=", "a="),
            ("a!=", "a!="),
            ("a=b,,c=d", "a=b,c=d"),
        ];
        for (input, want) in cases {
            let s = FieldSelector::parse(input).unwrap();
            assert_eq!(s.to_string(), want, "{input}");
            assert_eq!(FieldSelector::parse(&s.to_string()).unwrap(), s, "{input}");
        }
        let s = FieldSelector::parse("metadata.name=a\\,b\\=c\\\\d").unwrap();
        assert_eq!(s.terms()[0].value, "a,b=c\\d");
        assert_eq!(s.terms()[0].field, "metadata.name");
    }

    #[test]
    fn field_selector_rejects_bad_input() {
        for bad in ["a", "a,b=c", "a=b=c", "a=b\\c", "a=b\\", "a=b,c"] {
            let e = FieldSelector::parse(bad).expect_err(bad);
            assert_eq!(e.code, 400, "{bad}");
        }
        assert_eq!(
            FieldSelector::parse("abc").unwrap_err().message,
            "invalid selector: 'abc'; can't understand 'abc'"
        );
        assert_eq!(
            FieldSelector::parse("a=b\\c").unwrap_err().message,
            "invalid field selector: invalid escape sequence: \\c"
        );
        assert_eq!(
            FieldSelector::parse("a=b=c").unwrap_err().message,
            "invalid field selector: unescaped character in value: 61"
        );
    }

    #[test]
    fn field_selector_matches() {
        let obj = |label: &str| -> Option<String> {
            match label {
                "metadata.name" => Some("web".into()),
                "metadata.namespace" => Some("default".into()),
                "spec.nodeName" => Some(String::new()),
                _ => None,
            }
        };
        assert!(FieldSelector::parse("").unwrap().matches(obj).unwrap());
        assert!(
            FieldSelector::parse("metadata.name=web")
                .unwrap()
                .matches(obj)
                .unwrap()
        );
        assert!(
            FieldSelector::parse("metadata.name==web,metadata.namespace!=kube-system")
                .unwrap()
                .matches(obj)
                .unwrap()
        );
        assert!(
            !FieldSelector::parse("metadata.name=db")
                .unwrap()
                .matches(obj)
                .unwrap()
        );
        assert!(
            FieldSelector::parse("spec.nodeName=")
                .unwrap()
                .matches(obj)
                .unwrap()
        );
        assert!(
            !FieldSelector::parse("spec.nodeName!=")
                .unwrap()
                .matches(obj)
                .unwrap()
        );
        let e = FieldSelector::parse("spec.foo=bar")
            .unwrap()
            .matches(obj)
            .unwrap_err();
        assert_eq!(e.code, 400);
        assert_eq!(e.message, "field label not supported: spec.foo");
        let s = FieldSelector::parse("spec.foo=bar").unwrap();
        assert_eq!(
            s.validate(|l| l.starts_with("metadata."))
                .unwrap_err()
                .message,
            "field label not supported: spec.foo"
        );
        assert!(
            FieldSelector::parse("metadata.name=x")
                .unwrap()
                .validate(|l| l.starts_with("metadata."))
                .is_ok()
        );
    }

    #[test]
    fn field_requires_exact_match() {
        let s = FieldSelector::parse("metadata.name=x,metadata.namespace!=y").unwrap();
        assert_eq!(s.requires_exact_match("metadata.name"), Some("x"));
        assert_eq!(s.requires_exact_match("metadata.namespace"), None);
        assert_eq!(s.requires_exact_match("spec.nodeName"), None);
        let s = FieldSelector::parse("metadata.name==a\\,b").unwrap();
        assert_eq!(s.requires_exact_match("metadata.name"), Some("a,b"));
        assert_eq!(
            FieldSelector::from_pairs([("metadata.name", "z")])
                .requires_exact_match("metadata.name"),
            Some("z")
        );
    }

    #[test]
    fn escaping_round_trips() {
        for v in ["", "a", "a,b", "a=b", "a\\b", "\\,=", "a!=b"] {
            assert_eq!(unescape_field_value(&escape_field_value(v)).unwrap(), v);
        }
    }
}
