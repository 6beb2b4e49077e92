//! A small subset of go-bexpr, the filter language of Nomad's `?filter=` (Nomad 1.3+).
//!
//! Grammar: `expr := and ("or" and)*`, `and := unary ("and" unary)*`,
//! `unary := "not" unary | "(" expr ")" | match`, and matches
//! `sel == value`, `sel != value`, `sel is empty`, `sel is not empty`,
//! `value in sel`, `value not in sel`, `sel contains value`.
//! Selectors: `Field`, `Field.key`, `Field["key"]`.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Eq(Vec<String>, String),
    Ne(Vec<String>, String),
    Empty(Vec<String>),
    NotEmpty(Vec<String>),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Op(&'static str),
    LParen,
    RParen,
    LBracket,
    RBracket,
    Dot,
}

fn tokenize(s: &str) -> Result<Vec<(usize, Tok)>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        match c {
            ' ' | '\t' | '\n' | '\r' => i += 1,
            '(' => {
                out.push((start, Tok::LParen));
                i += 1
            }
            ')' => {
                out.push((start, Tok::RParen));
                i += 1
            }
            '[' => {
                out.push((start, Tok::LBracket));
                i += 1
            }
            ']' => {
                out.push((start, Tok::RBracket));
                i += 1
            }
            '.' => {
                out.push((start, Tok::Dot));
                i += 1
            }
            '=' | '!' if chars.get(i + 1) == Some(&'=') => {
                out.push((start, Tok::Op(if c == '=' { "==" } else { "!=" })));
                i += 2;
            }
            '"' | '`' => {
                let quote = c;
                i += 1;
                let mut lit = String::new();
                loop {
                    match chars.get(i) {
                        None => return Err(no_match(s, start)),
                        Some('\\') if quote == '"' => {
                            if let Some(n) = chars.get(i + 1) {
                                lit.push(*n);
                            }
                            i += 2;
                        }
                        Some(ch) if *ch == quote => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            lit.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push((start, Tok::Str(lit)));
            }
            c if c.is_alphanumeric() || c == '_' || c == '-' || c == '/' => {
                let mut word = String::new();
                while let Some(ch) = chars.get(i) {
                    if ch.is_alphanumeric() || matches!(ch, '_' | '-' | '/' | ':') {
                        word.push(*ch);
                        i += 1;
                    } else {
                        break;
                    }
                }
                out.push((start, Tok::Ident(word)));
            }
            _ => return Err(no_match(s, start)),
        }
    }
    Ok(out)
}

/// The error text shape of go-bexpr's generated parser.
fn no_match(s: &str, offset: usize) -> String {
    let before: String = s.chars().take(offset).collect();
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    format!("{line}:{col} ({offset}): no match found, expected: \"!=\", \"==\", \"contains\", \"in\", \"is\", \"matches\", \"not\" or [ \\t\\r\\n]")
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(usize, Tok)>,
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|(_, t)| t)
    }
    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .map_or(self.src.chars().count(), |(o, _)| *o)
    }
    fn err(&self) -> String {
        no_match(self.src, self.offset())
    }
    fn keyword(&mut self, kw: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(w)) if w == kw) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.keyword("or") {
            let right = self.and()?;
            left = Expr::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.unary()?;
        while self.keyword("and") {
            let right = self.unary()?;
            left = Expr::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.expr()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err(self.err());
            }
            self.pos += 1;
            return Ok(e);
        }
        self.matcher()
    }

    fn value(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Str(s)) | Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.err()),
        }
    }

    fn selector(&mut self) -> Result<Vec<String>, String> {
        let mut parts = match self.peek().cloned() {
            Some(Tok::Ident(w)) if !is_keyword(&w) => {
                self.pos += 1;
                vec![w]
            }
            _ => return Err(self.err()),
        };
        loop {
            match self.peek() {
                Some(Tok::Dot) => {
                    self.pos += 1;
                    match self.peek().cloned() {
                        Some(Tok::Ident(w)) => {
                            self.pos += 1;
                            parts.push(w);
                        }
                        _ => return Err(self.err()),
                    }
                }
                Some(Tok::LBracket) => {
                    self.pos += 1;
                    let key = match self.peek().cloned() {
                        Some(Tok::Str(s)) => s,
                        _ => return Err(self.err()),
                    };
                    self.pos += 1;
                    if self.peek() != Some(&Tok::RBracket) {
                        return Err(self.err());
                    }
                    self.pos += 1;
                    parts.push(key);
                }
                _ => return Ok(parts),
            }
        }
    }

    fn matcher(&mut self) -> Result<Expr, String> {
        // `"value" in Selector` starts with a quoted value.
        if let Some(Tok::Str(_)) = self.peek() {
            let v = self.value()?;
            if self.keyword("in") {
                return Ok(Expr::In(v, self.selector()?));
            }
            if self.keyword("not") && self.keyword("in") {
                return Ok(Expr::NotIn(v, self.selector()?));
            }
            return Err(self.err());
        }
        let sel = self.selector()?;
        match self.peek().cloned() {
            Some(Tok::Op("==")) => {
                self.pos += 1;
                Ok(Expr::Eq(sel, self.value()?))
            }
            Some(Tok::Op("!=")) => {
                self.pos += 1;
                Ok(Expr::Ne(sel, self.value()?))
            }
            Some(Tok::Ident(w)) if w == "is" => {
                self.pos += 1;
                let negated = self.keyword("not");
                if !self.keyword("empty") {
                    return Err(self.err());
                }
                Ok(if negated {
                    Expr::NotEmpty(sel)
                } else {
                    Expr::Empty(sel)
                })
            }
            Some(Tok::Ident(w)) if w == "contains" => {
                self.pos += 1;
                Ok(Expr::In(self.value()?, sel))
            }
            _ => Err(self.err()),
        }
    }
}

fn is_keyword(w: &str) -> bool {
    matches!(w, "and" | "or" | "not" | "is" | "in" | "contains" | "empty")
}

/// Parses a filter. The error text is what follows "failed to read filter expression: ".
pub fn parse(s: &str) -> Result<Expr, String> {
    let toks = tokenize(s)?;
    let mut p = Parser {
        src: s,
        toks,
        pos: 0,
    };
    let e = p.expr()?;
    if p.pos != p.toks.len() {
        return Err(p.err());
    }
    Ok(e)
}

fn lookup<'a>(v: &'a Value, sel: &[String]) -> Option<&'a Value> {
    let mut cur = v;
    for part in sel {
        cur = match cur {
            Value::Object(m) => m.get(part)?,
            Value::Array(a) => a.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn is_empty(v: Option<&Value>) -> bool {
    match v {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        Some(Value::Array(a)) => a.is_empty(),
        Some(Value::Object(m)) => m.is_empty(),
        Some(_) => false,
    }
}

fn contains(v: Option<&Value>, needle: &str) -> bool {
    match v {
        Some(Value::Array(a)) => a.iter().any(|i| as_text(i).as_deref() == Some(needle)),
        Some(Value::Object(m)) => m.contains_key(needle),
        Some(Value::String(s)) => s.contains(needle),
        _ => false,
    }
}

/// Evaluates the filter against one JSON object (a job stub, a variable's metadata).
pub fn matches(e: &Expr, v: &Value) -> bool {
    match e {
        Expr::Or(a, b) => matches(a, v) || matches(b, v),
        Expr::And(a, b) => matches(a, v) && matches(b, v),
        Expr::Not(a) => !matches(a, v),
        Expr::Eq(sel, want) => lookup(v, sel).and_then(as_text).as_deref() == Some(want),
        Expr::Ne(sel, want) => lookup(v, sel).and_then(as_text).as_deref() != Some(want),
        Expr::Empty(sel) => is_empty(lookup(v, sel)),
        Expr::NotEmpty(sel) => !is_empty(lookup(v, sel)),
        Expr::In(needle, sel) => contains(lookup(v, sel), needle),
        Expr::NotIn(needle, sel) => !contains(lookup(v, sel), needle),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stub() -> Value {
        json!({"ID": "web", "Type": "system", "Status": "running", "ParentID": "",
               "Priority": 50, "Datacenters": ["dc1"],
               "Meta": {"nomados.pack": "web", "owner": "nomados"}})
    }

    fn check(f: &str) -> bool {
        matches(&parse(f).unwrap_or_else(|e| panic!("{f}: {e}")), &stub())
    }

    #[test]
    fn comparisons_and_selectors() {
        assert!(check(r#"ID == "web""#));
        assert!(!check(r#"ID != "web""#));
        assert!(check(r#"Meta["nomados.pack"] == "web""#));
        assert!(check(r#"Meta.owner == "nomados""#));
        assert!(check(r#"Meta["missing"] is empty"#));
        assert!(check(r#"Meta["owner"] is not empty"#));
        assert!(check("ParentID is empty"));
        assert!(check("Priority == 50"));
        assert!(check(r#""dc1" in Datacenters"#));
        assert!(check(r#"Datacenters contains "dc1""#));
    }

    #[test]
    fn boolean_combinations_and_precedence() {
        assert!(check(
            r#"ID == "x" or Type == "system" and Status == "running""#
        ));
        assert!(!check(
            r#"(ID == "x" or Type == "system") and Status == "dead""#
        ));
        assert!(check(r#"not ID == "x""#));
        assert!(check(
            r#"Meta.owner == "nomados" and (ID == "web" or ID == "api")"#
        ));
    }

    #[test]
    fn garbage_is_an_error_with_position() {
        let e = parse("ID ==").unwrap_err();
        assert!(e.starts_with("1:6 (5): no match found"), "{e}");
        assert!(parse(r#"ID = "x""#).is_err());
        assert!(parse(r#"(ID == "x""#).is_err());
        assert!(parse(r#"ID == "x" extra"#).is_err());
        assert!(parse(r#"Meta["k" == "x""#).is_err());
    }
}
