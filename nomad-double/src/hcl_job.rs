//! HCL jobspec → Nomad API job JSON, for `POST /v1/jobs/parse`.
//!
//! Covers the subset of the jobspec the project's packs use. Errors carry the source range
//! in Nomad's `input.hcl:LINE,COL-LINE,COL: Summary; Detail` form.

use hcl::edit::parser::parse_body;
use hcl::edit::structure::{Attribute, Block, Body, Structure};
use hcl::edit::Span;
use hcl::eval::{Context, Evaluate};
use serde_json::{json, Map, Value};
use std::fmt;
use std::ops::Range;

/// A parse error with its position in the submitted HCL.
#[derive(Debug, Clone, PartialEq)]
pub struct ParseError {
    pub start: (usize, usize),
    pub end: (usize, usize),
    pub summary: String,
    pub detail: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "input.hcl:{},{}-{},{}: {}; {}",
            self.start.0, self.start.1, self.end.0, self.end.1, self.summary, self.detail
        )
    }
}

struct Src<'a> {
    text: &'a str,
    ctx: Context<'a>,
}

impl Src<'_> {
    fn pos(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }

    fn err(&self, span: Option<Range<usize>>, summary: &str, detail: String) -> ParseError {
        let r = span.unwrap_or(0..0);
        ParseError {
            start: self.pos(r.start),
            end: self.pos(r.end),
            summary: summary.to_string(),
            detail,
        }
    }
}

/// Parses a jobspec. `variables` is the `Variables` field: HCL `name = value` lines.
pub fn parse_job(text: &str, variables: &str) -> Result<Value, ParseError> {
    let body = parse_body(text).map_err(|e| syntax_error(text, &e))?;
    let var_body = parse_body(variables).map_err(|e| syntax_error(variables, &e))?;
    let mut src = Src {
        text,
        ctx: Context::new(),
    };
    let vars = declare_variables(&src, &body, &var_body)?;
    src.ctx.declare_var("var", hcl::Value::Object(vars));

    let mut job_block = None;
    for s in body.iter() {
        match s {
            Structure::Block(b) if b.ident.as_str() == "job" => {
                if job_block.is_some() {
                    return Err(src.err(
                        b.span(),
                        "Duplicate job block",
                        "Only one job block is allowed per file.".into(),
                    ));
                }
                job_block = Some(b);
            }
            Structure::Block(b) if matches!(b.ident.as_str(), "variable" | "locals") => {}
            Structure::Block(b) => return Err(unsupported_block(&src, b)),
            Structure::Attribute(a) => return Err(unsupported_attr(&src, a)),
        }
    }
    let Some(job) = job_block else {
        return Err(src.err(
            Some(0..0),
            "Missing job block",
            "A job block is required.".into(),
        ));
    };
    let id = one_label(&src, job, "job")?;
    let mut out = Map::new();
    out.insert("ID".into(), json!(id));
    let mut groups = Vec::new();
    for s in job.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let (field, kind) = match a.key.as_str() {
                    "name" => ("Name", Kind::Str),
                    "type" => ("Type", Kind::Str),
                    "datacenters" => ("Datacenters", Kind::StrList),
                    "namespace" => ("Namespace", Kind::Str),
                    "region" => ("Region", Kind::Str),
                    "priority" => ("Priority", Kind::Int),
                    "all_at_once" => ("AllAtOnce", Kind::Bool),
                    "meta" => ("Meta", Kind::StrMap),
                    _ => return Err(unsupported_attr(&src, a)),
                };
                out.insert(field.into(), attr_value(&src, a, kind)?);
            }
            Structure::Block(b) => match b.ident.as_str() {
                "group" => groups.push(parse_group(&src, b)?),
                "meta" => {
                    out.insert("Meta".into(), block_str_map(&src, b)?);
                }
                "constraint" => push(&mut out, "Constraints", parse_constraint(&src, b)?),
                _ => return Err(unsupported_block(&src, b)),
            },
        }
    }
    out.insert("TaskGroups".into(), Value::Array(groups));
    Ok(Value::Object(out))
}

fn syntax_error(text: &str, e: &hcl::edit::parser::Error) -> ParseError {
    let loc = e.location();
    let start = (loc.line(), loc.column());
    // hcl-edit reports a point; Nomad reports a range. Extend to the next character.
    let end =
        if text[loc.offset().min(text.len())..].starts_with('\n') || loc.offset() >= text.len() {
            (loc.line() + 1, 1)
        } else {
            (loc.line(), loc.column() + 1)
        };
    let msg = e.message().to_string();
    let (summary, detail) = if msg.contains("expression") {
        (
            "Invalid expression",
            "Expected the start of an expression, but found an invalid expression token."
                .to_string(),
        )
    } else {
        ("Syntax error", msg)
    };
    ParseError {
        start,
        end,
        summary: summary.into(),
        detail,
    }
}

fn declare_variables(
    src: &Src<'_>,
    body: &Body,
    supplied: &Body,
) -> Result<hcl::Map<String, hcl::Value>, ParseError> {
    let mut vars = hcl::Map::new();
    for b in body.get_blocks("variable") {
        let name = one_label(src, b, "variable")?;
        let given = supplied.get_attribute(&name);
        let value = match (given, b.body.get_attribute("default")) {
            (Some(a), _) => eval(src, &a.value)?,
            (None, Some(d)) => eval(src, &d.value)?,
            (None, None) => {
                return Err(src.err(
                    b.span(),
                    "Missing input variable",
                    format!("The variable \"{name}\" is required, but no value was given."),
                ))
            }
        };
        vars.insert(name, value);
    }
    for a in supplied.attributes() {
        if !vars.contains_key(a.key.as_str()) {
            return Err(src.err(
                a.span(),
                "Undefined variable",
                format!(
                    "A \"{}\" variable was passed in but is not declared in the jobspec.",
                    a.key.as_str()
                ),
            ));
        }
    }
    Ok(vars)
}

/// Evaluates an expression. Template strings that only reference runtime interpolations
/// (`${NOMAD_TASK_DIR}`, `${attr.x}`) stay literal, as Nomad leaves them for the client.
fn eval(src: &Src<'_>, e: &hcl::edit::expr::Expression) -> Result<hcl::Value, ParseError> {
    let expr: hcl::Expression = e.clone().into();
    match expr {
        hcl::Expression::TemplateExpr(ref t) => {
            let text = t.to_string();
            if !text.contains("var.") {
                return Ok(hcl::Value::String(text));
            }
            expr.evaluate(&src.ctx)
                .map_err(|err| src.err(e.span(), "Invalid template interpolation", err.to_string()))
        }
        hcl::Expression::Array(_) | hcl::Expression::Object(_) => {
            // Evaluate element-wise so literal templates inside stay literal.
            match e {
                hcl::edit::expr::Expression::Array(items) => Ok(hcl::Value::Array(
                    items
                        .iter()
                        .map(|i| eval(src, i))
                        .collect::<Result<_, _>>()?,
                )),
                hcl::edit::expr::Expression::Object(obj) => {
                    let mut m = hcl::Map::new();
                    for (k, v) in obj.iter() {
                        let key = match k {
                            hcl::edit::expr::ObjectKey::Ident(i) => i.as_str().to_string(),
                            hcl::edit::expr::ObjectKey::Expression(ke) => match eval(src, ke)? {
                                hcl::Value::String(s) => s,
                                other => other.to_string(),
                            },
                        };
                        m.insert(key, eval(src, v.expr())?);
                    }
                    Ok(hcl::Value::Object(m))
                }
                _ => expr
                    .evaluate(&src.ctx)
                    .map_err(|err| src.err(e.span(), "Invalid expression", err.to_string())),
            }
        }
        other => other.evaluate(&src.ctx).map_err(|err| {
            let summary = if err.to_string().contains("undefined variable") {
                "Unknown variable"
            } else {
                "Invalid expression"
            };
            src.err(e.span(), summary, err.to_string())
        }),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    StrList,
    Int,
    Bool,
    StrMap,
    Duration,
    Any,
}

fn type_error(src: &Src<'_>, a: &Attribute, want: &str) -> ParseError {
    src.err(
        a.value.span(),
        "Incorrect attribute value type",
        format!(
            "Inappropriate value for attribute \"{}\": {want} required.",
            a.key.as_str()
        ),
    )
}

fn attr_value(src: &Src<'_>, a: &Attribute, kind: Kind) -> Result<Value, ParseError> {
    let v = to_json(eval(src, &a.value)?);
    let ok = match kind {
        Kind::Str => v.as_str().map(|s| json!(s)),
        Kind::Bool => v.as_bool().map(|b| json!(b)),
        Kind::Int => v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .map(|n| json!(n)),
        Kind::StrList => v.as_array().and_then(|items| {
            items
                .iter()
                .map(|i| i.as_str().map(|s| json!(s)))
                .collect::<Option<Vec<_>>>()
                .map(Value::Array)
        }),
        Kind::StrMap => v.as_object().and_then(|m| {
            m.iter()
                .map(|(k, v)| scalar_string(v).map(|s| (k.clone(), json!(s))))
                .collect::<Option<Map<_, _>>>()
                .map(Value::Object)
        }),
        Kind::Duration => v.as_str().and_then(parse_duration).map(|n| json!(n)),
        Kind::Any => Some(v),
    };
    ok.ok_or_else(|| {
        type_error(
            src,
            a,
            match kind {
                Kind::Str => "string",
                Kind::Bool => "bool",
                Kind::Int => "number",
                Kind::StrList => "list of string",
                Kind::StrMap => "map of string",
                Kind::Duration => "duration string (like \"5s\")",
                Kind::Any => "value",
            },
        )
    })
}

fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn to_json(v: hcl::Value) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// Go duration strings: "5s", "1m30s", "250ms", "1h".
pub fn parse_duration(s: &str) -> Option<i64> {
    let mut total: f64 = 0.0;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    if rest == "0" {
        return Some(0);
    }
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    Some(total as i64)
}

fn one_label(src: &Src<'_>, b: &Block, what: &str) -> Result<String, ParseError> {
    match b.labels.as_slice() {
        [l] => Ok(l.as_str().to_string()),
        _ => Err(src.err(
            b.ident.span(),
            &format!("Missing name for {what}"),
            format!("All {what} blocks must have 1 labels (name)."),
        )),
    }
}

fn unsupported_attr(src: &Src<'_>, a: &Attribute) -> ParseError {
    src.err(
        a.key.span(),
        "Unsupported argument",
        format!(
            "An argument named \"{}\" is not expected here.",
            a.key.as_str()
        ),
    )
}

fn unsupported_block(src: &Src<'_>, b: &Block) -> ParseError {
    src.err(
        b.ident.span(),
        "Unsupported block type",
        format!(
            "Blocks of type \"{}\" are not expected here.",
            b.ident.as_str()
        ),
    )
}

fn push(m: &mut Map<String, Value>, key: &str, v: Value) {
    match m.get_mut(key) {
        Some(Value::Array(a)) => a.push(v),
        _ => {
            m.insert(key.to_string(), Value::Array(vec![v]));
        }
    }
}

fn block_str_map(src: &Src<'_>, b: &Block) -> Result<Value, ParseError> {
    let mut m = Map::new();
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let v = to_json(eval(src, &a.value)?);
                let s = scalar_string(&v).ok_or_else(|| type_error(src, a, "string"))?;
                m.insert(a.key.as_str().to_string(), json!(s));
            }
            Structure::Block(inner) => return Err(unsupported_block(src, inner)),
        }
    }
    Ok(Value::Object(m))
}

/// Free-form body (task `config`): attributes as values, nested blocks as lists of objects.
fn free_form(src: &Src<'_>, body: &Body) -> Result<Value, ParseError> {
    let mut m = Map::new();
    for s in body.iter() {
        match s {
            Structure::Attribute(a) => {
                m.insert(a.key.as_str().to_string(), to_json(eval(src, &a.value)?));
            }
            Structure::Block(b) => {
                let inner = free_form(src, &b.body)?;
                push(&mut m, b.ident.as_str(), inner);
            }
        }
    }
    Ok(Value::Object(m))
}

fn parse_constraint(src: &Src<'_>, b: &Block) -> Result<Value, ParseError> {
    let mut c = Map::new();
    c.insert("LTarget".into(), json!(""));
    c.insert("RTarget".into(), json!(""));
    c.insert("Operand".into(), json!("="));
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let field = match a.key.as_str() {
                    "attribute" => "LTarget",
                    "value" => "RTarget",
                    "operator" => "Operand",
                    _ => return Err(unsupported_attr(src, a)),
                };
                let v = to_json(eval(src, &a.value)?);
                let s = scalar_string(&v).ok_or_else(|| type_error(src, a, "string"))?;
                c.insert(field.into(), json!(s));
            }
            Structure::Block(inner) => return Err(unsupported_block(src, inner)),
        }
    }
    Ok(Value::Object(c))
}

/// A block whose attributes map 1:1 onto fields.
fn simple_block(
    src: &Src<'_>,
    b: &Block,
    fields: &[(&str, &str, Kind)],
) -> Result<Value, ParseError> {
    let mut m = Map::new();
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let Some((_, field, kind)) = fields.iter().find(|(k, _, _)| *k == a.key.as_str())
                else {
                    return Err(unsupported_attr(src, a));
                };
                m.insert(field.to_string(), attr_value(src, a, *kind)?);
            }
            Structure::Block(inner) => return Err(unsupported_block(src, inner)),
        }
    }
    Ok(Value::Object(m))
}

const RESTART_FIELDS: &[(&str, &str, Kind)] = &[
    ("attempts", "Attempts", Kind::Int),
    ("delay", "Delay", Kind::Duration),
    ("interval", "Interval", Kind::Duration),
    ("mode", "Mode", Kind::Str),
];

fn parse_group(src: &Src<'_>, b: &Block) -> Result<Value, ParseError> {
    let name = one_label(src, b, "group")?;
    let mut g = Map::new();
    g.insert("Name".into(), json!(name));
    let mut tasks = Vec::new();
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let (field, kind) = match a.key.as_str() {
                    "count" => ("Count", Kind::Int),
                    "meta" => ("Meta", Kind::StrMap),
                    "shutdown_delay" => ("ShutdownDelay", Kind::Duration),
                    _ => return Err(unsupported_attr(src, a)),
                };
                g.insert(field.into(), attr_value(src, a, kind)?);
            }
            Structure::Block(inner) => match inner.ident.as_str() {
                "task" => tasks.push(parse_task(src, inner)?),
                "meta" => {
                    g.insert("Meta".into(), block_str_map(src, inner)?);
                }
                "constraint" => push(&mut g, "Constraints", parse_constraint(src, inner)?),
                "restart" => {
                    g.insert(
                        "RestartPolicy".into(),
                        simple_block(src, inner, RESTART_FIELDS)?,
                    );
                }
                "ephemeral_disk" => {
                    g.insert(
                        "EphemeralDisk".into(),
                        simple_block(
                            src,
                            inner,
                            &[
                                ("size", "SizeMB", Kind::Int),
                                ("migrate", "Migrate", Kind::Bool),
                                ("sticky", "Sticky", Kind::Bool),
                            ],
                        )?,
                    );
                }
                _ => return Err(unsupported_block(src, inner)),
            },
        }
    }
    g.insert("Tasks".into(), Value::Array(tasks));
    Ok(Value::Object(g))
}

fn parse_task(src: &Src<'_>, b: &Block) -> Result<Value, ParseError> {
    let name = one_label(src, b, "task")?;
    let mut t = Map::new();
    t.insert("Name".into(), json!(name));
    for s in b.body.iter() {
        match s {
            Structure::Attribute(a) => {
                let (field, kind) = match a.key.as_str() {
                    "driver" => ("Driver", Kind::Str),
                    "user" => ("User", Kind::Str),
                    "leader" => ("Leader", Kind::Bool),
                    "kill_timeout" => ("KillTimeout", Kind::Duration),
                    "kill_signal" => ("KillSignal", Kind::Str),
                    "shutdown_delay" => ("ShutdownDelay", Kind::Duration),
                    "meta" => ("Meta", Kind::StrMap),
                    "env" => ("Env", Kind::StrMap),
                    "config" => ("Config", Kind::Any),
                    _ => return Err(unsupported_attr(src, a)),
                };
                t.insert(field.into(), attr_value(src, a, kind)?);
            }
            Structure::Block(inner) => match inner.ident.as_str() {
                "config" => {
                    t.insert("Config".into(), free_form(src, &inner.body)?);
                }
                "meta" => {
                    t.insert("Meta".into(), block_str_map(src, inner)?);
                }
                "env" => {
                    t.insert("Env".into(), block_str_map(src, inner)?);
                }
                "constraint" => push(&mut t, "Constraints", parse_constraint(src, inner)?),
                "restart" => {
                    t.insert(
                        "RestartPolicy".into(),
                        simple_block(src, inner, RESTART_FIELDS)?,
                    );
                }
                "resources" => {
                    t.insert(
                        "Resources".into(),
                        simple_block(
                            src,
                            inner,
                            &[
                                ("cpu", "CPU", Kind::Int),
                                ("cores", "Cores", Kind::Int),
                                ("memory", "MemoryMB", Kind::Int),
                                ("memory_max", "MemoryMaxMB", Kind::Int),
                            ],
                        )?,
                    );
                }
                "logs" => {
                    t.insert(
                        "LogConfig".into(),
                        simple_block(
                            src,
                            inner,
                            &[
                                ("max_files", "MaxFiles", Kind::Int),
                                ("max_file_size", "MaxFileSizeMB", Kind::Int),
                            ],
                        )?,
                    );
                }
                "artifact" => {
                    let mut art = Map::new();
                    for s in inner.body.iter() {
                        match s {
                            Structure::Attribute(a) => {
                                let (field, kind) = match a.key.as_str() {
                                    "source" => ("GetterSource", Kind::Str),
                                    "destination" => ("RelativeDest", Kind::Str),
                                    "mode" => ("GetterMode", Kind::Str),
                                    "options" => ("GetterOptions", Kind::StrMap),
                                    "headers" => ("GetterHeaders", Kind::StrMap),
                                    _ => return Err(unsupported_attr(src, a)),
                                };
                                art.insert(field.into(), attr_value(src, a, kind)?);
                            }
                            Structure::Block(o) if o.ident.as_str() == "options" => {
                                art.insert("GetterOptions".into(), block_str_map(src, o)?);
                            }
                            Structure::Block(o) if o.ident.as_str() == "headers" => {
                                art.insert("GetterHeaders".into(), block_str_map(src, o)?);
                            }
                            Structure::Block(o) => return Err(unsupported_block(src, o)),
                        }
                    }
                    push(&mut t, "Artifacts", Value::Object(art));
                }
                "template" => {
                    let tmpl = simple_block(
                        src,
                        inner,
                        &[
                            ("data", "EmbeddedTmpl", Kind::Str),
                            ("destination", "DestPath", Kind::Str),
                            ("change_mode", "ChangeMode", Kind::Str),
                            ("perms", "Perms", Kind::Str),
                            ("env", "Envvars", Kind::Bool),
                        ],
                    )?;
                    push(&mut t, "Templates", tmpl);
                }
                _ => return Err(unsupported_block(src, inner)),
            },
        }
    }
    Ok(Value::Object(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = include_str!("../tests/data/hello.nomad");

    #[test]
    fn parses_the_recorded_job() {
        let mut j = parse_job(HELLO, "").unwrap();
        crate::canonical::canonicalize(&mut j);
        assert_eq!(j["ID"], "hello");
        assert_eq!(j["Type"], "system");
        assert_eq!(j["Datacenters"], json!(["dc1"]));
        let t = &j["TaskGroups"][0]["Tasks"][0];
        assert_eq!(t["Driver"], "raw_exec");
        assert_eq!(
            t["Config"],
            json!({"command": "/bin/sh", "args": ["-c", "echo hello-from-raw-exec; sleep 3600"]})
        );
        assert_eq!(t["Resources"]["MemoryMB"], 300);
    }

    #[test]
    fn full_subset_with_nested_config_and_variables() {
        let src = r#"
variable "greeting" { default = "hi" }
job "web" {
  datacenters = ["dc1", "dc2"]
  namespace = "apps"
  priority = 70
  meta = { "nomados.pack" = "web" }
  constraint {
    attribute = "${attr.kernel.name}"
    value = "linux"
  }
  group "g" {
    count = 2
    meta = { tier = "front" }
    task "t" {
      driver = "exec"
      kill_timeout = "10s"
      config {
        command = "/bin/echo"
        args = [var.greeting, "${NOMAD_TASK_DIR}"]
        mount {
          source = "a"
        }
        mount {
          source = "b"
        }
      }
      env { PORT = 8080 }
      resources {
        cpu = 250
        memory = 64
      }
      artifact {
        source = "https://example.invalid/x.tgz"
      }
    }
  }
}
"#;
        let j = parse_job(src, "greeting = \"hello\"").unwrap();
        assert_eq!(j["Namespace"], "apps");
        assert_eq!(j["Priority"], 70);
        assert_eq!(j["Meta"]["nomados.pack"], "web");
        assert_eq!(j["Constraints"][0]["LTarget"], "${attr.kernel.name}");
        let g = &j["TaskGroups"][0];
        assert_eq!(g["Count"], 2);
        assert_eq!(g["Meta"]["tier"], "front");
        let t = &g["Tasks"][0];
        assert_eq!(t["KillTimeout"], 10_000_000_000_i64);
        assert_eq!(t["Config"]["args"], json!(["hello", "${NOMAD_TASK_DIR}"]));
        assert_eq!(t["Config"]["mount"][1]["source"], "b");
        assert_eq!(t["Env"]["PORT"], "8080");
        assert_eq!(t["Resources"], json!({"CPU": 250, "MemoryMB": 64}));
        assert_eq!(
            t["Artifacts"][0]["GetterSource"],
            "https://example.invalid/x.tgz"
        );
    }

    #[test]
    fn syntax_error_has_position_like_nomad() {
        let e = parse_job("job \"x\" {\n  type = \n}\n", "").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("input.hcl:"), "{s}");
        assert_eq!(e.summary, "Invalid expression");
        assert!(e.start.0 == 2 || e.start.0 == 3, "{s}");
    }

    #[test]
    fn unknown_argument_names_its_position() {
        let e = parse_job("job \"x\" {\n  bogus = 1\n}\n", "").unwrap_err();
        assert_eq!(e.start, (2, 3));
        assert_eq!(
            e.to_string(),
            "input.hcl:2,3-2,8: Unsupported argument; An argument named \"bogus\" is not expected here."
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(parse_duration("x"), None);
    }
}
